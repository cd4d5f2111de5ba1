"""Hand edits of a store's ledger in the working tree, in either format (for forgery tests)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

#: what verification says when a ledger file no longer matches the checksum naming it
LEDGER_MISMATCH = r"ledger\.json does not match|differ from ledger\.json"


def _write_json(path: Path, data: dict) -> bytes:
    raw = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    path.write_bytes(raw)
    return raw


def _shard_file(root: Path, ledger: dict, doc: str) -> Path:
    key = hashlib.sha256(doc.encode()).hexdigest()[: ledger["shard_hex"]]
    return root / "ledger" / f"{key}.json"


def ledger_entry(root: Path, doc: str) -> dict:
    """Return the ledger entry of document ``doc`` (format 1 or 2)."""
    ledger = json.loads((root / "ledger.json").read_text())
    if ledger["format"] == 1:
        return ledger["documents"][doc]
    return json.loads(_shard_file(root, ledger, doc).read_text())[doc]


def edit_ledger_entry(
    root: Path, doc: str, edit: Callable[[dict], None], *, consistent: bool = False
) -> None:
    """Edit one document's ledger entry; with ``consistent`` fix every checksum up to the manifest."""
    lpath = root / "ledger.json"
    ledger = json.loads(lpath.read_text())
    if ledger["format"] == 1:
        edit(ledger["documents"][doc])
        raw = _write_json(lpath, ledger)
    else:
        spath = _shard_file(root, ledger, doc)
        shard = json.loads(spath.read_text())
        edit(shard[doc])
        sraw = _write_json(spath, shard)
        if not consistent:
            return
        chunks = sum(len(d["chunks"]) for d in shard.values())
        ledger["chunks"] += chunks - ledger["shards"][spath.stem]["chunks"]
        ledger["shards"][spath.stem].update(
            sha256=hashlib.sha256(sraw).hexdigest(), size=len(sraw), chunks=chunks
        )
        raw = _write_json(lpath, ledger)
    if consistent:
        mpath = root / "manifest.json"
        manifest = json.loads(mpath.read_text())
        manifest["ledger_sha256"] = hashlib.sha256(raw).hexdigest()
        _write_json(mpath, manifest)

"""Format 2 of the ledger: a small root plus one shard per path-hash prefix.

``ledger.json`` (the root) holds the settings and, per shard, its sha256, size and
counts; ``ledger/<key>.json`` holds the documents whose path hashes to ``key`` (the
first ``shard_hex`` hex digits of sha256(path)), one document per line. A commit
rewrites the root and only the shards whose documents changed, so its cost follows the
change, not the store. The manifest's ``ledger_sha256`` names the root, the root names
every shard: one chain of checksums from the manifest to every document entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Set
from typing import Any

from ..errors import FormatError, IntegrityError
from ..gitrepo import GitRepo
from . import jsonio
from .ledger import LEDGER_PATH, DocEntry, Layout, Ledger, ShardClaim, parse_ledger_json

SHARD_DIR = "ledger"
#: hex digits of sha256(path) naming a shard: 256 shards, ~400 documents each at 100k
SHARD_HEX = 2


def shard_key(path: str, width: int = SHARD_HEX) -> str:
    """Return the shard a document path belongs to."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:width]


def shard_path(key: str) -> str:
    """Return the file of a shard."""
    return f"{SHARD_DIR}/{key}.json"


def encode_shard(docs: Mapping[str, DocEntry]) -> bytes:
    """Serialize one shard: one document per line, sorted, deterministic."""
    lines = [
        json.dumps(p, ensure_ascii=False)
        + ": "
        + json.dumps(d.to_json(), sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
        for p, d in sorted(docs.items())
    ]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


def decode_shard(key: str, width: int, raw: bytes, claim: ShardClaim) -> dict[str, DocEntry]:
    """Parse a shard and check it against its root claim; raise IntegrityError if not."""
    label = shard_path(key)
    if len(raw) != claim.size or hashlib.sha256(raw).hexdigest() != claim.sha256:
        raise IntegrityError(
            f"{label}: sha256/size differ from {LEDGER_PATH} (shard changed or corrupt)"
        )
    data = jsonio.loads(raw, label)  # FormatError (an IntegrityError) if too deep
    try:
        docs = {str(p): DocEntry.from_json(d) for p, d in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{label} is malformed: {exc!r}") from exc
    misplaced = [p for p in docs if shard_key(p, width) != key]
    if misplaced:
        raise IntegrityError(
            f"{label}: {misplaced[0]} belongs in shard {shard_key(misplaced[0], width)}"
        )
    chunks = sum(len(d.chunks) for d in docs.values())
    if (len(docs), chunks) != (claim.documents, claim.chunks):
        raise IntegrityError(
            f"{label}: {len(docs)} documents / {chunks} chunks, {LEDGER_PATH} says "
            f"{claim.documents} / {claim.chunks}"
        )
    return docs


def encode_root(ledger: Ledger, layout: Layout) -> bytes:
    """Serialize the ledger root of format 2."""
    data = {
        "format": 2,
        "model": {"id": ledger.model_id, "dim": ledger.dim},
        "chunking": ledger.chunking,
        "shard_hex": layout.width,
        "documents": sum(c.documents for c in layout.claims.values()),
        "chunks": sum(c.chunks for c in layout.claims.values()),
        "shards": {k: dataclasses.asdict(c) for k, c in sorted(layout.claims.items())},
    }
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def _decode_root(data: dict[str, Any]) -> tuple[Ledger, dict[str, ShardClaim], int]:
    width = int(data["shard_hex"])
    if not 1 <= width <= 8:
        raise ValueError(f"shard_hex {width} out of range")
    claims = {
        str(k): ShardClaim(str(c["sha256"]), int(c["size"]), int(c["documents"]), int(c["chunks"]))
        for k, c in data["shards"].items()
    }
    bad = [k for k in claims if len(k) != width or k.strip("0123456789abcdef")]
    if bad:
        raise ValueError(f"shard key {bad[0]!r} is not {width} hex digits")
    if (int(data["documents"]), int(data["chunks"])) != (
        sum(c.documents for c in claims.values()),
        sum(c.chunks for c in claims.values()),
    ):
        raise ValueError("document/chunk totals differ from the sum of the shards")
    ledger = Ledger(
        str(data["model"]["id"]), int(data["model"]["dim"]), dict(data["chunking"]), {}, 2
    )
    return ledger, claims, width


class ShardCache:
    """Ledger shards already verified, keyed by (shard key, git blob id).

    A git blob id is a hash of the content, so a shard verified once is not read or
    parsed again; a writer or standby then reads only the shards a commit changed.
    """

    def __init__(self) -> None:
        self._shards: dict[tuple[str, str], tuple[ShardClaim, dict[str, DocEntry]]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], claim: ShardClaim) -> dict[str, DocEntry] | None:
        """Return a cached shard's documents if it was verified against the same claim."""
        with self._lock:
            hit = self._shards.get(key)
        if hit is None:
            return None
        if hit[0] != claim:
            raise IntegrityError(
                f"{shard_path(key[0])}: {LEDGER_PATH} claims do not match its content"
            )
        return hit[1]

    def put(self, key: tuple[str, str], claim: ShardClaim, docs: dict[str, DocEntry]) -> None:
        """Remember a verified shard."""
        with self._lock:
            self._shards[key] = (claim, docs)

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget every shard not in ``keys``."""
        keep = set(keys)
        with self._lock:
            self._shards = {k: v for k, v in self._shards.items() if k in keep}


def read_ledger(
    repo: GitRepo, tree: Mapping[str, str], cache: ShardCache | None = None
) -> tuple[Ledger, bytes]:
    """Read and check the ledger of a commit's tree (format 1 or 2); return it and its root."""
    root_raw = repo.read_blobs([tree[LEDGER_PATH]])[tree[LEDGER_PATH]]
    data = parse_ledger_json(root_raw)
    if data["format"] == 1:
        if any(p.startswith(SHARD_DIR + "/") for p in tree):
            raise IntegrityError(f"{SHARD_DIR}/ holds files but {LEDGER_PATH} is format 1")
        return Ledger.from_json(data), root_raw
    try:
        head, claims, width = _decode_root(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"{LEDGER_PATH} is malformed: {exc!r}") from exc
    present = {p for p in tree if p.startswith(SHARD_DIR + "/")}
    named = {shard_path(k) for k in claims}
    if present - named:
        raise IntegrityError(f"ledger shard not in {LEDGER_PATH}: {sorted(present - named)[0]}")
    if named - present:
        raise IntegrityError(f"ledger shard missing: {sorted(named - present)[0]}")
    ids = {k: tree[shard_path(k)] for k in claims}
    shards = _load_shards(repo, ids, claims, width, cache or ShardCache())
    documents: dict[str, DocEntry] = {}
    for docs in shards.values():
        documents.update(docs)
    layout = Layout(width, claims, {k: frozenset(d) for k, d in shards.items()}, ids)
    return dataclasses.replace(head, documents=documents, layout=layout), root_raw


def _load_shards(
    repo: GitRepo,
    ids: dict[str, str],
    claims: dict[str, ShardClaim],
    width: int,
    cache: ShardCache,
) -> dict[str, dict[str, DocEntry]]:
    """Return every shard's documents, reading and checking only those not in ``cache``."""
    out: dict[str, dict[str, DocEntry]] = {}
    for key, blob in ids.items():
        docs = cache.get((key, blob), claims[key])
        if docs is not None:
            out[key] = docs
    raw = repo.read_blobs(ids[k] for k in ids if k not in out)
    for key in [k for k in ids if k not in out]:
        out[key] = decode_shard(key, width, raw[ids[key]], claims[key])
        cache.put((key, ids[key]), claims[key], out[key])
    return out


def read_ledger_at(repo: GitRepo, rev: str, cache: ShardCache | None = None) -> Ledger | None:
    """Read and check the ledger of commit ``rev``; None if it has no ``ledger.json``."""
    tree = repo.ls_tree(rev, [LEDGER_PATH, SHARD_DIR])
    if LEDGER_PATH not in tree:
        return None
    return read_ledger(repo, tree, cache)[0]


def shard_keys(ledger: Ledger) -> set[tuple[str, str]]:
    """Return the ShardCache keys of a ledger read from a commit (empty for format 1)."""
    return set(ledger.layout.blobs.items()) if ledger.layout is not None else set()


@dataclasses.dataclass(frozen=True)
class LedgerFiles:
    """The files that store a ledger in a commit, relative to the previous commit."""

    ledger: Ledger
    writes: dict[str, bytes]
    deletes: list[str]
    root: bytes


def _changed_paths(old: Ledger, new: Ledger) -> set[str]:
    """Return paths added, changed or removed between two ledgers (identity first: fast)."""
    before = old.documents
    changed = {p for p, d in new.documents.items() if before.get(p) is not d and before.get(p) != d}
    changed.update(p for p in before if p not in new.documents)
    return changed


def _dirty_shards(
    new: Ledger, old: Ledger | None, changed: Set[str] | None = None
) -> tuple[Layout, dict[str, set[str]]]:
    """Return the base layout and the new path set of every shard that must be rewritten."""
    base = old.layout if old is not None and old.format >= 2 else None
    if old is None or base is None:  # first commit or migration: every shard
        paths: dict[str, set[str]] = {}
        for p in new.documents:
            paths.setdefault(shard_key(p), set()).add(p)
        return Layout(SHARD_HEX, {}, {}), paths
    if changed is None:
        changed = _changed_paths(old, new)
    paths = {k: set(base.paths.get(k, ())) for k in {shard_key(p, base.width) for p in changed}}
    for p in changed:
        members = paths[shard_key(p, base.width)]
        if p in new.documents:
            members.add(p)
        else:
            members.discard(p)
    return base, paths


def encode_ledger(new: Ledger, old: Ledger | None, changed: Set[str] | None = None) -> LedgerFiles:
    """Return the files storing ``new`` in its format, writing only what changed since ``old``.

    ``changed``: every path added, changed or removed since ``old``, when the caller knows
    them (an ingest does): spares comparing the two ledgers document by document.
    """
    if new.format == 1:
        raw = new.to_bytes()
        return LedgerFiles(new, {LEDGER_PATH: raw}, [], raw)
    base, dirty = _dirty_shards(new, old, changed)
    claims, members = dict(base.claims), dict(base.paths)
    writes: dict[str, bytes] = {}
    deletes: list[str] = []
    for key, paths in sorted(dirty.items()):
        if not paths:  # the shard's last document went: drop the file
            claims.pop(key, None)
            members.pop(key, None)
            if key in base.claims:
                deletes.append(shard_path(key))
            continue
        docs = {p: new.documents[p] for p in paths}
        raw = encode_shard(docs)
        writes[shard_path(key)] = raw
        chunks = sum(len(d.chunks) for d in docs.values())
        claims[key] = ShardClaim(hashlib.sha256(raw).hexdigest(), len(raw), len(docs), chunks)
        members[key] = frozenset(paths)
    layout = Layout(base.width, claims, members)
    ledger = dataclasses.replace(new, layout=layout)
    writes[LEDGER_PATH] = encode_root(ledger, layout)
    return LedgerFiles(ledger, writes, deletes, writes[LEDGER_PATH])

"""Hostile commits built with plain git plumbing, as an attacker with push access would.

``forge`` stages tree entries with any mode (``git update-index --add --cacheinfo
120000,<blob>,docs/x``), reseals ledger.json and manifest.json so every checksum agrees,
then ``write-tree`` + ``commit-tree`` on top of HEAD: what git alone lets a pusher do.
``attacker`` clones a hub with plain git; ``standby`` starts a follower of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kbgit.format.ledger import DocEntry
from kbgit.format.shards import encode_shard, shard_key, shard_path
from kbgit.serving.follower import Follower
from kbgit.serving.service import EmbedderPool, KnowledgeService

_ENV = {
    "GIT_AUTHOR_NAME": "eve",
    "GIT_AUTHOR_EMAIL": "eve@example.invalid",
    "GIT_COMMITTER_NAME": "eve",
    "GIT_COMMITTER_EMAIL": "eve@example.invalid",
}


def attacker(hub: Path, path: Path) -> Path:
    """Clone ``hub`` with plain git into ``path`` (the attacker's working copy)."""
    subprocess.run(["git", "clone", "-q", str(hub), str(path)], check=True)
    return path


def standby(path: Path, hub: Path, embedders: EmbedderPool | None = None) -> Follower:
    """Open a standby replica of ``hub`` in ``path`` (drive it with ``sync_once``)."""
    follower = Follower(KnowledgeService("default", path, embedders=embedders), hub=str(hub))
    follower.open()
    return follower


def unhook(hub: Path) -> None:
    """Remove the hub's pre-receive hook (a hub without it: the standby is the last line)."""
    (hub / "hooks" / "pre-receive").unlink(missing_ok=True)


Edit = Callable[[dict[str, Any]], None]


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    """Run git in ``repo``; return stdout; raise on failure."""
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=input,
        capture_output=True,
        env={**os.environ, **_ENV},
        check=True,
    )
    return proc.stdout.decode().strip()


def blob(repo: Path, data: bytes) -> str:
    """Write ``data`` as a blob; return its id."""
    return git(repo, "hash-object", "-w", "--stdin", input=data)


def head_json(repo: Path, path: str) -> dict[str, Any]:
    """Return a JSON file of HEAD's tree."""
    return json.loads(git(repo, "cat-file", "blob", f"HEAD:{path}"))


def seal(ledger: dict[str, Any] | bytes, manifest: dict[str, Any]) -> tuple[bytes, bytes]:
    """Serialize ledger and manifest with the manifest's ledger sha256 matching."""
    raw = ledger if isinstance(ledger, bytes) else dumps(ledger)
    manifest["ledger_sha256"] = hashlib.sha256(raw).hexdigest()
    return raw, dumps(manifest)


def dumps(data: dict[str, Any]) -> bytes:
    """Serialize like kbgit does (sorted keys, indent 1, trailing newline)."""
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def forge(
    repo: Path,
    entries: dict[str, tuple[str, bytes]],
    *,
    ledger: Edit | None = None,
    manifest: Edit | None = None,
    raw: dict[str, bytes] | None = None,
    message: str = "forged",
) -> str:
    """Commit ``entries`` ({path: (mode, content)}) on HEAD with a resealed ledger/manifest.

    ``raw`` gives exact bytes for any path (e.g. an unparseable ledger.json), staged last.
    """
    git(repo, "read-tree", "HEAD")
    for path, (mode, content) in entries.items():
        git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob(repo, content)},{path}")
    root, man = head_json(repo, "ledger.json"), head_json(repo, "manifest.json")
    led = _logical_ledger(repo, root)
    if ledger:
        ledger(led)
    if manifest:
        manifest(man)
    files = _ledger_files(repo, root, led)
    files["ledger.json"], files["manifest.json"] = seal(files["ledger.json"], man)
    files.update(raw or {})
    for path, data in files.items():
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob(repo, data)},{path}")
    tree = git(repo, "write-tree")
    commit = git(repo, "commit-tree", tree, "-p", "HEAD", "-m", message)
    git(repo, "update-ref", "HEAD", commit)
    return commit


def _logical_ledger(repo: Path, root: dict[str, Any]) -> dict[str, Any]:
    """Return the ledger as one dict with every document (format 1, or format 2's shards)."""
    if root["format"] == 1:
        return root
    docs: dict[str, Any] = {}
    for key in root["shards"]:
        docs.update(json.loads(git(repo, "cat-file", "blob", f"HEAD:{shard_path(key)}")))
    return {"model": root["model"], "chunking": root["chunking"], "documents": docs}


def _ledger_files(repo: Path, root: dict[str, Any], led: dict[str, Any]) -> dict[str, bytes]:
    """Serialize an edited logical ledger in the store's format (format 2: re-sharded)."""
    if root["format"] == 1:
        return {"ledger.json": dumps(led)}
    width, groups = root["shard_hex"], {}
    for path, doc in led["documents"].items():
        groups.setdefault(shard_key(path, width), {})[path] = DocEntry.from_json(doc)
    files, claims = {}, {}
    for key, docs in groups.items():
        raw = encode_shard(docs)
        files[shard_path(key)] = raw
        chunks = sum(len(d.chunks) for d in docs.values())
        claims[key] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
                       "documents": len(docs), "chunks": chunks}  # fmt: skip
    for key in set(root["shards"]) - set(groups):
        git(repo, "update-index", "--force-remove", shard_path(key))
    new_root = dict(root, model=led["model"], chunking=led["chunking"], shards=claims)
    new_root["documents"] = sum(c["documents"] for c in claims.values())
    new_root["chunks"] = sum(c["chunks"] for c in claims.values())
    files["ledger.json"] = dumps(new_root)
    return files


def doc_entry(content: bytes, segment: str, loader: str = "text") -> dict[str, Any]:
    """Return a ledger entry that matches ``content`` (no chunks: nothing to index)."""
    return {
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "loader": loader,
        "segment": segment,
        "chunks": [],
    }


def add_doc(path: str, content: bytes) -> Edit:
    """Return a ledger edit adding a chunkless entry for ``docs/<path>``."""

    def edit(led: dict[str, Any]) -> None:
        segment = next(iter(led["documents"].values()))["segment"]
        led["documents"][path] = doc_entry(content, segment)

    return edit


def push(repo: Path, remote: str = "origin", branch: str = "main") -> tuple[int, str]:
    """Push HEAD with plain git; return (exit code, stderr)."""
    return push_ref(repo, "HEAD", f"refs/heads/{branch}", remote)


def push_ref(repo: Path, src: str, ref: str, remote: str = "origin") -> tuple[int, str]:
    """Push ``src`` (a commit id or HEAD) to any ``ref`` with plain git; return (exit code, stderr)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "push", remote, f"{src}:{ref}"],
        capture_output=True,
        env={**os.environ, **_ENV},
        check=False,
    )
    return proc.returncode, proc.stderr.decode()

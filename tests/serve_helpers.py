"""Helpers for the serving tests: in-process servers on 127.0.0.1, waits, bad commits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from kbgit import KnowledgeStore
from kbgit.config import ServeConfig, StoreSpec
from server.run import Server

T = TypeVar("T")
TOKEN = "test-token"


def start_server(
    *stores: StoreSpec, preload: bool = True, interval: float = 60.0, **settings: Any
) -> Server:
    """Start a real waitress server on a free 127.0.0.1 port (stop it in a finalizer)."""
    settings.setdefault("token", TOKEN)
    cfg = ServeConfig(bind="127.0.0.1:0", interval=interval, stores=stores, **settings)
    srv = Server(cfg)
    srv.start(preload=preload)
    return srv


def wait_until(pred: Callable[[], T], timeout: float = 15.0, step: float = 0.05) -> T:
    """Poll pred until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def get(url: str, **kw: Any) -> requests.Response:
    """GET with a short timeout."""
    return requests.get(url, timeout=10, **kw)


def post(url: str, **kw: Any) -> requests.Response:
    """POST with a short timeout."""
    return requests.post(url, timeout=10, **kw)


def auth(token: str = TOKEN) -> dict[str, str]:
    """Return the Authorization header for the admin endpoints."""
    return {"Authorization": f"Bearer {token}"}


def corrupt_commit(store: KnowledgeStore, message: str = "corrupt") -> str:
    """Commit a flipped byte in one index file with plain git (no kbgit checks); return it."""
    path = sorted((store.root / "index").glob("*.faiss"))[0]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    store.repo.run("add", "-A", "index")
    store.repo.run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    head = store.repo.head()
    assert head is not None
    return head


def restore_commit(store: KnowledgeStore, good: str) -> str:
    """Commit the index of ``good`` back on top of HEAD (a later, good commit)."""
    store.repo.run("checkout", good, "--", "index")
    store.repo.run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "restore")
    head = store.repo.head()
    assert head is not None
    return head


def push_raw(store: KnowledgeStore) -> None:
    """Push HEAD to the hub with plain git (what a pusher without kbgit would do)."""
    store.repo.run("push", "-q", "hub", "HEAD:refs/heads/main")


def chunk_ids(store_or_hub: Path, commit: str) -> dict[str, str]:
    """Return {chunk id: source} of a commit's ledger, read with git."""
    from kbgit.format.shards import read_ledger_at
    from kbgit.gitrepo import GitRepo

    ledger = read_ledger_at(GitRepo(store_or_hub), commit)
    assert ledger is not None
    return ledger.chunk_sources()

"""Small truths (issue 15, item 12): diverged lag, the full-hub-disk hint, ``"filter": []``."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import KnowledgeStore, create_hub
from kbgit.config import StoreSpec
from kbgit.errors import GitError, HubMovedError
from kbgit.gitrepo import GitRepo
from kbgit.serving.follower import DIVERGED, UPDATED

from . import hostile
from .conftest import FAKE_CONFIG, write_docs
from .serve_helpers import post, start_server, wait_until


def test_a_diverged_standby_never_reports_zero_lag(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    first = store.ingest(docs).commit
    write_docs(docs, {"tides.md": "Spring tides follow the new and full moon."})
    second = store.ingest(docs).commit
    follower = hostile.standby(tmp_path / "replica", hub)
    assert follower.sync_once().status == UPDATED and follower.service.commit == second
    GitRepo(hub).run("update-ref", "refs/heads/main", first)  # a hub restored from an old backup
    result = follower.sync_once()
    assert result.status == DIVERGED and follower.service.commit == second
    health = follower.service.health()
    assert health["sync"]["diverged"] is True and health["lag"]["commits"] == 1


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (root only: a real full disk)."""
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_push_refused_by_a_full_hub_disk_never_says_rejoin(tmp_path: Path, docs: Path) -> None:
    with _small_disk(tmp_path / "disk") as disk:
        hub = create_hub(disk / "hub.git")
        store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)
        assert store.ingest(docs).pushed
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        os.close(fd)
        write_docs(docs, {"tides.md": "Spring tides follow the new and full moon. " * 300})
        with pytest.raises(GitError) as info:
            store.ingest(docs)
        assert not isinstance(info.value, HubMovedError)
        assert "rejoin" not in (info.value.hint or "") and "next ingest" in (info.value.hint or "")
        pending = store.repo.head()
        assert GitRepo(hub).rev_parse("main") != pending  # kept locally, not on the hub
        filler.unlink()
        assert store.ingest(docs).pushed  # the pending commit goes out with the next ingest
        assert GitRepo(hub).rev_parse("main") == pending


def test_filter_must_be_an_object(tmp_path: Path, store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)))
    try:
        wait_until(lambda: srv.services.ready)
        url = f"{srv.url}/query"
        for ok in (None, {}, {"source": "guide/"}):
            resp = post(url, json={"query": "vpn", "filter": ok})
            assert resp.status_code == 200, (ok, resp.text)
        for bad in ([], "", 0, {"source": []}):
            resp = post(url, json={"query": "vpn", "filter": bad})
            assert resp.status_code == 400 and "filter" in resp.json()["error"], bad
    finally:
        srv.stop()

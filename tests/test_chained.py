"""Chained replication: a standby follows another standby's verified replica, not the hub."""

from __future__ import annotations

from pathlib import Path

from kbgit import KnowledgeStore
from kbgit.gitrepo import GitRepo
from kbgit.serving.follower import OK, UPDATED, Follower
from kbgit.serving.service import KnowledgeService

from .conftest import write_docs


def _standby(root: Path, upstream: Path) -> Follower:
    follower = Follower(KnowledgeService(root.name, root), hub=str(upstream))
    follower.open()
    return follower


def test_a_standby_follows_another_standbys_replica(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    first = store.ingest(docs).commit
    tier1 = _standby(tmp_path / "tier1", hub)
    tier2 = _standby(tmp_path / "tier2", tmp_path / "tier1")  # fetches from tier1's clone
    assert tier2.sync_once().status == OK and tier2.service.commit is None  # tier1 has nothing
    assert tier1.sync_once().status == UPDATED
    assert tier2.sync_once().status == UPDATED and tier2.service.commit == first
    write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
    second = store.ingest(docs).commit
    assert tier2.sync_once().status == OK and tier2.service.commit == first  # not before tier1
    tier1.sync_once()
    assert tier2.sync_once().status == UPDATED and tier2.service.commit == second
    # tier2 verified the commit itself and never contacted the hub
    assert GitRepo(tmp_path / "tier2").remote_url("hub") == str((tmp_path / "tier1").resolve())
    assert tier2.service.query("moon tides", k=1).hits[0].source == "tides.md"

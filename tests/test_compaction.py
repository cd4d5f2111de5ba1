"""Compaction: one segment, no tombstones, identical search results; gc of the hub."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbgit import KnowledgeStore
from kbgit.gitrepo import GitRepo
from kbgit.history.compaction import compact, gc
from kbgit.history.log import log
from kbgit.history.rollback import rollback

from .conftest import FAKE_CONFIG, write_docs

QUERIES = [
    "rotate api keys",
    "restore backups nightly",
    "vpn handshake mtu",
    "on-call shift swap",
    "topic3 word17",
    "certificates renewal",
]


def top(kb: KnowledgeStore, rev: str = "HEAD", k: int = 5) -> list[list[tuple[str, str, float]]]:
    return [[(h.chunk_id, h.text, h.score) for h in kb.query(q, k, rev=rev).hits] for q in QUERIES]


@pytest.fixture
def fragmented(store: KnowledgeStore, docs: Path) -> KnowledgeStore:
    """A store of 8 ingests with edits and deletes: many segments and tombstones."""
    store.ingest(docs)
    for i in range(7):
        write_docs(
            docs,
            {
                f"notes/n{i}.md": f"Note {i}: topic{i} word{i * 5} word17 certificates.\n",
                "keys.md": f"# Keys, version {i}\n\nRotate API keys every {30 + i} days.\n",
            },
        )
        if i == 3:
            (docs / "backup.txt").unlink()
        if i == 5:
            (docs / "notes" / "n1.md").unlink()
        store.ingest(docs)
    manifest = store.verify().manifest
    assert len(manifest.segments) >= 6 and any(s.tombstones for s in manifest.segments)
    return store


def test_compaction_keeps_results_identical(fragmented: KnowledgeStore) -> None:
    kb = fragmented
    before_commit = kb.repo.head()
    before = top(kb)
    snap = kb.verify()
    res = compact(kb)
    assert res.commit == kb.repo.head() and res.pushed
    assert (res.segments_before, res.segments_after) == (len(snap.manifest.segments), 1)
    assert res.vectors == snap.vectors and res.vectors_dropped > 0
    after = top(kb)
    for b, a in zip(before, after, strict=True):
        assert [(cid, text) for cid, text, _ in b] == [(cid, text) for cid, text, _ in a]
        np.testing.assert_allclose([s for *_, s in b], [s for *_, s in a], rtol=0, atol=1e-6)
    new = kb.verify()
    assert len(new.manifest.segments) == 1 and not new.manifest.segments[0].tombstones
    assert new.manifest.generation == snap.manifest.generation + 1
    assert {d.segment for d in new.ledger.documents.values()} == {new.manifest.segments[0].name}
    assert {p: d.chunks for p, d in new.ledger.documents.items()} == {
        p: d.chunks for p, d in snap.ledger.documents.items()
    }
    assert np.array_equal(new.index.vectors(), snap.index.vectors())
    assert top(kb, before_commit) == before  # the old segments stay in history
    assert log(kb.repo, limit=1)[0].kind == "compact"


def test_compaction_standby_follows_and_writes_continue(
    fragmented: KnowledgeStore, hub: Path, tmp_path: Path, docs: Path
) -> None:
    kb = fragmented
    standby = KnowledgeStore.init(tmp_path / "standby", hub=str(hub), config=FAKE_CONFIG)
    compact(kb)
    assert standby.pull() == kb.repo.head() and top(standby) == top(kb)
    write_docs(docs, {"later.md": "A later document about word17 and topic3.\n"})
    (docs / "keys.md").unlink()
    res = kb.ingest(docs)
    assert res.chunks_deleted > 0 and res.pushed
    manifest = kb.verify().manifest
    assert len(manifest.segments) == 2 and manifest.segments[0].tombstones
    back = rollback(kb, "HEAD~2")  # to before the compaction
    assert back.pushed and standby.pull() == kb.repo.head()
    assert top(standby) == top(kb, "HEAD~3")


def test_compact_store_is_a_noop_unless_forced(fragmented: KnowledgeStore) -> None:
    kb = fragmented
    compact(kb)
    head = kb.repo.head()
    again = compact(kb)
    assert again.noop and kb.repo.head() == head
    dry = compact(kb, force=True, dry_run=True)
    assert dry.dry_run and not dry.noop and kb.repo.head() == head
    forced = compact(kb, force=True)
    assert forced.commit and kb.repo.head() != head and top(kb) == top(kb, head)


def test_compact_an_emptied_store(store: KnowledgeStore, docs: Path, tmp_path: Path) -> None:
    store.ingest(docs)
    empty = tmp_path / "empty"
    empty.mkdir()
    store.ingest(empty)
    assert store.verify().vectors == 0
    res = compact(store)
    assert res.noop and res.segments_after == 0


def test_gc_packs_the_hub_and_keeps_every_commit(fragmented: KnowledgeStore, hub: Path) -> None:
    kb = fragmented
    compact(kb)
    hub_repo = GitRepo(hub)
    loose = hub_repo.run("count-objects", "-v")
    assert "count: 0" not in loose.splitlines()
    res = gc(hub)
    assert res.bytes_before > 0 and res.bytes_after > 0
    assert "count: 0" in hub_repo.run("count-objects", "-v").splitlines()
    assert hub_repo.count_commits("main") == kb.repo.count_commits("HEAD")
    for commit in hub_repo.run("rev-list", "main").split():
        assert kb.verify(commit).commit == commit

"""Two writers of one hub at the same moment: the loser is left as it was (issue 15, item 3).

Before: the loser committed locally, its push was refused, and `kbgit pull` then said
"cannot fast-forward: this store has commits the hub lacks": only a re-clone recovered.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kbgit import HubMovedError, KnowledgeStore
from kbgit.fencing import WRITER_REF
from kbgit.gitrepo import GitRepo
from kbgit.history.rollback import rollback

from .conftest import FAKE_CONFIG, write_docs

RACES = 20


@pytest.fixture
def pair(tmp_path: Path, hub: Path) -> tuple[KnowledgeStore, KnowledgeStore]:
    """Two working stores of one hub, both at the hub's first commit."""
    first = KnowledgeStore.init(tmp_path / "a", hub=str(hub), config=FAKE_CONFIG)
    first.ingest(write_docs(tmp_path / "seed", {"seed.md": "the seed document"}))
    second = KnowledgeStore.init(tmp_path / "b", hub=str(hub), config=FAKE_CONFIG)
    assert second.repo.head() == first.repo.head()
    # both act as one writer (they share its claim on the hub, refs/kbgit/writer), so
    # fencing lets both write and their pushes race at the hub
    second.repo.fetch("hub", "main")
    second.repo.run("update-ref", WRITER_REF, first.repo.rev_parse(WRITER_REF))
    return first, second


def _assert_as_before(store: KnowledgeStore, head: str) -> None:
    assert store.repo.head() == head
    assert not store.writer.needs_repair()


def test_push_refused_because_the_hub_moved_undoes_the_commit(
    pair: tuple[KnowledgeStore, KnowledgeStore], tmp_path: Path, hub: Path
) -> None:
    a, b = pair
    before = b.repo.head()
    assert before is not None
    # b commits; before it pushes, a pushes (the window between b's commit and push)
    mine = b.ingest(write_docs(tmp_path / "db", {"b.md": "b's document"}), push=False).commit
    theirs = a.ingest(write_docs(tmp_path / "da", {"a.md": "a's document"})).commit
    with pytest.raises(HubMovedError) as info:
        b.push()
    assert "kbgit pull" in (info.value.hint or "")
    _assert_as_before(b, before)
    assert mine is not None and b.repo.rev_parse(f"refs/kbgit/unpushed/{mine}") == mine
    assert b.pull() == theirs
    again = b.ingest(tmp_path / "db", keep_missing=True)
    assert again.added == ["b.md"] and again.pushed
    assert GitRepo(hub).is_ancestor(theirs, again.commit)


def test_hub_checked_again_before_committing(
    pair: tuple[KnowledgeStore, KnowledgeStore], tmp_path: Path
) -> None:
    a, b = pair
    before = b.repo.head()
    assert before is not None
    with pytest.raises(HubMovedError) as info, b.writer.transaction() as txn:
        a.ingest(write_docs(tmp_path / "da", {"a.md": "a's document"}))  # while b works
        txn.write("docs/x.md", b"never committed")
        txn.commit("kbgit test: never", [], _trailers())
    assert "kbgit pull" in (info.value.hint or "")
    _assert_as_before(b, before)


def test_a_crash_after_a_refused_push_is_settled_by_the_next_writer(
    pair: tuple[KnowledgeStore, KnowledgeStore], tmp_path: Path
) -> None:
    a, b = pair
    before = b.repo.head()
    assert before is not None
    b.ingest(write_docs(tmp_path / "db", {"b.md": "b's document"}), push=False)
    # the state a writer killed during its push leaves: the marker, the commit, no push
    b.writer.mark_pushing()
    theirs = a.ingest(write_docs(tmp_path / "da", {"a.md": "a's document"})).commit
    with pytest.raises(HubMovedError) as info:
        b.ingest(tmp_path / "db")
    assert "kbgit pull" in (info.value.hint or "")
    _assert_as_before(b, before)
    assert b.pull() == theirs


def test_rollback_loser_is_left_as_it_was(
    pair: tuple[KnowledgeStore, KnowledgeStore], tmp_path: Path
) -> None:
    a, b = pair
    a.ingest(write_docs(tmp_path / "seed", {"more.md": "a second document"}))
    b.pull()
    before = b.repo.head()
    assert before is not None
    result = rollback(b, "HEAD~1", push=False)
    assert result.commit is not None
    a.ingest(write_docs(tmp_path / "seed", {"third.md": "a third document"}))
    with pytest.raises(HubMovedError):
        b.push()
    _assert_as_before(b, before)
    b.pull()
    assert rollback(b, "HEAD~2").pushed


def test_twenty_races_leave_no_loser_stuck_and_lose_no_update(
    pair: tuple[KnowledgeStore, KnowledgeStore], tmp_path: Path, hub: Path
) -> None:
    stores = dict(zip("ab", pair, strict=True))
    folders = {name: tmp_path / f"src-{name}" for name in stores}
    lost_races = 0
    for i in range(RACES):
        for name, folder in folders.items():
            write_docs(folder, {f"{name}{i:02d}.md": f"document {i} written by {name}"})
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def run(name: str, barrier: threading.Barrier = barrier, outcome: dict = outcome) -> None:
            barrier.wait()
            try:
                outcome[name] = stores[name].ingest(folders[name], keep_missing=True)
            except HubMovedError as exc:
                outcome[name] = exc

        threads = [threading.Thread(target=run, args=(n,)) for n in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for name, store in stores.items():
            if isinstance(outcome[name], HubMovedError):
                lost_races += 1
                store.pull()  # the hint works: the loser is only behind
                assert store.ingest(folders[name], keep_missing=True).pushed
            store.pull()
    stores["a"].pull()  # b may have pushed its retry after a pulled in the last round
    final = KnowledgeStore(stores["a"].root).snapshot(GitRepo(hub).rev_parse("refs/heads/main"))
    expected = {f"{n}{i:02d}.md" for n in stores for i in range(RACES)} | {"seed.md"}
    assert set(final.ledger.documents) == expected
    assert lost_races >= 1  # the race did happen at least once


def _trailers():  # noqa: ANN202 - the trailer type is the writer's own
    from kbgit.format.trailers import Trailers

    return Trailers(operation="test")

"""Tiered compaction: only runs of same-size segments merge; results and history unchanged."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main
from kbgit.history.compaction import compact
from kbgit.history.log import log
from kbgit.history.tiers import size_tier

from .conftest import FAKE_CONFIG, write_docs
from .test_compaction import fragmented, top  # noqa: F401 - the fixture is used by name


def test_size_tiers() -> None:
    assert [size_tier(n) for n in (0, 1, 4095, 4096, 16383, 16384, 65536, 1_000_000)] == [
        0, 0, 0, 1, 1, 2, 3, 4,
    ]  # fmt: skip
    assert [size_tier(n, base=2) for n in (7, 8, 31, 32)] == [0, 1, 1, 2]


def test_tiered_merges_small_runs_and_keeps_a_big_segment(
    store: KnowledgeStore, tmp_path: Path, hub: Path
) -> None:
    big = {
        f"big{i}.md": f"Big document {i} about topic{i} and word{i * 3} ferries." for i in range(40)
    }
    docs = write_docs(tmp_path / "docs", big)
    store.ingest(docs)
    for i in range(5):  # five small ingests: five tier-0 segments after the big one
        write_docs(docs, {f"small{i}.md": f"Small note {i}: word17 topic{i} certificates."})
        if i == 2:
            (docs / "big3.md").unlink()  # a tombstone in the big segment: kept as it is
        store.ingest(docs)
    before_commit, before = store.repo.head(), top(store)
    old = store.verify().manifest
    assert len(old.segments) == 6 and old.segments[0].tombstones
    res = compact(store, tiered=True, tier_base=4)  # tier 0 below 16 live vectors
    assert res.commit == store.repo.head() and res.pushed
    assert (res.segments_before, res.segments_after) == (6, 2) and res.vectors_dropped == 0
    new = store.verify().manifest
    assert new.segments[0] == old.segments[0]  # same files, same tombstones: not rewritten
    changed = store.repo.run("diff", "--name-only", before_commit, "HEAD").split()
    assert not any(p.startswith(f"index/{old.segments[0].name}") for p in changed)
    assert sum(p.startswith("index/") for p in changed) == 2 * 5 + 2  # 5 gone, 1 new
    assert top(store) == before and top(store, before_commit) == before
    assert log(store.repo, limit=1)[0].kind == "compact"
    again = compact(store, tiered=True, tier_base=4)
    assert again.noop and store.repo.head() == res.commit
    standby = KnowledgeStore.init(tmp_path / "standby", hub=str(hub), config=FAKE_CONFIG)
    assert standby.repo.head() == store.repo.head() and top(standby) == before


def test_tiered_rewrites_a_mostly_deleted_segment(store: KnowledgeStore, tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {f"d{i}.md": f"Document {i} word{i}." for i in range(10)})
    store.ingest(docs)
    for i in range(6):
        (docs / f"d{i}.md").unlink()
    store.ingest(docs)  # 6 of 10 rows tombstoned, and no segment added
    before = top(store)
    res = compact(store, tiered=True)
    assert (res.segments_before, res.segments_after) == (1, 1) and res.vectors_dropped == 6
    assert not store.verify().manifest.segments[0].tombstones and top(store) == before


def test_tiered_compaction_of_a_fragmented_store_from_the_cli(fragmented: KnowledgeStore) -> None:  # noqa: F811
    kb = fragmented
    before = top(kb)
    out = CliRunner().invoke(main, ["compact", str(kb.root), "--tiered"])
    assert out.exit_code == 0 and "merged" in out.output, out.output
    assert len(kb.verify().manifest.segments) == 1 and top(kb) == before
    out = CliRunner().invoke(main, ["compact", str(kb.root), "--tiered"])
    assert out.exit_code == 0 and "no size tier is full" in out.output, out.output

"""Per-segment search: tombstones as masks, segment indexes reused across reloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kbgit import KnowledgeStore
from kbgit.format.checks import SegmentCache
from kbgit.format.snapshot import load_snapshot
from kbgit.format.vector_index import LiveIndex, Row, Segment

from .conftest import write_docs


def _segments(n: int, rows: int, dim: int = 16) -> list:
    rng = np.random.default_rng(7)
    return [
        Segment(
            f"g{g:06d}",
            rng.standard_normal((rows, dim)).astype(np.float32),
            tuple(Row(f"{g}-{i}", f"text {g}-{i}", {}) for i in range(rows)),
        )
        for g in range(n)
    ]


def _brute(live: LiveIndex, query: np.ndarray, k: int, allowed=None) -> list[str]:
    rows, scores = live.rows(), live.vectors() @ query
    pool = np.arange(len(rows)) if allowed is None else np.asarray(allowed)
    best = pool[np.argsort(-scores[pool], kind="stable")[:k]]
    return [rows[i][1].id for i in best]


def test_masked_per_segment_search_equals_brute_force_over_live_rows() -> None:
    segs = _segments(4, 300)
    dead = {"g000001": {f"1-{i}" for i in range(0, 300, 2)}, "g000003": {"3-5"}}
    live = LiveIndex(segs, dead, 16)
    assert len(live) == 4 * 300 - 150 - 1
    assert all(r.id not in dead.get(s, ()) for s, r in live.rows())
    masks = dict((seg.name, mask) for seg, mask in live.parts())
    assert masks["g000000"] is None and masks["g000001"].sum() == 150
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.standard_normal(16).astype(np.float32)
        assert [m.row.id for m in live.search(q, 10)] == _brute(live, q, 10)
        allowed = sorted(rng.choice(len(live), 100, replace=False).tolist())
        got = [m.row.id for m in live.search(q, 7, allowed)]
        assert got == _brute(live, q, 7, allowed)
    gone = LiveIndex(segs[:1], {"g000000": {f"0-{i}" for i in range(300)}}, 16)
    assert len(gone) == 0 and gone.search(np.ones(16, dtype=np.float32), 3) == []


def test_a_reload_builds_indexes_only_for_new_segments(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    cache = SegmentCache()
    first = load_snapshot(store.repo, "HEAD", cache=cache)
    (docs / "backup.txt").unlink()  # a tombstone in g000001: masked, not rebuilt
    write_docs(docs, {"tides.md": "Spring tides follow the new and full moon.\n"})
    store.ingest(docs)
    second = load_snapshot(store.repo, "HEAD", cache=cache)
    before = {seg.name: seg for seg, _mask in first.index.parts()}
    after = {seg.name: (seg, mask) for seg, mask in second.index.parts()}
    assert after["g000001"][0] is before["g000001"]  # the same object: nothing re-read or copied
    assert after["g000001"][1] is not None and not after["g000001"][1].all()
    assert "g000002" in after and "g000002" not in before
    hits = second.search(store.embedder.embed(["spring tides moon"])[0], k=1)
    assert hits[0].source == "tides.md"

"""Compaction of a store with 200 small segments: hub growth, load and query latency.

Builds a store (fake 384-d embedder) from 200 small ingests: each adds two short
documents and edits one earlier document, so the store has ~200 segments and as many
tombstone files. Then, side by side in one run, before vs after ``kbgit compact``:

* cold load + full verification of HEAD (what a standby or a restarted server pays);
* query latency: search of the live index for 200 fixed query vectors (k=10), and the
  same with a ``source`` prefix filter;
* that results are identical (same chunk ids, scores within 1e-6);
* hub growth: bytes the compaction adds to the hub, vs the live index size, and the hub
  after ``kbgit gc``.

Run:  python bench/bench_compaction.py            (200 segments, ~2-3 min)
      python bench/bench_compaction.py --quick    (60 segments, ~40 s)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kbgit import FakeEmbedder, KnowledgeStore, StoreConfig, create_hub
from kbgit.format.checks import SegmentCache
from kbgit.format.snapshot import Snapshot, load_snapshot
from kbgit.history.compaction import compact, gc, objects_size

WORDS = [f"w{i}" for i in range(2000)]
CHUNK = 40


def doc_text(rng: random.Random, chunks: int) -> str:
    paras = [" ".join(rng.choices(WORDS, k=CHUNK - 5)) for _ in range(chunks)]
    return "\n\n".join(paras) + "\n"


def write(root: Path, docs: dict[str, str]) -> None:
    for rel, text in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def build(base: Path, segments: int) -> tuple[KnowledgeStore, Path]:
    rng = random.Random(11)
    hub = create_hub(base / "hub.git")
    cfg = StoreConfig(model="fake:384", chunk_size=CHUNK, chunk_overlap=0, hub=str(hub))
    kb = KnowledgeStore.init(base / "kb", hub=str(hub), config=cfg)
    src = base / "src"
    for s in range(segments):
        new = {f"s{s % 10}/d{s:04d}-{j}.md": doc_text(rng, 20) for j in range(2)}
        if s >= 5:
            old = rng.randrange(s)
            new[f"s{old % 10}/d{old:04d}-0.md"] = doc_text(rng, 20)
        write(src, new)
        kb.ingest(src, push=False)
    kb.push()
    return kb, hub


def load_times(kb: KnowledgeStore, rounds: int = 3) -> tuple[float, Snapshot]:
    times, snap = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        snap = load_snapshot(kb.repo, "HEAD", cache=SegmentCache())
        times.append(time.perf_counter() - t)
    return statistics.median(times), snap


def query_times(snap: Snapshot, queries: np.ndarray, source: str | None) -> tuple[float, list]:
    results, times = [], []
    for q in queries:
        t = time.perf_counter()
        hits = snap.search(q, 10, source=source)
        times.append(time.perf_counter() - t)
        results.append([(h.chunk_id, h.score) for h in hits])
    return statistics.median(times) * 1e3, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 segments instead of 200")
    args = ap.parse_args()
    segments = 60 if args.quick else 200
    rng = random.Random(3)
    queries = FakeEmbedder(384).embed([" ".join(rng.choices(WORDS, k=8)) for _ in range(200)])
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-compact-") as tmp:
        t = time.perf_counter()
        kb, hub = build(Path(tmp), segments)
        print(f"built {segments} ingests in {time.perf_counter() - t:.0f} s")
        rows = {}
        for phase in ("before", "after"):
            if phase == "after":
                hub_before = objects_size(hub)
                t = time.perf_counter()
                res = compact(kb)
                rows["compact_s"] = time.perf_counter() - t
                rows["hub_growth"] = objects_size(hub) - hub_before
                rows["res"] = res
            load_s, snap = load_times(kb)
            q_ms, results = query_times(snap, queries, None)
            f_ms, filtered = query_times(snap, queries, "s3/")
            man = snap.manifest
            rows[phase] = dict(load_s=load_s, q_ms=q_ms, f_ms=f_ms, results=results + filtered)
            print(
                f"{phase:>6}: {len(man.segments)} segments, "
                f"{sum(len(s.tombstones) for s in man.segments)} tombstone files, "
                f"{snap.vectors} live vectors; cold load+verify {load_s:.3f} s; query "
                f"{q_ms:.3f} ms, filtered query {f_ms:.3f} ms (median of {len(queries)})"
            )
        report(rows, hub)


def report(rows: dict, hub: Path) -> None:
    b, a, res = rows["before"], rows["after"], rows["res"]
    same = all(
        [c for c, _ in x] == [c for c, _ in y]
        and np.allclose([s for _, s in x], [s for _, s in y], rtol=0, atol=1e-6)
        for x, y in zip(b["results"], a["results"], strict=True)
    )
    print(f"\nresults identical before/after (ids, scores within 1e-6): {same}")
    print(
        f"compaction: {res.segments_before} segments -> 1, {res.vectors_dropped} tombstoned "
        f"vectors dropped, {rows['compact_s']:.2f} s; index files "
        f"{res.index_bytes_before / 1e6:.2f} MB -> {res.index_bytes_after / 1e6:.2f} MB"
    )
    print(
        f"after/before: cold load {a['load_s'] / b['load_s']:.2f}, query "
        f"{a['q_ms'] / b['q_ms']:.2f}, filtered query {a['f_ms'] / b['f_ms']:.2f}"
    )
    size = objects_size(hub)
    print(
        f"hub growth from the compaction: {rows['hub_growth'] / 1e6:.2f} MB "
        f"(= {rows['hub_growth'] / res.index_bytes_after:.2f} x the compacted index); "
        f"hub {size / 1e6:.2f} MB"
    )
    g = gc(hub)
    print(f"kbgit gc of the hub: {g.bytes_before / 1e6:.2f} MB -> {g.bytes_after / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())

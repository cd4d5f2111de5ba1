"""Store format 1 vs 2: what a one-document commit costs in ledger bytes and time.

Side by side in one run, per store size (documents of 3 chunks each, synthetic ledger
entries; no embedding, no git): format 1 serializes the whole ledger.json every commit,
format 2 rewrites the root and the one shard holding the changed document. Also the
parse cost of what a reader must re-read after that commit (whole ledger vs root + one
shard), and exact search over the same vectors in 1 segment vs 100 masked segments
(per-segment search with a tombstone mask per segment; numpy random vectors, 384-d).

Run:  python bench/bench_format.py             (10k and 100k documents)
      python bench/bench_format.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import time

import _common as c
import faiss
import numpy as np

from kbgit.format.ledger import DocEntry, Ledger
from kbgit.format.shards import encode_ledger
from kbgit.format.vector_index import LiveIndex, Row, Segment


def _ledger(n: int, fmt: int) -> Ledger:
    docs = {}
    for i in range(n):
        path = f"area{i % 97}/topic{i % 1013}/document-{i:07d}.md"
        sha = hashlib.sha256(path.encode()).hexdigest()
        chunks = tuple(hashlib.md5(f"{path}/{j}".encode()).hexdigest() for j in range(3))
        docs[path] = DocEntry(sha, 1000 + i % 5000, "markdown", f"g{i % 300:06d}", chunks)
    return Ledger("fake:384", 384, {"size": 200, "overlap": 30}, docs, fmt)


def _timed(fn, reps: int = 5) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _one_change(old: Ledger) -> Ledger:
    path = next(iter(old.documents))
    entry = dataclasses.replace(old.documents[path], sha256="0" * 64, segment="g999999")
    return dataclasses.replace(old, documents={**old.documents, path: entry})


def ledger_row(n: int) -> dict[str, float]:
    """Return the figures of one store size."""
    out: dict[str, float] = {}
    for fmt in (1, 2):
        base = encode_ledger(_ledger(n, fmt), None).ledger  # as read from HEAD: with layout
        new = _one_change(base)
        secs, files = _timed(lambda base=base, new=new: encode_ledger(new, base))
        written = sum(len(v) for v in files.writes.values())  # type: ignore[attr-defined]
        parse, _ = _timed(
            lambda files=files: [json.loads(v) for v in files.writes.values()]  # type: ignore[attr-defined]
        )
        out[f"v{fmt}_ms"], out[f"v{fmt}_kb"] = secs * 1000, written / 1024
        out[f"v{fmt}_parse_ms"] = parse * 1000
    return out


def search_row(vectors: int, dim: int = 384, queries: int = 30) -> dict[str, float]:
    """Return exact query p50 over 1 segment vs 100 segments with tombstone masks."""
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((vectors, dim)).astype(np.float32)
    rows = tuple(Row(str(i), "", {}) for i in range(vectors))
    qs = rng.standard_normal((queries, dim)).astype(np.float32)
    out = {}
    for label, parts in (("one", 1), ("hundred", 100)):
        bounds = np.linspace(0, vectors, parts + 1).astype(int)
        segs = [Segment(f"g{p:06d}", data[a:b], rows[a:b]) for p, (a, b) in
                enumerate(zip(bounds[:-1], bounds[1:], strict=True))]  # fmt: skip
        dead = {s.name: {s.rows[0].id} for s in segs} if parts > 1 else {}
        build, live = _timed(lambda segs=segs, dead=dead: LiveIndex(segs, dead, dim), reps=3)
        times = []
        for q in qs:
            t = time.perf_counter()
            live.search(q, 10)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t)
        out[f"{label}_build_ms"] = build * 1000
        out[f"{label}_p50_ms"] = statistics.median(times) * 1000
    return out


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    c.banner("format 1 vs 2: one-document commit (ledger only), and masked per-segment search")
    c.print_load()
    print(
        "| docs | v1 ledger write | v2 ledger write | ratio | v1 re-read parse | v2 re-read parse |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        r = ledger_row(n)
        print(
            f"| {n:,} | {r['v1_kb']:,.0f} kB, {r['v1_ms']:.1f} ms | {r['v2_kb']:,.0f} kB, "
            f"{r['v2_ms']:.1f} ms | {r['v1_kb'] / r['v2_kb']:.0f}x bytes, "
            f"{r['v1_ms'] / r['v2_ms']:.0f}x time | {r['v1_parse_ms']:.1f} ms | "
            f"{r['v2_parse_ms']:.1f} ms |",
            flush=True,
        )
    print()
    print(
        "| vectors (3 chunks/doc) | LiveIndex build: 1 seg / 100 masked | query p50: 1 seg / 100 masked |"
    )
    print("|---:|---:|---:|")
    for n in args.sizes:
        r = search_row(n)
        print(
            f"| {n:,} | {r['one_build_ms']:.2f} / {r['hundred_build_ms']:.2f} ms | "
            f"{r['one_p50_ms']:.1f} / {r['hundred_p50_ms']:.1f} ms |",
            flush=True,
        )
    c.print_load()


if __name__ == "__main__":
    main()

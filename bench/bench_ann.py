"""Exact vs approximate (IVF) search per segment: latency, recall, build/load time, memory.

Side by side in one run, per size (one segment of N vectors, 384-d, 1 thread):
- exact search (LiveIndex, what every segment below ann_min_vectors uses) p50/p99;
- for each ANN codec (sq8 = the default, flat), built through kbgit's own AnnCache into a
  cold local cache directory (build time), then read back by a fresh AnnCache from that
  directory (load time, the warm-cache path of a restart); query p50/p99 and recall@10
  against exact over the same vectors, at several nprobe values;
- memory: the process's resident set growth for vectors + ANN index vs the raw float32
  vector bytes (goal <= 1.3x), and the ANN file size;
- from 100k up, the same vectors split as tiered compaction leaves a store at worst (up
  to 3 segments per size tier, kbgit/history/tiers.py): exact vs default settings (ANN on
  segments of >= ann_min_vectors, exact on the rest), all through one LiveIndex.

Vectors are synthetic, not from a model: N/100 random centres (at least 10) plus
Gaussian noise (sigma 0.6 per coordinate), normalized: neighbours within a cluster have
cosine ~0.73. Three query sets of 200, each a stored vector plus Gaussian noise then
normalized: "near" (noise norm 0.5: cosine ~0.89 to that vector), "far" (norm 1.0:
~0.71, like a question and its answer) and "random" (norm 6: ~0.17, nearly random
directions: IVF's worst case, out of distribution). Latency is timed on "far"; recall@10
is reported for all three.

Run:  python bench/bench_ann.py              (10k, 100k, 1M)
      python bench/bench_ann.py --quick      (10k, 100k)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from kbgit.config import DEFAULT_ANN_MIN_VECTORS, DEFAULT_ANN_NPROBE
from kbgit.format.ann import AnnSettings, nlist_for
from kbgit.format.anncache import AnnCache
from kbgit.format.vector_index import LiveIndex, Row, Segment
from kbgit.history.tiers import BASE, FANOUT

DIM = 384
QUERIES = 200
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Return this process's resident set size in bytes (now, not the peak).

    Freed memory is handed back to the system first (glibc keeps freed heap otherwise).
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * PAGE


def vectors(n: int, seed: int = 0) -> np.ndarray:
    """Return n clustered, normalized 384-d float32 vectors (generated in blocks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, n // 100), DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        block = centres[rng.integers(0, len(centres), hi - lo)]
        block += 0.6 * rng.standard_normal((hi - lo, DIM)).astype(np.float32)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def queries(x: np.ndarray, spread: float, seed: int = 1) -> np.ndarray:
    """Return QUERIES normalized queries: stored vectors plus noise of norm ~``spread``."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((QUERIES, DIM)) * (spread / np.sqrt(DIM))
    q = x[rng.integers(0, len(x), QUERIES)] + noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


#: query sets: name -> noise norm added to a stored vector (see the module docstring)
SPREADS = {"near": 0.5, "far": 1.0, "random": 6.0}


def query_sets(x: np.ndarray, live: LiveIndex) -> dict[str, tuple[np.ndarray, list]]:
    """Return {name: (queries, exact top-10 ids)} for every SPREADS entry."""
    out = {}
    for i, (name, spread) in enumerate(SPREADS.items()):
        qs = queries(x, spread, seed=1 + i)
        out[name] = (qs, timed(live, qs, exact=True)[2])
    return out


def approx(live: LiveIndex, sets: dict[str, tuple[np.ndarray, list]]) -> tuple[float, float, str]:
    """Return p50 and p99 ms on "far" and recall@10 on every set, as text."""
    a50 = a99 = 0.0
    parts = []
    for name, (qs, truth) in sets.items():
        p50, p99, found = timed(live, qs, exact=False)
        if name == "far":
            a50, a99 = p50, p99
        parts.append(f"{name} {recall(found, truth):.3f}")
    return a50, a99, "recall@10 " + " ".join(parts)


def timed(live: LiveIndex, qs: np.ndarray, *, exact: bool) -> tuple[float, float, list]:
    """Return p50 ms, p99 ms and the hit ids of every query."""
    times, found = [], []
    for q in qs:
        t = time.perf_counter()
        hits = live.search(q, 10, exact=exact)
        times.append((time.perf_counter() - t) * 1000)
        found.append([m.row.id for m in hits])
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))], found


def recall(found: list, truth: list) -> float:
    """Return mean recall@10 of ``found`` against ``truth``."""
    return statistics.mean(len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True))


def one_size(n: int, codecs: list[str], nprobes: list[int]) -> None:
    """Measure exact and each codec at size n and print the rows."""
    gc.collect()
    base = rss()
    x = vectors(n)
    raw = x.nbytes
    vec_rss = rss() - base  # before the rows: their Python objects are not vector memory
    seg = Segment("g000001", x, tuple(Row(str(i), "", {}) for i in range(n)))
    exact = LiveIndex([seg], {}, DIM)
    sets = query_sets(x, exact)
    p50, p99, _truth = timed(exact, sets["far"][0], exact=True)
    print(
        f"\n## {n:,} vectors, 1 segment, nlist {nlist_for(n)} (raw float32 {raw / 2**20:.0f} MiB)"
    )
    print(f"exact            p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    for codec in codecs:
        with tempfile.TemporaryDirectory() as tmp:
            cold = AnnCache(AnnSettings(min_vectors=1, codec=codec), Path(tmp))
            t = time.perf_counter()
            cold.get("0" * 64, x)
            build = time.perf_counter() - t
            del cold
            gc.collect()
            before = rss()
            warm = AnnCache(AnnSettings(min_vectors=1, codec=codec), Path(tmp))
            t = time.perf_counter()
            ann = warm.get("0" * 64, x)
            load = time.perf_counter() - t
            assert warm.loaded == 1 and warm.built == 0
            ann_rss = rss() - before
            size = sum(p.stat().st_size for p in Path(tmp).glob("*.faiss"))
        print(
            f"{codec:5s} build {build:7.1f} s (cold cache)  load {load:6.3f} s (warm)  "
            f"file {size / 2**20:6.0f} MiB  RSS vectors+ANN {(vec_rss + ann_rss) / raw:.2f}x raw "
            f"(ANN alone {ann_rss / raw:.2f}x)"
        )
        for nprobe in nprobes:
            ann.nprobe = min(nprobe, ann.index.nlist)
            live = LiveIndex([seg], {}, DIM, {seg.name: ann})
            a50, a99, recalls = approx(live, sets)
            print(
                f"{codec:5s} nprobe {nprobe:3d}  p50 {a50:7.2f} ms  p99 {a99:7.2f} ms  "
                f"speed-up {p50 / a50:5.1f}x  {recalls}"
            )
        del ann, live, warm
        gc.collect()
    if n >= 100_000:
        tiered(x, sets, p50)


def tier_layout(n: int) -> list[int]:
    """Return segment sizes of n vectors with up to FANOUT - 1 segments per size tier."""
    sizes, top = [], BASE * FANOUT**8
    while top >= BASE * FANOUT:
        while n - sum(sizes) >= top and sizes.count(top) < FANOUT - 1:
            sizes.append(top)
        top //= FANOUT
    rest = n - sum(sizes)
    return sizes + ([rest] if rest else [])


def tiered(x: np.ndarray, sets: dict[str, tuple[np.ndarray, list]], exact_p50: float) -> None:
    """Measure the tier layout of x: exact vs the default ANN settings."""
    sizes = tier_layout(len(x))
    bounds = np.cumsum([0, *sizes])
    segs = [
        Segment(f"g{i:06d}", x[lo:hi], tuple(Row(str(j), "", {}) for j in range(lo, hi)))
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = AnnCache(AnnSettings(), Path(tmp))
        t = time.perf_counter()
        ann = {
            s.name: cache.get(f"{i:064d}", s.vectors)
            for i, s in enumerate(segs)
            if cache.settings.wants(len(s.rows))
        }
        build = time.perf_counter() - t
    live = LiveIndex(segs, {}, DIM, ann)
    e50, e99, _found = timed(LiveIndex(segs, {}, DIM), sets["far"][0], exact=True)
    a50, a99, recalls = approx(live, sets)
    print(
        f"tiers {len(segs)} segments {sizes}: {len(ann)} with ANN (>= {DEFAULT_ANN_MIN_VECTORS:,}), "
        f"build {build:.1f} s\n"
        f"tiers exact p50 {e50:7.2f} ms  p99 {e99:7.2f} ms (1 segment: {exact_p50:.2f} ms)\n"
        f"tiers ANN   p50 {a50:7.2f} ms  p99 {a99:7.2f} ms  speed-up {e50 / a50:5.1f}x  {recalls}"
    )


def main() -> None:
    """Parse arguments and run every size."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="skip 1M")
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--codecs", nargs="+", default=["sq8", "flat"])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, DEFAULT_ANN_NPROBE, 64])
    args = ap.parse_args()
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    faiss.omp_set_num_threads(1)
    print(f"faiss {faiss.__version__}, 1 thread, load average {os.getloadavg()}")
    for n in sizes:
        one_size(n, args.codecs, args.nprobe)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

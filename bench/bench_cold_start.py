"""Standby cold start: process start to /ready 200; and what a ready standby costs to serve.

Goals: issue 3, <= 10 s at 100k; issue 10, <= 15 s at 1M with the ANN cache warm (and the
time with a cold cache), a commit verified on this machine not verified again from scratch
on restart, resident memory <= 1.3x the raw float32 vector bytes, query p50 <= 10 ms at
recall@10 >= 0.95 against exact search.

"Ready" means hot: the index is verified and loaded, ANN indexes of large segments are
built or read from the local cache, the lexical (BM25) index is built or read from its
cache, and the model's weights are loaded and warmed (one encode) before /ready answers
200. Cases, in this order each round:
* fresh:     the replica directory is absent: the standby fetches the whole hub, verifies
             every file, builds every ANN and lexical index (cold caches);
* restart:   the replica exists with its caches and its local verified record;
* cold-ann:  the same, with .git/kbgit-ann removed (ANN indexes built again);
* no-record: the same, with .git/kbgit-verified.json removed (the commit verified again:
             shows what the record saves).
The log lines of each start are kept (info level): where the time goes.

``--memory`` loads the served parts in this process (verified snapshot, ANN indexes,
lexical index, from the replica's warm caches) and prints the resident growth of each.

``--serve-figures`` then starts the standby once more (warm) and measures, through HTTP
on that process: its resident set (VmRSS) vs the raw float32 bytes of the live vectors,
and dense query p50/p99 (1 client, k 10; the server searches on one thread) with the
default ANN vs ``"exact": true``, recall@10 of one against the other on two query sets:
"near" (half the words of a stored chunk) and "random" (bench questions: the hashing
embedder makes their vectors unrelated to the stored ones, ANN's worst case).

Run:  python bench/bench_cold_start.py            (100k vectors, 3 rounds, ~2 min)
      python bench/bench_cold_start.py --quick    (10k vectors, 1 round)
      python bench/bench_cold_start.py --vectors 1000000 --layout tiered --model fake \\
          --rounds 1 --cases restart no-record --serve-figures
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _serve_common as c
import requests

CASES = ("fresh", "restart", "cold-ann", "no-record")


def _start(hub: Path, replica: Path, log: Path) -> tuple[float, str]:
    srv = c.ServerProc(["standby", str(hub), str(replica), "--interval", "600"], log, "info")
    try:
        took = srv.wait_ready(1800)
        return took, srv.head() or ""
    finally:
        srv.stop()


def _prepare(case: str, replica: Path) -> None:
    """Put the replica in the state ``case`` starts from."""
    if case == "fresh":
        shutil.rmtree(replica, ignore_errors=True)
    elif case == "cold-ann":
        shutil.rmtree(replica / ".git" / "kbgit-ann", ignore_errors=True)
    elif case == "no-record":
        (replica / ".git" / "kbgit-verified.json").unlink(missing_ok=True)


def _interesting(log: Path) -> list[str]:
    """Return the log lines that say where a start's time went."""
    keys = ("ANN", "prepared", "lexical", "serving", "verif", "clon", "refus", "ERROR", "WARNING")
    lines = log.read_text(errors="replace").splitlines()
    return [ln[:200] for ln in lines if any(k in ln for k in keys)]


def _rss(pid: int) -> int:
    """Return a process's resident set in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _near_queries(docs: Path, count: int) -> list[str]:
    """Return ``count`` queries made of every other word of a stored 40-word chunk."""
    rng, out = random.Random(5), []
    files = sorted(docs.rglob("*.md"))
    while len(out) < count:
        words = rng.choice(files).read_text().split("\n", 2)[2].split()
        start = rng.randrange(0, max(1, len(words) - 40)) // 40 * 40
        out.append(" ".join(words[start : start + 40 : 2]))
    return out


def _memory(replica: Path) -> None:
    """Print the resident growth of each part of a served snapshot, loaded in this process.

    The same steps as a standby's prepare, from the replica's warm caches: verified load
    (vectors, rows with their texts, ledger), ANN indexes, lexical (BM25) index.
    """
    from bench_ann import rss

    from kbgit.format.ann import AnnSettings
    from kbgit.format.anncache import AnnCache
    from kbgit.format.snapshot import load_snapshot, with_ann
    from kbgit.format.verified import VerifiedRecord
    from kbgit.gitrepo import GitRepo
    from kbgit.retrieval.search import LexicalIndexes

    repo = GitRepo(replica)
    steps, before = [], rss()
    snap = load_snapshot(repo, record=VerifiedRecord.open(repo))
    steps.append(("snapshot (vectors, rows, ledger)", rss()))
    snap = with_ann(snap, AnnCache.for_store(replica, AnnSettings()))
    steps.append(("ANN indexes", rss()))
    lexical = LexicalIndexes.for_store(replica).get(snap)
    steps.append(("lexical index", rss()))
    raw = snap.vectors * 384 * 4
    held = sum(seg.vectors.nbytes for seg, _mask in snap.index.parts())
    print(f"in-process memory, {snap.vectors:,} vectors, raw float32 {raw / 2**20:.0f} MiB:")
    print(f"    float32 arrays held {held / 2**20:.0f} MiB ({held / raw:.2f}x)")
    last = before
    for name, now in steps:
        print(f"    {name:34s} +{(now - last) / 2**20:6.0f} MiB ({(now - last) / raw:.2f}x raw)")
        last = now
    print(
        f"    {'all of it':34s} +{(last - before) / 2**20:6.0f} MiB ({(last - before) / raw:.2f}x raw)"
    )
    del lexical, snap


def _ask(session: requests.Session, url: str, text: str, exact: bool) -> tuple[float, list[str]]:
    body = {"query": text, "k": 10, "mode": "dense", "exact": exact}
    t0 = time.perf_counter()
    r = session.post(url + "/query", json=body, timeout=120)
    took = time.perf_counter() - t0
    r.raise_for_status()
    return took, [h["chunk_id"] for h in r.json()["hits"]]


def _serve_figures(srv: c.ServerProc, docs: Path, queries: int) -> None:
    """Print RSS vs raw float32, and HTTP query p50/p99 and recall@10 of ANN vs exact."""
    health = requests.get(srv.url + "/health", timeout=10).json()
    index = health["stores"][0]["index"] if "stores" in health else health["index"]
    vectors = index["vectors"]
    raw = vectors * 384 * 4
    rss = _rss(srv.pid)
    print(
        f"serving process RSS {rss / 2**20:.0f} MiB for {vectors:,} live vectors "
        f"(raw float32 {raw / 2**20:.0f} MiB): {rss / raw:.2f}x raw  goal <= 1.3x: "
        f"{'PASS' if rss <= 1.3 * raw else 'FAIL'}  ({index['segments']} segments, "
        f"{index['ann_segments']} with ANN)"
    )
    session = requests.Session()
    sets = {
        "near": _near_queries(docs, queries),
        "random": [f"{c.QUERIES[i % len(c.QUERIES)]} {i}" for i in range(queries)],
    }
    for name, texts in sets.items():
        ann_t, exact_t, recalls = [], [], []
        for i, text in enumerate(texts):  # interleaved, alternating first (ABBA)
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {exact: _ask(session, srv.url, text, exact) for exact in order}
            ann_t.append(got[False][0])
            exact_t.append(got[True][0])
            truth = set(got[True][1])
            recalls.append(len(truth & set(got[False][1])) / max(1, len(truth)))
        rec = statistics.fmean(recalls)
        print(
            f"query {name:6s} ANN   {c.summary(ann_t)}\n"
            f"query {name:6s} exact {c.summary(exact_t)}\n"
            f"query {name:6s} recall@10 ANN vs exact {rec:.3f}  goal p50 <= 10 ms at "
            f">= 0.95: {'PASS' if c.pct(ann_t, 50) <= 0.010 and rec >= 0.95 else 'FAIL'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=["real", "fake"], default="real")
    ap.add_argument("--layout", choices=["one", "tiered"], default="one", help="see _serve_common")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=["fresh", "restart"])
    ap.add_argument("--goal", type=float, default=10.0, help="seconds (issue 10 at 1M: 15)")
    ap.add_argument("--serve-figures", action="store_true", help="RSS, query p50 and recall")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--memory", action="store_true", help="in-process memory per part")
    ap.add_argument("--replica", type=Path, help="keep the replica here (reused across runs)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.vectors, args.rounds = 10_000, 1
    print(f"load average at the start {os.getloadavg()}")
    hub, kb, docs = c.build_store(args.vectors, args.model, args.layout)
    head = c.open_store(kb, args.model).repo.head()
    times: dict[str, list[float]] = {case: [] for case in args.cases}
    with tempfile.TemporaryDirectory() as tmp:
        replica = args.replica or Path(tmp) / "replica"
        for n in range(args.rounds):
            for case in args.cases:
                _prepare(case, replica)
                log = Path(tmp) / f"{case}{n}-{len(times[case])}.log"
                took, served = _start(hub, replica, log)
                assert served == head, (served, head)
                times[case].append(took)
                print(f"{case:9s} round {n}: {took:.2f}s")
                for line in _interesting(log):
                    print(f"    {line}")
        if args.serve_figures:
            srv = c.ServerProc(
                ["standby", str(hub), str(replica), "--interval", "600"], Path(tmp) / "q.log"
            )
            try:
                srv.wait_ready(1800)
                _serve_figures(srv, docs, args.queries)
            finally:
                srv.stop()
        if args.memory:
            _memory(replica)
    print(
        f"store: {args.vectors}+ vectors, 384-d, model {c.model_id(args.model)}, layout "
        f"{args.layout}; {args.rounds} round(s)"
    )
    for case, values in times.items():
        med = statistics.median(values)
        print(
            f"{case:9s} process start -> /ready: median {med:.2f}s  "
            f"(all: {', '.join(f'{v:.2f}' for v in values)})  goal <= {args.goal:g} s: "
            f"{'PASS' if med <= args.goal else 'FAIL'}"
        )
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

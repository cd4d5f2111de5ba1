"""Query latency: HTTP /query on a `kbgit serve` process vs in-process encode+search.

Goal (issue 3): HTTP p50 / in-process p50 <= 1.25 on the same 100k-vector store.

Both sides encode the query with the same model (all-MiniLM-L6-v2 by default, torch at 1
thread) and search the same verified snapshot (faiss at 1 thread), k=5. The HTTP side is
a real `kbgit serve` process (waitress, 8 threads) and a keep-alive client; requests are
sequential and interleaved with in-process calls (ABBA), so both sides see the same
machine noise. The HTTP time includes JSON parsing, validation, rendering and the
client's own overhead. See bench/_serve_common.py for how the store is built.

Run:  python bench/bench_query.py              (100k vectors, 300 queries a side, ~2 min)
      python bench/bench_query.py --quick      (10k vectors, 100 queries a side)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _serve_common as c
import requests


def _inprocess(kb: Path):  # noqa: ANN202 - returns a closure
    import faiss
    import torch

    from kbgit.embeddings import load_embedder
    from kbgit.format.snapshot import load_snapshot
    from kbgit.gitrepo import GitRepo

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    snap = load_snapshot(GitRepo(kb))
    emb = load_embedder(snap.ledger.model_id, threads=1)

    def run(text: str) -> float:
        t0 = time.perf_counter()
        snap.search(emb.embed([text])[0], 5)
        return time.perf_counter() - t0

    return run, snap.vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--model", choices=["real", "fake"], default="real")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.vectors, args.queries = 10_000, 100
    hub, kb, _docs = c.build_store(args.vectors, args.model)
    inproc, vectors = _inprocess(kb)
    with tempfile.TemporaryDirectory() as tmp:
        srv = c.ServerProc(["serve", str(kb)], Path(tmp) / "serve.log")
        try:
            ready = srv.wait_ready()
            session = requests.Session()

            def http(text: str) -> tuple[float, float]:
                t0 = time.perf_counter()
                r = session.post(srv.url + "/query", json={"query": text, "k": 5}, timeout=30)
                body = r.json()
                assert r.status_code == 200 and len(body["hits"]) == 5, body
                return time.perf_counter() - t0, body["took_ms"] / 1000

            for i in range(20):  # warm both sides
                inproc(c.QUERIES[i % len(c.QUERIES)])
                http(c.QUERIES[i % len(c.QUERIES)])
            local, remote, server_side = [], [], []
            for i in range(args.queries):
                text = f"{c.QUERIES[i % len(c.QUERIES)]} ({i})"
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for side in order:
                    if side == 0:
                        local.append(inproc(text))
                    else:
                        total, inside = http(text)
                        remote.append(total)
                        server_side.append(inside)
        finally:
            srv.stop()
    ratio = c.pct(remote, 50) / c.pct(local, 50)
    print(
        f"store: {vectors} vectors, 384-d, model {c.model_id(args.model)} (queries encoded by "
        f"it; stored vectors from the hashing embedder, see _serve_common.py); server ready "
        f"after {ready:.1f}s"
    )
    print(f"in-process encode+search  {c.summary(local)}")
    print(f"HTTP /query (end to end)  {c.summary(remote)}")
    print(f"  of which inside server  {c.summary(server_side)}")
    print(
        f"ratio HTTP p50 / in-process p50 = {ratio:.3f}  (goal <= 1.25: "
        f"{'PASS' if ratio <= 1.25 else 'FAIL'})"
    )
    print(f"ratio HTTP p99 / in-process p99 = {c.pct(remote, 99) / c.pct(local, 99):.3f}")


if __name__ == "__main__":
    main()

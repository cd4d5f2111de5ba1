"""Standby cold start: process start to /ready 200 on a 100k-vector store.

Goal (issue 3): <= 10 s. "Ready" means hot: the index is verified and loaded and the
model's weights are loaded and warmed (one encode) before /ready answers 200.

Two cases, alternated in one run:
* restart: the replica clone exists (a standby restarted after a crash or upgrade);
* fresh:   the replica directory is absent, so the standby first fetches the whole hub.
The interpreter start, imports, model load (all-MiniLM-L6-v2 by default), full
verification (sha256 of every index file and document) and index build are all inside.

Run:  python bench/bench_cold_start.py            (100k vectors, 3 rounds, ~2 min)
      python bench/bench_cold_start.py --quick    (10k vectors, 1 round)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import _serve_common as c


def _start(hub: Path, replica: Path, log: Path) -> tuple[float, str]:
    srv = c.ServerProc(["standby", str(hub), str(replica), "--interval", "60"], log)
    try:
        took = srv.wait_ready()
        return took, srv.head() or ""
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=["real", "fake"], default="real")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.vectors, args.rounds = 10_000, 1
    hub, kb, _docs = c.build_store(args.vectors, args.model)
    head = c.open_store(kb, args.model).repo.head()
    times: dict[str, list[float]] = {"fresh": [], "restart": []}
    with tempfile.TemporaryDirectory() as tmp:
        replica = Path(tmp) / "replica"
        for n in range(args.rounds):
            shutil.rmtree(replica, ignore_errors=True)
            took, served = _start(hub, replica, Path(tmp) / f"fresh{n}.log")
            assert served == head, (served, head)
            times["fresh"].append(took)
            took, served = _start(hub, replica, Path(tmp) / f"restart{n}.log")
            assert served == head
            times["restart"].append(took)
    print(
        f"store: {args.vectors}+ vectors, 384-d, model {c.model_id(args.model)}; "
        f"{args.rounds} round(s)"
    )
    for case, values in times.items():
        med = statistics.median(values)
        print(
            f"{case:8s} process start -> /ready: median {med:.2f}s  "
            f"(all: {', '.join(f'{v:.2f}' for v in values)})  goal <= 10 s: "
            f"{'PASS' if med <= 10 else 'FAIL'}"
        )
    print(
        f"ratio fresh / restart = "
        f"{statistics.median(times['fresh']) / statistics.median(times['restart']):.2f}"
    )


if __name__ == "__main__":
    main()

"""Fan-out: N standbys serving a push, timed from the moment the hub accepts it.

Goals (issue 14): 5 standbys woken by the hub (hook) every one serving within p50 <= 0.3 s,
max <= 1 s; polling p50 <= interval/2 + 0.3 s; 20 standbys p50 <= 0.5 s, max <= 1.5 s.

One run, side by side: a local hub with the kbgit hooks (pre-receive verifies each push,
post-receive notifies the hook group); for each N in --standbys, a group of N standbys
woken by the hook (interval 60 s, so only the hook wakes them) and, with --poll, a group
of N that only polls (interval --interval s). Each push commits one edited document
(not timed) and pushes it; the clock starts when the hub accepted the push: the mtime of
the hub's loose ref file, which git writes after the pre-receive hook accepted the push
and before post-receive runs. Each standby's /health is polled until it serves the commit.

Run:  python bench/bench_fanout.py --standbys 5 --pushes 10 --poll
      python bench/bench_fanout.py --standbys 5,20 --pushes 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _serve_common as c
import requests

from kbgit import KnowledgeStore
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.failover import promote


def _served(url: str) -> str | None:
    try:
        return requests.get(url + "/health", timeout=5).json()["head"]["commit"]
    except requests.RequestException:
        return None


def _push(store: KnowledgeStore, docs: Path, n: int, hub: Path) -> tuple[str, float]:
    """Commit one edit, push it; return (commit, wall time at which the hub accepted it)."""
    (docs / "topic01" / "doc00001.md").write_text(f"# Fan-out round {n}\n\n" + "fan " * 200)
    commit = store.ingest(docs, push=False).commit
    assert commit is not None
    subprocess.run(
        ["git", "-C", str(store.root), "push", "-q", "hub", "HEAD:refs/heads/main"],
        check=True,
        capture_output=True,
    )
    return commit, os.stat(hub / "refs" / "heads" / "main").st_mtime


def _round(store, docs, n, hub, groups: dict[str, list[c.ServerProc]]) -> dict[str, list[float]]:
    commit, accepted = _push(store, docs, n, hub)
    waits: dict[str, list[float]] = {name: [] for name in groups}
    pending = {(name, i) for name, procs in groups.items() for i in range(len(procs))}
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        for name, i in sorted(pending):
            if _served(groups[name][i].url) == commit:
                waits[name].append(time.time() - accepted)
                pending.discard((name, i))
        time.sleep(0.005)
    assert not pending, f"not served within 120 s: {sorted(pending)}"
    return waits


def _start(
    n: int, hub: Path, tmp: Path, name: str, interval: float, started: list[c.ServerProc]
) -> list[c.ServerProc]:
    procs = []
    for i in range(n):
        args = ["standby", str(hub), str(tmp / f"{name}{i}"), "--interval", str(interval)]
        procs.append(c.ServerProc(args, tmp / f"{name}{i}.log"))
        started.append(procs[-1])  # the caller stops it, whatever happens next
    for p in procs:
        p.wait_ready(600)
    return procs


def _run_n(args, n: int, hub: Path, store, docs, tmp: Path) -> None:
    started: list[c.ServerProc] = []
    try:
        groups = {"hook": _start(n, hub, tmp, f"h{n}-", 60.0, started)}
        if args.poll:
            groups["poll"] = _start(n, hub, tmp, f"p{n}-", args.interval, started)
        hub_hooks.install(
            hub, notify=[p.url for p in groups["hook"]], token=groups["hook"][0].token,
            python=sys.executable,
        )  # fmt: skip
        rounds = [_round(store, docs, r, hub, groups) for r in range(args.pushes)]
    finally:
        for p in started:
            p.stop()
    for name in groups:
        every = [w for r in rounds for w in r[name]]
        slowest = [max(r[name]) for r in rounds]
        print(
            f"{n:>3} standbys, {name}: accepted -> serving, every standby: p50 "
            f"{statistics.median(every):.3f} s  max {max(every):.3f} s; last standby per push: "
            f"p50 {statistics.median(slowest):.3f} s  (n={len(every)})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--standbys", default="5", help="comma-separated fleet sizes, e.g. 5,20")
    ap.add_argument("--pushes", type=int, default=10)
    ap.add_argument("--vectors", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=2.0, help="poll interval of --poll group")
    ap.add_argument("--poll", action="store_true", help="also run a polling-only group")
    args = ap.parse_args()
    src_hub, kb, docs_src = c.build_store(args.vectors, "fake")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hub = tmp / "hub.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(src_hub), str(hub)], check=True)
        cfg = c.open_store(kb, "fake").config
        emb = c.LabelledHashEmbedder(384, c.model_id("fake"))
        store = KnowledgeStore.init(tmp / "kb", hub=str(hub), config=cfg, embedder=emb)
        promote(store.root)  # the writer role moves from the cached store to this copy
        docs = tmp / "docs"
        subprocess.run(["cp", "-r", str(docs_src), str(docs)], check=True)
        for n in (int(x) for x in args.standbys.split(",")):
            _run_n(args, n, hub, store, docs, tmp)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

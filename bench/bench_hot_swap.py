"""Hot swap on a 100k-vector standby: swap time, query p99 during reloads vs steady, errors.

Goals (issue 3): a sync that brings a new commit (fetch, verify, fast-forward, load beside
the old snapshot, swap) <= 1 s; p99 query latency during repeated reloads <= 2x steady
state; 0 failed requests.

A `kbgit standby` process follows a copy of the cached hub. New commits (one document
edited each) are prepared beforehand, so that the only work during the measurement is
the standby's. One client thread queries continuously; blocks without reloads (steady)
alternate with blocks where commits are pushed and the standby is told to sync
(`POST /admin/sync?wait=1`, whose reply carries the server-side sync time).

Run:  python bench/bench_hot_swap.py            (100k vectors, 8 reloads, ~3 min)
      python bench/bench_hot_swap.py --quick    (10k vectors, 4 reloads)
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import _serve_common as c
import requests

from kbgit import KnowledgeStore


def _prepare_commits(hub: Path, kind: str, tmp: Path, count: int) -> tuple[Path, list[str]]:
    """Copy the hub; build ``count`` commits in a scratch primary; return (hub copy, commits)."""
    work_hub = tmp / "hub.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(hub), str(work_hub)], check=True)
    emb = c.LabelledHashEmbedder(384, c.model_id(kind))
    cfg = c.open_store(hub.parent / "kb", kind).config
    store = KnowledgeStore.init(tmp / "kb", hub=str(work_hub), config=cfg, embedder=emb)
    docs = tmp / "docs"
    subprocess.run(["cp", "-r", str(hub.parent / "docs"), str(docs)], check=True)
    commits = []
    for n in range(count):
        (docs / "topic00" / "doc00000.md").write_text(f"# Edited {n}\n\n" + "swap words " * 300)
        commits.append(store.ingest(docs, push=False).commit)
    return work_hub, [str(tmp / "kb"), *commits]


class Client:
    """One thread querying continuously; latencies are tagged with the current phase."""

    def __init__(self, url: str) -> None:
        self.url, self.phase = url, "steady"
        self.lat: dict[str, list[float]] = {"steady": [], "reload": []}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        session, n = requests.Session(), 0
        while not self.stop.is_set() and n < 200_000:
            if self.paused.is_set():
                time.sleep(0.01)
                continue
            text = f"{c.QUERIES[n % len(c.QUERIES)]} {n}"
            phase, t0 = self.phase, time.perf_counter()
            try:
                r = session.post(self.url + "/query", json={"query": text, "k": 5}, timeout=30)
                if r.status_code != 200 or len(r.json()["hits"]) != 5:
                    self.errors.append(f"{r.status_code}: {r.text[:100]}")
            except requests.RequestException as exc:
                self.errors.append(repr(exc))
            self.lat[phase].append(time.perf_counter() - t0)
            n += 1


def _reloads(srv: c.ServerProc, client: Client, kb: str, commits: list[str]) -> dict:
    """Push and sync each commit; every other one with the client paused (no query load)."""
    out: dict = {"load": [], "quiet": [], "walls": [], "stages": []}
    for n, commit in enumerate(commits):
        client.phase = "steady"
        time.sleep(3.0)
        quiet = n % 2 == 1
        if quiet:
            client.paused.set()
            time.sleep(0.2)
        client.phase = "reload"
        subprocess.run(
            ["git", "-C", kb, "push", "-q", "hub", f"{commit}:refs/heads/main"], check=True
        )
        t0 = time.perf_counter()
        result = next(iter(srv.sync().json()["results"].values()))
        out["walls"].append(time.perf_counter() - t0)
        assert result["status"] == "updated" and result["commit"] == commit, result
        out["quiet" if quiet else "load"].append(result["seconds"])
        out["stages"].append(result["stages"])
        client.paused.clear()
        time.sleep(1.0)  # queries right after the swap, while the old snapshot is freed
    return out


def _report(args: argparse.Namespace, client: Client, out: dict) -> None:
    steady, during = client.lat["steady"], client.lat["reload"]
    ratio = c.pct(during, 99) / c.pct(steady, 99)
    print(
        f"store: {args.vectors}+ vectors, 384-d, model {c.model_id(args.model)}; "
        f"{len(out['walls'])} reloads, one edited document per commit"
    )
    for label, values in (("under query load", out["load"]), ("no query load", out["quiet"])):
        if values:
            print(
                f"sync+swap {label:16s} (server side: fetch, verify, ff, swap)  "
                f"{c.summary(values)}  max {max(values) * 1000:.0f} ms  goal <= 1 s: "
                f"{'PASS' if max(values) <= 1.0 else 'FAIL'}"
            )
    names = sorted({k for st in out["stages"] for k in st})
    print(
        "  stages, median ms: "
        + ", ".join(
            f"{k} {c.pct([st.get(k, 0) for st in out['stages']], 50) * 1000:.0f}" for k in names
        )
    )
    print(f"/admin/sync?wait=1 round trip {c.summary(out['walls'])}")
    print(f"queries, steady        {c.summary(steady)}")
    print(f"queries, during reload {c.summary(during)}")
    print(
        f"ratio p99 during reloads / steady = {ratio:.2f}  (goal <= 2: "
        f"{'PASS' if ratio <= 2 else 'FAIL'})"
    )
    print(
        f"failed requests: {len(client.errors)} of {len(steady) + len(during)}"
        + (f"  first: {client.errors[0]}" if client.errors else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--reloads", type=int, default=8)
    ap.add_argument("--model", choices=["real", "fake"], default="real")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.vectors, args.reloads = 10_000, 4
    hub, _kb, _docs = c.build_store(args.vectors, args.model)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work_hub, (kb, *commits) = _prepare_commits(hub, args.model, tmp, args.reloads)
        srv = c.ServerProc(
            ["standby", str(work_hub), str(tmp / "replica"), "--interval", "600"],
            tmp / "standby.log",
        )
        try:
            srv.wait_ready(300)
            client = Client(srv.url)
            client.thread.start()
            try:
                out = _reloads(srv, client, kb, commits)
            finally:
                client.stop.set()
                client.thread.join(60)
        finally:
            srv.stop()
    _report(args, client, out)


if __name__ == "__main__":
    main()

"""Hot swap on a standby: swap time, query p99 during reloads vs steady, errors.

Goals (issue 3): a sync that brings a new commit (fetch, verify, fast-forward, load beside
the old snapshot, swap) <= 1 s; p99 query latency during repeated reloads <= 2x steady
state; 0 failed requests. Issue 10: at 1M vectors, a commit adding 1% of the store swaps
in <= 0.5 s while 4 clients query (``--vectors 1000000 --layout tiered --add-pct 1
--clients 4``).

A `kbgit standby` process follows a copy of the cached hub. New commits (one document
edited each, or ``--add-pct`` new documents each) are prepared beforehand, so that the
only work during the measurement is the standby's. ``--clients`` threads query
continuously; blocks without reloads (steady) alternate with blocks where commits are
pushed and the standby is told to sync (`POST /admin/sync?wait=1`, whose reply carries
the server-side sync time and its stages).

Run:  python bench/bench_hot_swap.py            (100k vectors, 8 reloads, ~3 min)
      python bench/bench_hot_swap.py --quick    (10k vectors, 4 reloads)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _serve_common as c
import requests

from kbgit import KnowledgeStore


def _prepare_commits(
    hub: Path, kind: str, tmp: Path, count: int, add_pct: float = 0.0
) -> tuple[Path, list[str]]:
    """Copy the hub; build ``count`` commits in a scratch primary; return (hub copy, commits).

    Each commit edits one document, or with ``add_pct`` adds that share of the store as
    new documents (clustered like the tiered layout's).
    """
    work_hub = tmp / "hub.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(hub), str(work_hub)], check=True)
    emb = c.LabelledHashEmbedder(384, c.model_id(kind))
    cfg = c.open_store(hub.parent / "kb", kind).config
    store = KnowledgeStore.init(tmp / "kb", hub=str(work_hub), config=cfg, embedder=emb)
    docs = tmp / "docs"
    subprocess.run(["cp", "-r", str(hub.parent / "docs"), str(docs)], check=True)
    vectors = store.snapshot().vectors
    per_commit = max(1, round(vectors * add_pct / 100 / c.CHUNKS_PER_DOC))
    commits = []
    for n in range(count):
        if add_pct:
            lo = 10_000_000 + n * per_commit
            c.write_docs(
                docs / f"added{n}",
                range(lo, lo + per_commit),
                c.WORDS_PER_DOC,
                seed=99,
                topics=max(20, vectors // 500),
            )
        else:
            (docs / "topic00" / "doc00000.md").write_text(f"# Edited {n}\n\n" + "swap words " * 300)
        result = store.ingest(docs, push=False)
        commits.append(result.commit)
        print(f"# commit {n}: +{result.chunks_added} chunks", file=sys.stderr)
    return work_hub, [str(tmp / "kb"), *commits]


class Client:
    """Threads querying continuously; latencies are tagged with the current phase."""

    def __init__(self, url: str, threads: int = 1) -> None:
        self.url, self.phase = url, "steady"
        self.lat: dict[str, list[float]] = {"steady": [], "reload": []}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def start(self) -> None:
        """Start every client thread."""
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        """Stop and wait for every client thread."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout)

    def run(self, first: int = 0) -> None:
        """Query until stopped (list appends are atomic: threads share the lists)."""
        session, n = requests.Session(), first * 1_000_000
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
        f"{len(out['walls'])} reloads, "
        + (f"{args.add_pct:g}% of the store added" if args.add_pct else "one edited document")
        + f" per commit; {args.clients} client thread(s); layout {args.layout}"
    )
    goal = args.swap_goal
    for label, values in (("under query load", out["load"]), ("no query load", out["quiet"])):
        if values:
            print(
                f"sync+swap {label:16s} (server side: fetch, verify, ff, swap)  "
                f"{c.summary(values)}  max {max(values) * 1000:.0f} ms  goal <= {goal:g} s: "
                f"{'PASS' if max(values) <= goal else 'FAIL'}"
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
    ap.add_argument("--clients", type=int, default=1, help="client threads querying")
    ap.add_argument(
        "--add-pct", type=float, default=0.0, help="each commit adds this %% of the store"
    )
    ap.add_argument("--layout", choices=["one", "tiered"], default="one", help="see _serve_common")
    ap.add_argument("--swap-goal", type=float, default=1.0, help="seconds (issue 10: 0.5)")
    ap.add_argument(
        "--replica", type=Path, help="start the standby from a copy of this warm replica"
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.vectors, args.reloads = 10_000, 4
    hub, _kb, _docs = c.build_store(args.vectors, args.model, args.layout)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work_hub, (kb, *commits) = _prepare_commits(
            hub, args.model, tmp, args.reloads, args.add_pct
        )
        srv = c.ServerProc(
            [
                "standby",
                str(work_hub),
                str(c.replica_from(args.replica, tmp / "replica")),
                "--interval",
                "600",
            ],
            tmp / "standby.log",
            "info",
        )
        try:
            srv.wait_ready(1800)
            client = Client(srv.url, args.clients)
            client.start()
            try:
                out = _reloads(srv, client, kb, commits)
            finally:
                client.join(60)
        finally:
            srv.stop()
        prepared = [ln for ln in (tmp / "standby.log").read_text().splitlines() if "prepared" in ln]
    _report(args, client, out)
    print("where each prepare's time went (standby log; the first is the start-up load):")
    for line in prepared:
        print("    " + line.split("prepared ", 1)[1])


if __name__ == "__main__":
    main()

"""Sync lag: git push -> standby answering with the new commit, with and without the hook.

Goals (issue 3): p50 <= 1 s with the post-receive hook; without it <= interval + reload.

One run, side by side: a hub with the kbgit hooks (pre-receive verifies every pushed
commit; post-receive notifies standby A), standby A (interval 60 s, so only the hook can
wake it) and standby B (interval --interval s, not notified: it polls). Each round edits
one document, commits it locally (not timed), then times `git push` through the hooks
and polls both standbys' /health until they serve the new commit. The clock starts
when `git push` starts: the hub's own verification of the pushed commit is included.

Issue 10 (``--vectors 1000000 --layout tiered --add-pct 1 --no-poll``): each round's
commit adds 1% of the store as new documents instead of editing one; ``--no-poll`` runs
standby A alone (B would load the same 1M store on the same two cores).

Run:  python bench/bench_sync_lag.py               (10k vectors, 8 rounds, ~2 min)
      python bench/bench_sync_lag.py --vectors 100000
      python bench/bench_sync_lag.py --quick       (10k vectors, 4 rounds)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _serve_common as c
import requests

from kbgit import KnowledgeStore
from kbgit.hub import hooks as hub_hooks


def _served(url: str) -> tuple[str | None, float | None]:
    h = requests.get(url + "/health", timeout=5).json()
    return h["head"]["commit"], h["last_reload_seconds"]


def _round(
    store: KnowledgeStore, docs: Path, n: int, servers: dict[str, c.ServerProc], add: int
) -> dict:
    if add:
        lo = 20_000_000 + n * add
        topics = max(20, store.snapshot().vectors // 500)
        c.write_docs(docs / f"lag{n}", range(lo, lo + add), c.WORDS_PER_DOC, seed=98, topics=topics)
    else:
        (docs / "topic01" / "doc00001.md").write_text(f"# Lag round {n}\n\n" + "lag words " * 200)
    commit = store.ingest(docs, push=False).commit
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "-C", str(store.root), "push", "-q", "hub", "HEAD:refs/heads/main"],
        check=True,
        capture_output=True,
    )
    pushed = time.perf_counter() - t0
    seen: dict[str, float] = {}
    deadline = t0 + 120
    while len(seen) < len(servers) and time.perf_counter() < deadline:
        for name, srv in servers.items():
            if name not in seen and _served(srv.url)[0] == commit:
                seen[name] = time.perf_counter() - t0
        time.sleep(0.01)
    a = servers["hook"]
    body = requests.post(a.url + "/query", json={"query": "lag words", "k": 1}, timeout=10).json()
    assert body["commit"] == commit and len(seen) == len(servers), (body, seen)
    return {"push": pushed, **seen, "reload": _served(a.url)[1] or 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--model", choices=["real", "fake"], default="real")
    ap.add_argument("--layout", choices=["one", "tiered"], default="one", help="see _serve_common")
    ap.add_argument(
        "--add-pct", type=float, default=0.0, help="each commit adds this %% of the store"
    )
    ap.add_argument("--no-poll", action="store_true", help="no polling standby B")
    ap.add_argument(
        "--replica", type=Path, help="start the standby from a copy of this warm replica"
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 4
    print(f"load average at the start {os.getloadavg()}")
    hub, kb, docs_src = c.build_store(args.vectors, args.model, args.layout)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work_hub = tmp / "hub.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(hub), str(work_hub)], check=True)
        emb = c.LabelledHashEmbedder(384, c.model_id(args.model))
        cfg = c.open_store(kb, args.model).config
        store = KnowledgeStore.init(tmp / "kb", hub=str(work_hub), config=cfg, embedder=emb)
        docs = tmp / "docs"
        subprocess.run(["cp", "-r", str(docs_src), str(docs)], check=True)
        add = round(store.snapshot().vectors * args.add_pct / 100 / c.CHUNKS_PER_DOC)
        servers = {
            "hook": c.ServerProc(
                [
                    "standby",
                    str(work_hub),
                    str(c.replica_from(args.replica, tmp / "a")),
                    "--interval",
                    "600",
                ],
                tmp / "a.log",
            )
        }
        if not args.no_poll:
            servers["poll"] = c.ServerProc(
                ["standby", str(work_hub), str(tmp / "b"), "--interval", str(args.interval)],
                tmp / "b.log",
            )
        try:
            for srv in servers.values():
                srv.wait_ready(1800)
            a = servers["hook"]
            hub_hooks.install(work_hub, notify=[a.url], token=a.token, python=sys.executable)
            rounds = [_round(store, docs, n, servers, add) for n in range(args.rounds)]
        finally:
            for srv in servers.values():
                srv.stop()
    col = {k: [r[k] for r in rounds] for k in rounds[0]}
    after_push = [r["hook"] - r["push"] for r in rounds]
    budget = args.interval + c.pct(col["reload"], 50)
    print(
        f"store: {args.vectors}+ vectors, 384-d, model {c.model_id(args.model)}; "
        f"{args.rounds} pushes"
        + (f" each adding {args.add_pct:g}% of the store" if args.add_pct else "")
        + f"; hub hooks verify every push; layout {args.layout}"
    )
    print(f"git push (pre-receive verify + post-receive notify)  {c.summary(col['push'])}")
    print(f"standby reload (verify, ff, swap)                    {c.summary(col['reload'])}")
    hook_p50 = c.pct(col["hook"], 50)
    print(
        f"with hook:    push start -> answering  {c.summary(col['hook'])}  goal p50 <= 1 s: "
        f"{'PASS' if hook_p50 <= 1.0 else 'FAIL'}"
    )
    print(f"              push done  -> answering  {c.summary(after_push)}")
    if "poll" in col:
        poll_p50 = c.pct(col["poll"], 50)
        print(
            f"without hook: push start -> answering  {c.summary(col['poll'])}  goal p50 <= "
            f"interval {args.interval:g} s + reload = {budget:.2f} s: "
            f"{'PASS' if poll_p50 <= budget else 'FAIL'}"
        )
        print(f"ratio without / with hook (p50) = {poll_p50 / hook_p50:.2f}")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Sync lag: git push -> standby answering with the new commit, with and without the hook.

Goals (issue 3): p50 <= 1 s with the post-receive hook; without it <= interval + reload.

One run, side by side: a hub with the kbgit hooks (pre-receive verifies every pushed
commit; post-receive notifies standby A), standby A (interval 60 s, so only the hook can
wake it) and standby B (interval --interval s, not notified: it polls). Each round edits
one document, commits it locally (not timed), then times `git push` through the hooks
and polls both standbys' /health until they serve the new commit. The clock starts
when `git push` starts: the hub's own verification of the pushed commit is included.

Run:  python bench/bench_sync_lag.py               (10k vectors, 8 rounds, ~2 min)
      python bench/bench_sync_lag.py --vectors 100000
      python bench/bench_sync_lag.py --quick       (10k vectors, 4 rounds)
"""

from __future__ import annotations

import argparse
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


def _round(store: KnowledgeStore, docs: Path, n: int, a: c.ServerProc, b: c.ServerProc) -> dict:
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
    while len(seen) < 2 and time.perf_counter() < deadline:
        for name, srv in (("hook", a), ("poll", b)):
            if name not in seen and _served(srv.url)[0] == commit:
                seen[name] = time.perf_counter() - t0
        time.sleep(0.01)
    body = requests.post(a.url + "/query", json={"query": "lag words", "k": 1}, timeout=10).json()
    assert body["commit"] == commit and len(seen) == 2, (body, seen)
    return {"push": pushed, **seen, "reload": _served(a.url)[1] or 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--model", choices=["real", "fake"], default="real")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 4
    hub, kb, docs_src = c.build_store(args.vectors, args.model)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work_hub = tmp / "hub.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(hub), str(work_hub)], check=True)
        emb = c.LabelledHashEmbedder(384, c.model_id(args.model))
        cfg = c.open_store(kb, args.model).config
        store = KnowledgeStore.init(tmp / "kb", hub=str(work_hub), config=cfg, embedder=emb)
        docs = tmp / "docs"
        subprocess.run(["cp", "-r", str(docs_src), str(docs)], check=True)
        a = c.ServerProc(
            ["standby", str(work_hub), str(tmp / "a"), "--interval", "60"], tmp / "a.log"
        )
        b = c.ServerProc(
            ["standby", str(work_hub), str(tmp / "b"), "--interval", str(args.interval)],
            tmp / "b.log",
        )
        try:
            a.wait_ready(300)
            b.wait_ready(300)
            hub_hooks.install(work_hub, notify=[a.url], token=a.token, python=sys.executable)
            rounds = [_round(store, docs, n, a, b) for n in range(args.rounds)]
        finally:
            a.stop()
            b.stop()
    col = {k: [r[k] for r in rounds] for k in rounds[0]}
    after_push = [r["hook"] - r["push"] for r in rounds]
    budget = args.interval + c.pct(col["reload"], 50)
    print(
        f"store: {args.vectors}+ vectors, 384-d, model {c.model_id(args.model)}; "
        f"{args.rounds} pushes; hub hooks verify every push"
    )
    print(f"git push (pre-receive verify + post-receive notify)  {c.summary(col['push'])}")
    print(f"standby reload (verify, ff, swap)                    {c.summary(col['reload'])}")
    hook_p50 = c.pct(col["hook"], 50)
    print(
        f"with hook:    push start -> answering  {c.summary(col['hook'])}  goal p50 <= 1 s: "
        f"{'PASS' if hook_p50 <= 1.0 else 'FAIL'}"
    )
    print(f"              push done  -> answering  {c.summary(after_push)}")
    poll_p50 = c.pct(col["poll"], 50)
    print(
        f"without hook: push start -> answering  {c.summary(col['poll'])}  goal p50 <= "
        f"interval {args.interval:g} s + reload = {budget:.2f} s: "
        f"{'PASS' if poll_p50 <= budget else 'FAIL'}"
    )
    print(f"ratio without / with hook (p50) = {poll_p50 / hook_p50:.2f}")


if __name__ == "__main__":
    main()

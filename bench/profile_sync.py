"""Where one standby's sync of one push goes: processes started, CPU and wall per stage.

The hub, its smart-HTTP server and the primary are bench_fanout.py's; the standby runs in
this process (a KnowledgeService and its Follower, as ``kbgit standby`` builds them), so
every process it starts is seen: the Python side's own spawns (subprocess.Popen) and
every git process with its children (GIT_TRACE2_EVENT: git fetch's remote-http, index-pack
or unpack-objects, rev-list connectivity check, auto-maintenance, credential helper).
CPU: this process (RUSAGE_SELF), its finished children (RUSAGE_CHILDREN), the live
``git cat-file`` reader (/proc), and the hub's HTTP server (bench_fanout.server_cpu).

Run:  python bench/profile_sync.py --pushes 10
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import bench_fanout as bf

from kbgit.serving.follower import Follower
from kbgit.serving.service import EmbedderPool, KnowledgeService


def _cpu() -> tuple[float, float]:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _reader_cpu(svc: KnowledgeService) -> float:
    reader = getattr(svc.repo, "reader", None)  # None before kbgit/catfile.py existed
    proc = getattr(reader, "_proc", None)
    if proc is None or proc.poll() is not None:
        return 0.0
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / bf.TICKS


def _git_processes(trace: Path) -> list[str]:
    """Return program and command of every process a trace2 event file saw start."""
    names = []
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "start":
            words, argv = [], iter(event["argv"][1:])
            for arg in argv:
                if arg in ("-C", "-c", "--git-dir"):
                    next(argv, None)  # and its value
                elif not arg.startswith("-"):
                    words.append(arg)
            names.append(" ".join([Path(event["argv"][0]).name, *words[:1]]))
        elif event["event"] == "child_start" and "KBGIT_HUB_PASSWORD" in str(event.get("argv")):
            names.append("sh (kbgit's credential helper)")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pushes", type=int, default=10)
    ap.add_argument("--vectors", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kbgit-profile-sync-") as name:
        profile(Path(name), args)


def profile(tmp: Path, args: argparse.Namespace) -> None:
    """Run the pushes and syncs in ``tmp``; print the figures."""
    ctx = bf.setup(tmp, argparse.Namespace(vectors=args.vectors, workers=4))
    svc = KnowledgeService("default", tmp / "standby", embedders=EmbedderPool(threads=1))
    svc.manage_gc = True
    follower = Follower(svc, hub=ctx["hub_url"], interval=600)
    follower.open()
    follower.sync_once()  # the clone: not measured
    spawned: list[str] = []
    popen_init = subprocess.Popen.__init__

    def counting(self, cmd, *a, **kw):  # noqa: ANN001, ANN202 - a probe, not API
        spawned.append(" ".join(str(c) for c in cmd[3:5]) if isinstance(cmd, list) else str(cmd))
        popen_init(self, cmd, *a, **kw)

    subprocess.Popen.__init__ = counting  # type: ignore[method-assign]
    stages, walls, own, kids, reader, hub = collections.defaultdict(list), [], [], [], [], []
    procs: collections.Counter[str] = collections.Counter()
    try:
        for i in range(args.pushes):
            bf.push(ctx["store"], ctx["docs"], f"profile-{i}", ctx["hub"])
            trace = tmp / f"trace-{i}.json"
            os.environ["GIT_TRACE2_EVENT"] = str(trace)
            spawned.clear()
            (o0, k0), r0, h0, w0 = (
                _cpu(),
                _reader_cpu(svc),
                bf.server_cpu(ctx["server"]),
                time.monotonic(),
            )
            result = follower.sync_once()
            walls.append(time.monotonic() - w0)
            (o1, k1), r1, h1 = _cpu(), _reader_cpu(svc), bf.server_cpu(ctx["server"])
            del os.environ["GIT_TRACE2_EVENT"]
            assert result.status == "updated", result
            own.append(o1 - o0), kids.append(k1 - k0), reader.append(r1 - r0), hub.append(h1 - h0)
            for k, v in result.stages.items():
                stages[k].append(v)
            procs.update(_git_processes(trace))
            procs["(python spawns)"] += len(spawned)
    finally:
        subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]
        if hasattr(svc.repo, "close"):  # its git cat-file (kbgit/catfile.py)
            svc.repo.close()
        ctx["server"].stop()
    n, med = args.pushes, statistics.median
    print(f"load average: {os.getloadavg()}")
    print(
        f"per sync (median of {n}): wall {med(walls):.3f} s; CPU: server process {med(own):.3f} s, "
        f"git children {med(kids):.3f} s, cat-file reader {med(reader):.4f} s; "
        f"hub HTTP {med(hub):.3f} s"
    )
    print("stages (median s): " + ", ".join(f"{k} {med(v):.4f}" for k, v in stages.items()))
    print("processes per sync:")
    for name, count in procs.most_common():
        print(f"  {count / n:5.1f}  {name}")


if __name__ == "__main__":
    main()

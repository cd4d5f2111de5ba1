"""Failover under load: real nginx before a real primary and standby, kill -9 and SIGSTOP.

Side by side in one run, on the same processes: the shipped deploy/nginx/kbgit.conf
against the same file with nginx's default timeouts and retry rules (connect/read 60 s,
proxy_next_upstream "error timeout", no non_idempotent). For each fault, 4 client threads
send GET and POST /query through nginx (127.0.0.1 only, bounded in time and count):

- kill -9: the primary is killed 3 s in and restarted 1 s later;
- SIGSTOP: the primary is frozen 3 s in for 5 s, then SIGCONT.

Printed per run: requests, failed, p50/p99 before the fault, p99/max of the requests in
flight at the fault or started within 3 s of it, the longest gap with no answer at all,
time to full service (from the fault to the end of the last failed or slow request, slow
= over 10x the p99 before), failback (from restart-ready or SIGCONT to the first answer
by the primary; nginx probes a failed primary again after fail_timeout = 10 s). Stores use the fake:64 embedder (queries cost ~1 ms instead of
~20 ms with the real model): the figures are about nginx and the processes, not the model.

Usage: python bench/bench_failover.py [--quick] [--seconds 24]     (~2.5 min; --quick ~2 min)
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from kbgit import KnowledgeStore, StoreConfig, create_hub  # noqa: E402
from kbgit.serving.nginx import render_site, shipped_site, standalone_conf, write_standalone  # noqa: E402
from tests.integration.procs import (  # noqa: E402
    KbgitProc,
    Load,
    NginxProc,
    Sample,
    free_port,
    nginx_binary,
    percentile,
)

DOCS = {
    "keys.md": "Rotate API keys every ninety days. Revoke the old key after the overlap.",
    "backup.txt": "Backups run nightly. Restore drills happen each quarter on a scratch host.",
    "vpn.md": "If the VPN handshake fails, check the WireGuard endpoint and the MTU.",
    "oncall.txt": "On-call shifts last one week. Swap shifts in the pager schedule.",
}


def default_timeouts(site: str) -> str:
    """Return the site config with nginx's default timeouts and retry rules."""
    site = re.sub(r"^\s*proxy_(connect|send|read)_timeout .*\n", "", site, flags=re.M)
    site = re.sub(r"^\s*proxy_next_upstream(_timeout)? .*\n", "", site, flags=re.M)
    return site


def ms(x: float) -> str:
    """Format seconds as milliseconds."""
    return f"{x * 1000:.0f}"


def summarize(samples: list[Sample], fault: float, back: float, primary: str) -> dict:
    """Figures of one run around the fault at ``fault`` (monotonic)."""
    before = [s.seconds for s in samples if s.start + s.seconds < fault and s.ok]
    # around: every request in flight at the fault or started within 3 s of it
    around = [s.seconds for s in samples if s.start + s.seconds >= fault and s.start < fault + 3]
    slow = 10 * max(percentile(before, 99), 0.005)
    bad = [s for s in samples if s.start + s.seconds >= fault and (not s.ok or s.seconds > slow)]
    full = max((s.start + s.seconds for s in bad), default=fault) - fault
    ends = sorted(s.start + s.seconds for s in samples if s.ok)
    gap = max((b - a for a, b in zip(ends, ends[1:], strict=False)), default=0.0)
    first = next((s for s in samples if s.start >= back and s.upstream == primary), None)
    return {
        "requests": len(samples),
        "failed": sum(not s.ok for s in samples),
        "p50_before": ms(percentile(before, 50)),
        "p99_before": ms(percentile(before, 99)),
        "p99_around": ms(percentile(around, 99)),
        "max_around": ms(max(around, default=0)),
        "max_gap_ms": ms(gap),
        "full_service_s": f"{full:.2f}",
        "failback_s": f"{first.start - back:.2f}" if first else "never",
    }


class Bench:
    """One hub, primary and standby; nginx restarted per config."""

    def __init__(self, tmp: Path, seconds: float) -> None:
        self.tmp, self.seconds = tmp, seconds
        hub = create_hub(tmp / "hub.git")
        self.store = KnowledgeStore.init(
            tmp / "kb", hub=str(hub), config=StoreConfig(model="fake:64", chunk_size=40)
        )
        docs = tmp / "docs"
        docs.mkdir()
        for name, text in DOCS.items():
            (docs / name).write_text(text)
        self.store.ingest(docs)
        self.standby = KbgitProc(["standby", str(hub), str(tmp / "replica")], tmp / "standby.log")
        self.primary = self._primary(None)
        self.standby.wait_ready()
        self.primary.wait_ready()

    def _primary(self, port: int | None) -> KbgitProc:
        return KbgitProc(["serve", str(self.store.root)], self.tmp / "primary.log", port)

    def nginx(self, name: str, defaults: bool) -> NginxProc:
        """Start nginx with the shipped config (or its default-timeouts variant)."""
        prefix, port = self.tmp / f"nginx-{name}", free_port()
        addrs = {
            "primary": f"127.0.0.1:{self.primary.port}",
            "standby": f"127.0.0.1:{self.standby.port}",
            "listen": f"127.0.0.1:{port}",
        }
        conf = write_standalone(prefix, **addrs)
        if defaults:
            site = default_timeouts(render_site(shipped_site(), **addrs))
            conf.write_text(standalone_conf(prefix, site))
        return NginxProc(nginx_binary() or "nginx", prefix, "", None, port, conf)

    def run(self, url: str, fault: str) -> dict:
        """Load through ``url``, inject the fault 3 s in, return the figures."""
        load = Load(url, threads=4, seconds=self.seconds).start()
        time.sleep(3)
        at = time.monotonic()
        if fault == "kill -9":
            self.primary.signal(signal.SIGKILL)
            self.primary.proc.wait(5)
            time.sleep(1)
            self.primary = self._primary(self.primary.port)
            self.primary.wait_ready()
        else:
            self.primary.signal(signal.SIGSTOP)
            time.sleep(5)
            self.primary.signal(signal.SIGCONT)
        back = time.monotonic()
        samples = load.join()
        return summarize(samples, at, back, f"127.0.0.1:{self.primary.port}")

    def settle(self) -> None:
        """Let nginx forget the primary's failure (fail_timeout) between runs."""
        time.sleep(11)

    def stop(self) -> None:
        """Stop the kbgit processes."""
        self.primary.stop()
        self.standby.stop()


def main() -> None:
    """Run both faults under both configs and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="18 s of load per run")
    ap.add_argument("--seconds", type=float, default=24.0, help="load per run [24]")
    args = ap.parse_args()
    if nginx_binary() is None:
        sys.exit("nginx is not installed: apt-get install nginx")
    seconds = 18.0 if args.quick else args.seconds
    rows = []
    with tempfile.TemporaryDirectory(prefix="kbgit-failover-") as tmp:
        bench = Bench(Path(tmp), seconds)
        try:
            for name, defaults in (("shipped", False), ("defaults", True)):
                nginx = bench.nginx(name, defaults)
                try:
                    for fault in ("kill -9", "SIGSTOP"):
                        rows.append({"config": name, "fault": fault, **bench.run(nginx.url, fault)})
                        bench.settle()
                finally:
                    nginx.stop()
        finally:
            bench.stop()
    cols = list(rows[0])
    print(f"\nfailover under load: 4 threads GET+POST, {seconds:.0f} s per run, fake:64 stores")
    print("latencies in ms; full_service_s: fault -> last failed or >10x-slow request")
    print("  ".join(f"{c:>14}" for c in cols))
    for row in rows:
        print("  ".join(f"{row[c]!s:>14}" for c in cols))


if __name__ == "__main__":
    main()

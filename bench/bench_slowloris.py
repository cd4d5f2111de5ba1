"""Slow clients against a kbgit server: /health latency with and without 200 tricklers.

Side by side in one run: the same kbgit app served by stock waitress (as before issue 15:
``create_server`` with its defaults, connection_limit 100, an idle timeout that restarts
on every byte) and by kbgit's ``server.run.Server`` (server/limits.py: request deadlines,
eviction at the connection limit, a per-client cap). For each, N slow clients connect to
127.0.0.1 and send one header line every ``--every`` seconds while /health is asked
``--probes`` times (client timeout ``--timeout`` s). Prints median/max latency and how
many probes got no answer, and the load average.

    python bench/bench_slowloris.py [--slow 200] [--every 2] [--probes 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402
from waitress import create_server  # noqa: E402

from kbgit import KnowledgeStore, StoreConfig, create_hub  # noqa: E402
from kbgit.config import ServeConfig, StoreSpec  # noqa: E402
from server.run import Server  # noqa: E402


def _store(tmp: Path) -> Path:
    docs = tmp / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"d{i}.md").write_text(f"document {i} about keys and backups\n")
    hub = create_hub(tmp / "hub.git")
    cfg = StoreConfig(model="fake:64", chunk_size=40, chunk_overlap=5)
    store = KnowledgeStore.init(tmp / "kb", hub=str(hub), config=cfg)
    store.ingest(docs)
    return store.root


def _trickle(port: int, count: int, every: float, stop: threading.Event) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: kb\r\n")
            socks.append(s)
        except OSError:
            pass  # refused or not accepted: counts as a slow client that did not get in

    def run() -> None:
        while not stop.wait(every):
            for s in socks:
                with contextlib.suppress(OSError):  # closed by the server
                    s.sendall(b"X-Slow: 1\r\n")

    threading.Thread(target=run, daemon=True).start()
    return socks


def _probe(url: str, n: int, timeout: float) -> tuple[list[float], int]:
    times, failed = [], 0
    for _ in range(n):
        began = time.perf_counter()
        try:
            requests.get(f"{url}/health", timeout=timeout).raise_for_status()
            times.append(time.perf_counter() - began)
        except requests.RequestException:
            failed += 1
        time.sleep(0.2)
    return times, failed


def _measure(name: str, url: str, port: int, args: argparse.Namespace) -> None:
    for slow in (0, args.slow):
        stop = threading.Event()
        socks = _trickle(port, slow, args.every, stop) if slow else []
        time.sleep(args.every + 0.5)
        times, failed = _probe(url, args.probes, args.timeout)
        stop.set()
        for s in socks:
            s.close()
        med = f"{statistics.median(times) * 1000:8.1f}" if times else "       -"
        worst = f"{max(times) * 1000:8.1f}" if times else "       -"
        print(f"{name:<16} {slow:>5} {med} {worst} {failed:>3}/{args.probes}")
        time.sleep(1.0)


def main() -> None:
    """Run both servers and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slow", type=int, default=200, help="slow clients (default 200)")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between header lines")
    ap.add_argument("--probes", type=int, default=10, help="/health requests per row")
    ap.add_argument("--timeout", type=float, default=10.0, help="client timeout, seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = _store(Path(tmp))
        cfg = ServeConfig(bind="127.0.0.1:0", stores=(StoreSpec("default", str(root)),))
        ours = Server(cfg)
        ours.start()
        ours.preloaded.wait(60)
        stock = create_server(ours.app, host="127.0.0.1", port=0, threads=cfg.threads)
        threading.Thread(target=stock.run, daemon=True).start()
        stock_url = f"http://127.0.0.1:{stock.effective_port}"
        print(f"{'server':<16} {'slow':>5} {'p50 ms':>8} {'max ms':>8} {'no answer':>9}")
        _measure("stock waitress", stock_url, int(stock.effective_port), args)
        _measure("kbgit limits", ours.url, ours.port, args)
        ours.stop()
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()

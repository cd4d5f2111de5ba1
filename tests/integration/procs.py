"""Real processes for HA tests and the failover bench: kbgit servers, nginx, a query load.

Everything listens on and talks to 127.0.0.1 only; every loop is bounded in count and
time; every process started here is stopped by its owner (fixtures call ``stop``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from kbgit.serving.nginx import write_standalone

TOKEN = "integration-token"
QUERIES = ("rotate api keys", "restore drills", "vpn handshake", "on-call shifts")


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], object], timeout: float, step: float = 0.1, what: str = "") -> None:
    """Poll ``pred`` until truthy; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or pred}")
        time.sleep(step)


class KbgitProc:
    """``python -m kbgit ARGS --bind 127.0.0.1:PORT`` with its log in a file.

    The one process helper of the integration tests and the benchmarks (bench/ imports it).
    """

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        port: int | None = None,
        *,
        token: str = TOKEN,
        log_level: str = "info",
    ) -> None:
        self.args, self.log, self.token = list(args), log, token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "KBGIT_TOKEN": token, "OMP_WAIT_POLICY": "PASSIVE"}
        cmd = [sys.executable, "-m", "kbgit", "--log-level", log_level, *self.args]
        self.started = time.monotonic()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [*cmd, "--bind", f"127.0.0.1:{self.port}"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.proc.pid

    def ready(self) -> bool:
        """Tell whether /ready answers 200 (fail if the process died)."""
        assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
        try:
            return requests.get(self.url + "/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for /ready; return the seconds since the process was started."""
        wait_for(self.ready, timeout, step=0.02, what=f"{self.args[0]} ready on {self.port}")
        return time.monotonic() - self.started

    def health(self) -> dict:
        """Return the parsed /health answer."""
        return requests.get(self.url + "/health", timeout=5).json()

    def head(self) -> str | None:
        """Return the commit the server answers from."""
        return self.health()["head"]["commit"]

    def query(self, text: str, k: int = 5) -> requests.Response:
        """POST /query."""
        return requests.post(self.url + "/query", json={"query": text, "k": k}, timeout=10)

    def sync(self, wait: bool = True, timeout: float = 60) -> requests.Response:
        """POST /admin/sync (with ``?wait=1``: the answer carries each store's result)."""
        return requests.post(
            self.url + "/admin/sync" + ("?wait=1" if wait else ""),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )

    def signal(self, sig: int) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT ...)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        """Stop the process (SIGCONT first, then SIGTERM, then SIGKILL); return its code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def nginx_binary() -> str | None:
    """Return the nginx executable, or None if it is not installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


class NginxProc:
    """nginx running the shipped deploy/nginx config, everything under ``prefix``."""

    def __init__(
        self,
        binary: str,
        prefix: Path,
        primary: str,
        standby: str | None,
        port: int | None = None,
        conf: Path | None = None,
    ) -> None:
        self.prefix = prefix
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # ``conf``: a config already written (it must listen on ``port``)
        self.conf = conf or write_standalone(
            prefix, primary=primary, standby=standby, listen=f"127.0.0.1:{self.port}"
        )
        base = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(self.conf)]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        with open(prefix / "nginx.out", "ab") as fh:
            self.proc = subprocess.Popen(
                [*base, "-g", "daemon off;"], stdout=fh, stderr=subprocess.STDOUT
            )
        wait_for(self._listening, 10, what="nginx listening")

    def _listening(self) -> bool:
        assert self.proc.poll() is None, (self.prefix / "error.log").read_text()[-3000:]
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop nginx (fast shutdown) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def served_by(resp: requests.Response) -> str:
    """Return the upstream that answered (the last one nginx tried)."""
    return resp.headers.get("X-Kbgit-Upstream", "").split(",")[-1].strip()


@dataclasses.dataclass(frozen=True)
class Sample:
    """One request of the load: when it started (monotonic), how long, what came back."""

    start: float
    seconds: float
    method: str
    status: int
    upstream: str = ""
    commit: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Tell whether the request succeeded (200 with a commit)."""
        return self.status == 200 and bool(self.commit)


class Load:
    """Concurrent GET and POST /query traffic to one URL, bounded in count and time.

    >>> load = Load("http://127.0.0.1:8080", threads=4, seconds=20).start()  # doctest: +SKIP
    >>> samples = load.join()                                                # doctest: +SKIP
    """

    def __init__(
        self, url: str, *, threads: int = 4, seconds: float = 20.0, max_requests: int = 50_000
    ) -> None:
        self.url, self.seconds, self.max_requests = url, seconds, max_requests
        self.samples: list[Sample] = []
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.started = 0.0

    def start(self) -> Load:
        """Start the client threads."""
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Ask the threads to finish early."""
        self._stop.set()

    def join(self) -> list[Sample]:
        """Wait for the threads; return the samples sorted by start time."""
        for t in self._threads:
            t.join(self.seconds + 60)
        return sorted(self.samples, key=lambda s: s.start)

    def _one(self, session: requests.Session, n: int) -> Sample:
        text = QUERIES[n % len(QUERIES)]
        method = "POST" if n % 2 else "GET"
        began = time.monotonic()
        try:
            if method == "POST":
                r = session.post(self.url + "/query", json={"query": text, "k": 3}, timeout=10)
            else:
                r = session.get(self.url + "/query", params={"q": text, "k": 3}, timeout=10)
            commit = r.json().get("commit", "") if r.status_code == 200 else ""
            return Sample(
                began, time.monotonic() - began, method, r.status_code, served_by(r), commit
            )
        except (requests.RequestException, ValueError) as exc:
            return Sample(began, time.monotonic() - began, method, 0, error=repr(exc)[:200])

    def _run(self, index: int) -> None:
        session = requests.Session()
        deadline = self.started + self.seconds
        n = index
        while not self._stop.is_set() and time.monotonic() < deadline:
            sample = self._one(session, n)
            with self._lock:
                if len(self.samples) >= self.max_requests:
                    return
                self.samples.append(sample)
            n += 1


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) of values, nearest rank; 0.0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def window(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    """Return the samples that started in [start, end)."""
    return [s for s in samples if start <= s.start < end]

"""A standby on another "host", cut off from the hub by a network partition, then reconnected.

Two network namespaces joined by a veth pair stand for two machines: the hub's (``git
daemon`` serving the hub on 10.231.0.1) and the standby's (``kbgit standby`` fetching from
git://10.231.0.1, serving on the loopback of its own namespace). The addresses exist only
inside those namespaces; the test creates them and deletes them (with the veth pair) at
the end. Taking the standby's end of the link down partitions it: /health must show the
lag growing while it keeps serving the last verified commit, and once the link is back up
it must catch up. Needs root (CAP_NET_ADMIN) and iproute2; under CI=true their absence
fails the test, elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import KnowledgeStore

from ..conftest import write_docs
from ..serve_helpers import wait_until

pytestmark = pytest.mark.integration

HUB_IP, STANDBY_IP = "10.231.0.1", "10.231.0.2"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class Hosts:
    """Two network namespaces (hub, standby) joined by a veth pair; removed by :meth:`close`."""

    def __init__(self) -> None:
        tag = f"kbgit{os.getpid()}"
        self.hub, self.standby = f"{tag}h", f"{tag}s"
        self.hub_if, self.standby_if = f"{tag}a", f"{tag}b"  # <= 15 characters
        self.procs: list[subprocess.Popen] = []
        steps = [
            ("netns", "add", self.hub),
            ("netns", "add", self.standby),
            ("link", "add", self.hub_if, "netns", self.hub, "type", "veth", "peer", "name",
             self.standby_if, "netns", self.standby),
            ("-n", self.hub, "addr", "add", f"{HUB_IP}/30", "dev", self.hub_if),
            ("-n", self.standby, "addr", "add", f"{STANDBY_IP}/30", "dev", self.standby_if),
            ("-n", self.hub, "link", "set", self.hub_if, "up"),
            ("-n", self.standby, "link", "set", self.standby_if, "up"),
            ("-n", self.hub, "link", "set", "lo", "up"),
            ("-n", self.standby, "link", "set", "lo", "up"),
        ]  # fmt: skip
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                self.close()
                raise OSError(f"ip {' '.join(step)}: {done.stderr.strip()}")

    def spawn(self, ns: str, cmd: list[str], log: Path, **kw: object) -> subprocess.Popen:
        """Start ``cmd`` inside namespace ``ns`` (``ip netns exec`` execs it: same pid)."""
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd], stdout=fh, stderr=subprocess.STDOUT, **kw
            )
        self.procs.append(proc)
        return proc

    def link(self, up: bool) -> None:
        """Bring the standby's end of the link up or down."""
        state = "up" if up else "down"
        done = _ip("-n", self.standby, "link", "set", self.standby_if, state)
        assert done.returncode == 0, done.stderr

    def health(self, port: int) -> dict:
        """Read the standby's /health from inside its namespace."""
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
            "except urllib.error.HTTPError as e:\n    r = e\n"
            "sys.stdout.write(r.read().decode())\n"
        )
        url = f"http://127.0.0.1:{port}/health"
        out = subprocess.run(
            ["ip", "netns", "exec", self.standby, sys.executable, "-c", code, url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {}

    def close(self) -> None:
        """Stop what runs inside, then delete both namespaces (the veth pair goes with them)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for ns in (self.hub, self.standby):
            _ip("netns", "del", ns)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    missing = shutil.which("ip") is None
    try:
        made = None if missing else Hosts()
    except OSError as exc:
        made, why = None, str(exc)
    else:
        why = "iproute2 (ip) is not installed"
    if made is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"network namespaces unavailable: {why}")
        pytest.skip(f"network namespaces unavailable (needs root and iproute2): {why}")
    yield made
    made.close()
    assert made.hub not in _ip("netns", "list").stdout  # torn down


def test_a_partitioned_standby_reports_growing_lag_and_converges_after(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, hosts: Hosts
) -> None:
    first = store.ingest(docs).commit
    base = hub.parent
    hosts.spawn(
        hosts.hub,
        ["git", "daemon", "--reuseaddr", f"--listen={HUB_IP}", "--port=9418",
         f"--base-path={base}", "--export-all", str(base)],
        tmp_path / "daemon.log",
    )  # fmt: skip
    url = f"git://{HUB_IP}:9418/{hub.name}"
    wait_until(
        lambda: subprocess.run(
            ["ip", "netns", "exec", hosts.standby, "git", "ls-remote", url], capture_output=True
        ).returncode == 0,
        timeout=20,
    )  # fmt: skip
    port = 8080
    env = {**os.environ, "KBGIT_TOKEN": "t", "KBGIT_BACKOFF_MAX": "1"}
    cmd = [sys.executable, "-m", "kbgit", "standby", url, str(tmp_path / "replica"),
           "--interval", "0.5", "--bind", f"127.0.0.1:{port}"]  # fmt: skip
    hosts.spawn(hosts.standby, cmd, tmp_path / "standby.log", env=env)
    wait_until(lambda: hosts.health(port).get("head", {}).get("commit") == first, timeout=60)

    hosts.link(up=False)  # the partition
    write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
    second = store.ingest(docs).commit  # the primary and the hub are on the other side
    cut = wait_until(lambda: _failing(hosts.health(port)), timeout=30)
    time.sleep(1.5)
    later = hosts.health(port)
    assert later["head"]["commit"] == first and later["ready"]  # still serves what it verified
    assert later["sync"]["last_result"] == "error" and later["sync"]["failures_in_row"] >= 2
    assert later["lag"]["seconds"] > cut["lag"]["seconds"] + 1.0  # the lag grows

    hosts.link(up=True)
    healed = wait_until(
        lambda: (h := hosts.health(port)).get("head", {}).get("commit") == second and h, timeout=30
    )
    assert healed["sync"]["last_result"] in ("ok", "updated") and healed["lag"]["seconds"] == 0


def _failing(health: dict) -> dict | None:
    """Return the health body once the standby's fetches fail, else None."""
    sync = health.get("sync") or {}
    return health if sync.get("last_result") == "error" and health["lag"]["seconds"] > 0 else None

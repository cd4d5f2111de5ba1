"""Real nginx (the shipped deploy/nginx config) in front of a real primary and standby.

nginx runs as its own process (prefix, pid, logs and temp files under tmp; listening on
127.0.0.1 only). Under load, kill -9 and SIGSTOP of the primary cost no request; the
primary takes the traffic back after a restart; the standby answers while the hub is down;
a promoted standby ingests and answers through nginx; the old primary rejoins as a standby.
The tests run in file order on one topology (each leaves it as it found it, the last one
rebuilds it). Skipped only when nginx is absent and $CI is unset: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from kbgit import KnowledgeStore, create_hub
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.failover import ORPHAN_PREFIX

from ..conftest import FAKE_CONFIG, write_docs
from .procs import TOKEN, KbgitProc, Load, NginxProc, nginx_binary, percentile, served_by, wait_for

pytestmark = pytest.mark.integration

NGINX = nginx_binary()
#: proxy_read_timeout of deploy/nginx/kbgit.conf
READ_TIMEOUT = 2.0
#: fail_timeout of the primary in deploy/nginx/kbgit.conf
FAIL_TIMEOUT = 10.0

DOCS = {
    "keys.md": "# Rotating keys\n\nRotate API keys every ninety days. Revoke the old key.\n",
    "backup.txt": "Backups run nightly. Restore drills happen each quarter.\n",
    "guide/vpn.md": "If the VPN handshake fails, check the WireGuard endpoint and the MTU.\n",
    "guide/oncall.txt": "On-call shifts last one week. Swap shifts in the pager schedule.\n",
}


@dataclass
class Topology:
    """Hub, primary store and server, standby server, nginx; ports stay fixed."""

    tmp: Path
    hub: Path
    store: KnowledgeStore
    docs: Path
    primary: KbgitProc
    standby: KbgitProc
    nginx: NginxProc

    def start_primary(self) -> KbgitProc:
        """(Re)start the primary server on its port."""
        self.primary = KbgitProc(
            ["serve", str(self.store.root), "--interval", "1"],
            self.tmp / "primary.log",
            port=self.primary.port if self.primary else None,
        )
        return self.primary

    def get(self, text: str = "rotate api keys") -> requests.Response:
        """Query through nginx (GET)."""
        return requests.get(self.nginx.url + "/query", params={"q": text, "k": 1}, timeout=10)


@pytest.fixture(scope="module")
def topo(tmp_path_factory) -> Iterator[Topology]:
    """Start everything once for the module; stop every process at the end."""
    assert NGINX is not None, "nginx is not installed: bash scripts/system-deps.sh installs it"
    tmp = tmp_path_factory.mktemp("ha")
    hub = create_hub(tmp / "hub.git")
    store = KnowledgeStore.init(tmp / "kb", hub=str(hub), config=FAKE_CONFIG)
    docs = write_docs(tmp / "docs", DOCS)
    store.ingest(docs)
    t = Topology(tmp, hub, store, docs, None, None, None)  # type: ignore[arg-type]
    started: list = []
    try:
        t.standby = KbgitProc(
            ["standby", str(hub), str(tmp / "replica"), "--interval", "2"], tmp / "standby.log"
        )
        started.append(t.standby)
        started.append(t.start_primary())
        t.standby.wait_ready()
        t.primary.wait_ready()
        hub_hooks.install(hub, notify=[t.standby.url], token=TOKEN)
        (tmp / "nginx").mkdir()
        t.nginx = NginxProc(
            NGINX, tmp / "nginx", f"127.0.0.1:{t.primary.port}", f"127.0.0.1:{t.standby.port}"
        )
        started.append(t.nginx)
        yield t
    finally:
        for p in [*started, t.primary, t.standby]:
            if p is not None:
                p.stop()


def _report(name: str, **figures: object) -> None:
    line = f"[nginx-failover] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    with open(Path(os.environ.get("KBGIT_HA_REPORT", "/dev/null")), "a") as fh:
        fh.write(line + "\n")


def test_nginx_serves_queries_and_hides_admin(topo: Topology) -> None:
    r = topo.get()
    assert r.status_code == 200 and served_by(r) == f"127.0.0.1:{topo.primary.port}"
    assert r.json()["hits"][0]["source"] == "keys.md"
    post = requests.post(topo.nginx.url + "/query", json={"query": "vpn", "k": 1}, timeout=10)
    assert post.status_code == 200 and post.json()["commit"] == topo.store.repo.head()
    assert requests.get(topo.nginx.url + "/ready", timeout=5).status_code == 200
    assert requests.get(topo.nginx.url + "/health", timeout=5).json()["status"] == "ok"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/admin/sync", "/kb/default/admin/reload"):
        assert requests.post(topo.nginx.url + path, headers=auth, timeout=5).status_code == 403
    assert requests.get(topo.nginx.url + "/metrics", timeout=5).status_code == 403
    assert requests.get(topo.nginx.url + "/anything", timeout=5).status_code == 404


def _fault_under_load(topo: Topology, fault, seconds: float, at: float) -> tuple[list, float]:
    """Run the load, call fault() ``at`` seconds in; return samples and the fault time."""
    load = Load(topo.nginx.url, threads=4, seconds=seconds).start()
    time.sleep(at)
    fault_at = time.monotonic()
    try:
        fault()
    finally:
        samples = load.join()
    return samples, fault_at


def _no_failures(samples: list) -> None:
    failed = [s for s in samples if not s.ok]
    assert not failed, f"{len(failed)} of {len(samples)} failed: {failed[:3]}"
    assert len(samples) > 100 and {s.method for s in samples} == {"GET", "POST"}


def test_kill_9_of_the_primary_costs_no_request_and_traffic_returns(topo: Topology) -> None:
    primary_addr = f"127.0.0.1:{topo.primary.port}"
    standby_addr = f"127.0.0.1:{topo.standby.port}"
    marks: dict[str, float] = {}

    def kill_and_restart() -> None:
        topo.primary.signal(signal.SIGKILL)
        topo.primary.proc.wait(5)
        time.sleep(1.0)
        topo.start_primary().wait_ready()
        marks["ready"] = time.monotonic()

    samples, killed = _fault_under_load(topo, kill_and_restart, seconds=24, at=3)
    _no_failures(samples)
    after = [s for s in samples if s.start >= killed]
    first_standby = next(s for s in after if s.upstream == standby_addr)
    back = next(
        (s for s in samples if s.start >= marks["ready"] and s.upstream == primary_addr), None
    )
    assert back is not None, "traffic never returned to the restarted primary"
    assert samples[-1].upstream == primary_addr
    around = [s.seconds for s in samples if killed - 1 <= s.start < killed + 1]
    _report(
        "kill -9",
        requests=len(samples),
        failed=0,
        failover_s=round(first_standby.start + first_standby.seconds - killed, 3),
        p99_around_ms=round(percentile(around, 99) * 1000, 1),
        max_ms=round(max(s.seconds for s in samples) * 1000, 1),
        failback_after_ready_s=round(back.start - marks["ready"], 2),
        failback_after_kill_s=round(back.start - killed, 2),
    )


def test_sigstop_of_the_primary_costs_no_request_and_stays_bounded(topo: Topology) -> None:
    primary_addr = f"127.0.0.1:{topo.primary.port}"
    marks: dict[str, float] = {}

    def stop_then_continue() -> None:
        topo.primary.signal(signal.SIGSTOP)
        time.sleep(5)
        topo.primary.signal(signal.SIGCONT)
        marks["cont"] = time.monotonic()

    samples, stopped = _fault_under_load(topo, stop_then_continue, seconds=20, at=3)
    _no_failures(samples)
    worst = max(s.seconds for s in samples)
    assert worst <= READ_TIMEOUT + 1.0, f"max latency {worst:.2f}s"
    back = next(
        (s for s in samples if s.start >= marks["cont"] and s.upstream == primary_addr), None
    )
    assert back is not None and samples[-1].upstream == primary_addr
    around = [s.seconds for s in samples if stopped <= s.start < stopped + READ_TIMEOUT + 1]
    _report(
        "SIGSTOP",
        requests=len(samples),
        failed=0,
        slow_over_1s=sum(s.seconds > 1 for s in samples),
        p99_around_ms=round(percentile(around, 99) * 1000, 1),
        max_ms=round(worst * 1000, 1),
        failback_after_sigcont_s=round(back.start - marks["cont"], 2),
    )


def test_the_standby_keeps_answering_while_the_hub_is_down(topo: Topology) -> None:
    away = topo.hub.with_name("hub-away.git")
    topo.hub.rename(away)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        sync = requests.post(topo.standby.url + "/admin/sync?wait=1", headers=auth, timeout=30)
        assert sync.json()["results"]["default"]["status"] == "error"
        for _ in range(20):
            r = requests.get(topo.standby.url + "/query", params={"q": "vpn", "k": 1}, timeout=5)
            assert r.status_code == 200 and r.json()["hits"][0]["source"] == "guide/vpn.md"
        assert topo.get("vpn").status_code == 200
    finally:
        away.rename(topo.hub)


def _kbgit(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "kbgit", *args], capture_output=True, text=True, timeout=120
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_promoted_standby_writes_and_the_old_primary_rejoins(topo: Topology) -> None:
    standby_addr = f"127.0.0.1:{topo.standby.port}"
    primary_addr = f"127.0.0.1:{topo.primary.port}"
    # the primary commits once more while the hub is unreachable, then dies for good
    write_docs(topo.docs, {"unpushed.md": "Written while the hub was unreachable."})
    unpushed = topo.store.ingest(topo.docs, push=False).commit
    topo.primary.signal(signal.SIGKILL)
    topo.primary.proc.wait(5)
    # promote: stop the standby, promote its replica, serve it as the primary
    replica = topo.tmp / "replica"
    assert topo.standby.stop() == 0
    out = _kbgit("promote", str(replica))
    assert "kbgit serve" in out.stdout
    topo.standby = KbgitProc(
        ["serve", str(replica), "--interval", "1"], topo.tmp / "new-primary.log", topo.standby.port
    )
    topo.standby.wait_ready()
    new_docs = Path(shutil.copytree(topo.docs, topo.tmp / "new-docs"))
    (new_docs / "unpushed.md").unlink()
    write_docs(new_docs, {"tides.md": "Tides follow the moon twice a day."})
    _kbgit("ingest", str(replica), str(new_docs))
    wait_for(lambda: topo.get("moon tides").json()["hits"][0]["source"] == "tides.md", 15)
    assert served_by(topo.get("moon tides")) == standby_addr
    # the old primary refuses to write over the new history and names the way back
    refused = _kbgit("ingest", str(topo.store.root), str(topo.docs), ok=False)
    assert refused.returncode == 1 and f"kbgit rejoin {topo.store.root}" in refused.stderr
    out = _kbgit("rejoin", str(topo.store.root))
    assert ORPHAN_PREFIX in out.stdout
    branch = next(w for w in out.stdout.split() if w.startswith(ORPHAN_PREFIX))
    assert topo.store.repo.rev_parse(branch) == unpushed
    topo.primary = KbgitProc(
        ["standby", str(topo.hub), str(topo.store.root), "--interval", "2"],
        topo.tmp / "rejoined.log",
        topo.primary.port,
    )
    topo.primary.wait_ready()

    def answered_by_rejoined() -> bool:
        r = topo.get("moon tides")
        return served_by(r) == primary_addr and r.json()["hits"][0]["source"] == "tides.md"

    began = time.monotonic()
    wait_for(answered_by_rejoined, FAIL_TIMEOUT + 10, step=0.5, what="rejoined node answers")
    _report("promote+rejoin", rejoined_serving_after_ready_s=round(time.monotonic() - began, 2))

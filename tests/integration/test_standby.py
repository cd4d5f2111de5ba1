"""Hub + primary + standby as real processes on 127.0.0.1 (kbgit serve / kbgit standby)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import requests

from kbgit import KnowledgeStore
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks

from ..conftest import write_docs
from ..serve_helpers import chunk_ids, corrupt_commit, wait_until
from .procs import TOKEN
from .procs import KbgitProc as Proc

pytestmark = pytest.mark.integration


@pytest.fixture
def topology(tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, procs):
    """Primary store with documents, hub with kbgit hooks, standby and primary servers."""
    store.ingest(docs)
    standby = Proc(
        ["standby", str(hub), str(tmp_path / "replica"), "--interval", "30"],
        tmp_path / "standby.log",
    )
    primary = Proc(["serve", str(store.root), "--interval", "1"], tmp_path / "primary.log")
    procs.extend([standby, primary])
    standby.wait_ready()
    primary.wait_ready()
    hub_hooks.install(hub, notify=[standby.url], token=TOKEN)
    return standby, primary, store, docs, hub


def test_new_document_becomes_answerable_on_the_standby(topology) -> None:
    standby, primary, store, docs, _hub = topology
    write_docs(docs, {"glacier.md": "Glaciers carve U-shaped valleys over millennia."})
    commit = store.ingest(docs).commit
    # interval is 30 s: the post-receive hook is what wakes the standby
    wait_until(lambda: standby.health()["head"]["commit"] == commit, timeout=10)
    body = standby.query("glaciers valleys", k=1).json()
    assert body["commit"] == commit and body["hits"][0]["source"] == "glacier.md"
    wait_until(lambda: primary.health()["head"]["commit"] == commit, timeout=10)
    assert primary.query("glaciers valleys", k=1).json()["hits"][0]["source"] == "glacier.md"


def test_reload_under_concurrent_load_is_atomic(topology) -> None:
    standby, _primary, store, docs, hub = topology
    stop = threading.Event()
    responses: list[tuple[int, dict | None]] = []

    def client() -> None:
        session = requests.Session()
        deadline = time.monotonic() + 90
        for _ in range(5000):  # bounded in count and time; runs until the ingests are done
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = session.post(
                    standby.url + "/query", json={"query": "version page", "k": 5}, timeout=10
                )
                responses.append((r.status_code, r.json()))
            except requests.RequestException as exc:
                responses.append((0, {"error": repr(exc)}))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    commits = []
    try:
        for n in range(5):  # each ingest replaces the page: new chunk ids every commit
            write_docs(docs, {"version.md": f"Version page number {n}: {f'word{n} ' * 30}"})
            commits.append(store.ingest(docs).commit)
            wait_until(lambda c=commits[-1]: standby.health()["head"]["commit"] == c, timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert responses and all(code == 200 for code, _ in responses), [
        r for r in responses if r[0] != 200
    ][:3]
    seen: dict[str, dict[str, str]] = {}
    for _code, body in responses:
        ids = seen.setdefault(body["commit"], chunk_ids(hub, body["commit"]))
        for hit in body["hits"]:
            assert ids.get(hit["chunk_id"]) == hit["source"], (body["commit"], hit)
    assert len(seen) >= 3  # the load really spanned several swaps


def test_corrupt_commit_forced_into_the_hub_is_refused(topology, tmp_path: Path) -> None:
    standby, _primary, store, _docs, hub = topology
    good = store.repo.head()
    bad = corrupt_commit(store)
    # bypass the hooks: the hub fetches the commit itself (receive hooks do not run)
    GitRepo(hub).run("fetch", "-q", str(store.root), "main:main")
    assert GitRepo(hub).rev_parse("main") == bad
    result = standby.sync().json()["results"]["default"]
    assert result["status"] == "refused" and "sha256 mismatch" in result["error"]
    health = standby.health()
    assert health["status"] == "ok" and health["head"]["commit"] == good
    assert health["refused"][0]["commit"] == bad and health["lag"]["commits"] == 1
    assert standby.query("rotate keys").json()["commit"] == good
    metrics = requests.get(standby.url + "/metrics", timeout=5).text
    assert 'kbgit_refused_commits_total{store="default"} 1.0' in metrics


def test_hub_outage_keeps_serving_and_reports_lag(topology, tmp_path: Path) -> None:
    standby, _primary, store, _docs, hub = topology
    away = hub.with_name("hub-away.git")
    hub.rename(away)
    try:
        time.sleep(1.0)
        result = standby.sync().json()["results"]["default"]
        assert result["status"] == "error"
        health = standby.health()
        assert health["status"] == "ok" and health["sync"]["last_result"] == "error"
        assert health["lag"]["seconds"] >= 1.0
        assert standby.query("backups").status_code == 200
        assert (
            'kbgit_sync_failures_total{store="default"} 1.0'
            in requests.get(standby.url + "/metrics", timeout=5).text
        )
    finally:
        away.rename(hub)
    assert standby.sync().json()["results"]["default"]["status"] == "ok"
    assert standby.health()["lag"]["seconds"] == 0


def test_restart_resumes_from_the_clone_while_the_hub_is_down(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, procs
) -> None:
    commit = store.ingest(docs).commit
    first = Proc(["standby", str(hub), str(tmp_path / "replica")], tmp_path / "a.log")
    procs.append(first)
    first.wait_ready()
    assert first.stop() == 0  # SIGTERM: clean exit
    hub.rename(hub.with_name("gone.git"))
    second = Proc(["standby", str(hub), str(tmp_path / "replica")], tmp_path / "b.log")
    procs.append(second)
    second.wait_ready()
    assert second.query("rotate keys").json()["commit"] == commit


def _children(pid: int) -> int:
    """Count ``pid``'s child processes, apart from its one long-lived object reader."""
    count = readers = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                    if b"cat-file" in argv and b"--batch-command" in argv:
                        readers += 1
                    else:
                        count += 1
            except (OSError, IndexError, ValueError):
                continue
    assert readers <= 1, f"{readers} git cat-file readers for one store"
    return count


def _footprint(pid: int) -> tuple[int, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    return rss_kb, len(os.listdir(f"/proc/{pid}/fd")), _children(pid)


def test_no_growth_over_1000_sync_cycles(topology) -> None:
    standby, _primary, store, docs, _hub = topology
    pid = standby.proc.pid
    for n in range(100):  # warm up: allocator, caches, a couple of reloads
        if n % 50 == 0:
            write_docs(docs, {"warm.md": f"warm up page {n}"})
            store.ingest(docs)
        assert standby.sync().status_code == 200
    before = _footprint(pid)
    deadline = time.monotonic() + 240
    for n in range(1000):
        if n % 200 == 0:
            write_docs(docs, {"cycle.md": f"cycle page {n} about cycling"})
            store.ingest(docs)
        assert standby.sync().json()["results"]["default"]["status"] in ("ok", "updated")
        assert time.monotonic() < deadline, f"only {n} cycles in 240 s"
    after = _footprint(pid)
    assert after[2] == 0, "git child processes left behind"
    assert after[1] <= before[1] + 2, f"open fds grew: {before[1]} -> {after[1]}"
    assert after[0] - before[0] < 30_000, f"RSS grew {before[0]} -> {after[0]} kB"
    print(
        f"1000 cycles: RSS {before[0]} -> {after[0]} kB, fds {before[1]} -> {after[1]}, "
        f"children {after[2]}"
    )

"""Chained replication: a standby follows another standby's verified replica, not the hub."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.errors import ConfigError
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.follower import OK, UPDATED, Follower
from kbgit.serving.service import KnowledgeService

from .conftest import write_docs
from .serve_helpers import wait_until


def _standby(root: Path, upstream: Path) -> Follower:
    follower = Follower(KnowledgeService(root.name, root), hub=str(upstream))
    follower.open()
    return follower


def test_a_standby_follows_another_standbys_replica(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    first = store.ingest(docs).commit
    tier1 = _standby(tmp_path / "tier1", hub)
    tier2 = _standby(tmp_path / "tier2", tmp_path / "tier1")  # fetches from tier1's clone
    assert tier2.sync_once().status == OK and tier2.service.commit is None  # tier1 has nothing
    assert tier1.sync_once().status == UPDATED
    assert tier2.sync_once().status == UPDATED and tier2.service.commit == first
    write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
    second = store.ingest(docs).commit
    assert tier2.sync_once().status == OK and tier2.service.commit == first  # not before tier1
    tier1.sync_once()
    assert tier2.sync_once().status == UPDATED and tier2.service.commit == second
    # tier2 verified the commit itself and never contacted the hub
    assert GitRepo(tmp_path / "tier2").remote_url("hub") == str((tmp_path / "tier1").resolve())
    assert tier2.service.query("moon tides", k=1).hits[0].source == "tides.md"


def test_a_standby_wakes_the_next_tier_without_waiting_for_it(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    tier1 = _standby(tmp_path / "tier1", hub)
    assert tier1.downstream is not None
    tier1.downstream.timeout = 30.0  # so only the test decides when the next tier answers
    assert tier1.sync_once().status == UPDATED and tier1.downstream.last == []  # none yet
    answer = threading.Event()
    with socket.socket() as next_tier:  # accepts, then answers only when the test says so
        next_tier.bind(("127.0.0.1", 0))
        next_tier.listen(4)
        url = f"http://127.0.0.1:{next_tier.getsockname()[1]}"
        hub_hooks.install_chain(tmp_path / "tier1", notify=[url], token="t2")
        requests_seen: list[bytes] = []
        server = threading.Thread(target=_answer_later, args=(next_tier, answer, requests_seen))
        server.start()
        write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
        second = store.ingest(docs).commit
        result = tier1.sync_once()  # returns while the next tier has not answered yet
        assert result.status == UPDATED and tier1.service.commit == second
        assert not answer.is_set() and server.is_alive()
        answer.set()
        server.join(10)
    # the same request a hub's post-receive hook sends: POST /admin/sync with the token
    assert requests_seen and requests_seen[0].startswith(b"POST /admin/sync ")
    assert b"Authorization: Bearer t2" in requests_seen[0]
    assert wait_until(lambda: tier1.downstream.last) == [f"{url}: notified (200)"]


def _answer_later(sock: socket.socket, answer: threading.Event, seen: list[bytes]) -> None:
    sock.settimeout(20)
    conn, _ = sock.accept()
    with conn:
        seen.append(conn.recv(4096))
        answer.wait(20)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_chain_settings_go_to_a_replica_not_a_hub(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    _standby(tmp_path / "tier1", hub)
    with pytest.raises(ConfigError, match="bare hub"):
        hub_hooks.install_chain(hub, notify=["http://127.0.0.1:1"])
    with pytest.raises(ConfigError, match="not an http"):
        hub_hooks.install_chain(tmp_path / "tier1", notify=["file:///etc/passwd"])
    hub_hooks.install_chain(tmp_path / "tier1", notify=["http://127.0.0.1:1/"], token="t")
    repo = GitRepo(tmp_path / "tier1")
    assert repo.run("config", "--get-all", "kbgit.notify") == "http://127.0.0.1:1"
    assert (tmp_path / "tier1" / ".git" / "config").stat().st_mode & 0o077 == 0


def test_the_chain_settings_are_read_again_only_when_they_change(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.ingest(docs)
    tier1 = _standby(tmp_path / "tier1", hub)
    assert tier1.downstream is not None
    trace = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))

    def config_reads() -> int:
        if not trace.exists():
            return 0
        events = [json.loads(line) for line in trace.read_text().splitlines()]
        return sum(e["event"] == "start" and "config" in e["argv"] for e in events)

    assert tier1.downstream.targets() == ([], None) and config_reads() == 1
    assert tier1.downstream.notify_once() == [] and config_reads() == 1  # unchanged: a stat
    hub_hooks.install_chain(tmp_path / "tier1", notify=["http://127.0.0.1:9"], token="t")
    reads = config_reads()
    assert tier1.downstream.targets() == (["http://127.0.0.1:9"], "t")
    assert config_reads() == reads + 1
    tier1.downstream.targets()
    assert config_reads() == reads + 1

"""Hubs on real git servers on loopback: sshd with a key, and nginx + fcgiwrap + git
http-backend with basic auth. Ingest, standby, promote, fencing and the hub's pre-receive
verify run against them exactly as against a local path; secrets never show up.

Both servers are started by the tests (config, keys, logs under tmp_path; 127.0.0.1 only)
and fail, never skip, when openssh-server, fcgiwrap or nginx is missing
(bash scripts/system-deps.sh installs them).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kbgit import KnowledgeStore, create_hub
from kbgit.errors import FencedError, GitError
from kbgit.fencing import WRITER_REF, read_record
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.failover import promote
from kbgit.serving.follower import UPDATED, Follower
from kbgit.serving.service import KnowledgeService

from ..conftest import FAKE_CONFIG, write_docs
from .gitservers import HttpGitServer, SshServer
from .procs import KbgitProc

pytestmark = pytest.mark.integration


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    """The directory the git servers export; holds hub.git with kbgit's hooks."""
    root = tmp_path / "repos"
    create_hub(root / "hub.git")
    hub_hooks.install(root / "hub.git")  # pre-receive verifies every push
    return root


@pytest.fixture
def ssh_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshServer]:
    """sshd on 127.0.0.1 with its own host key; git clients use its key via GIT_SSH_COMMAND."""
    server = SshServer(tmp_path / "sshd")
    monkeypatch.setenv("GIT_SSH_COMMAND", server.ssh_command)  # children inherit it
    yield server
    server.stop()


@pytest.fixture
def http_server(tmp_path: Path, repos: Path, monkeypatch: pytest.MonkeyPatch):
    """git http-backend behind nginx with basic auth; the password only in KBGIT_HUB_PASSWORD."""
    server = HttpGitServer(tmp_path / "http", repos)
    monkeypatch.setenv("KBGIT_HUB_PASSWORD", server.password)
    yield server
    server.stop()


def _bad_push(store: KnowledgeStore, url: str) -> subprocess.CompletedProcess[str]:
    """Commit a corrupt index file on top of HEAD and push it straight to ``url``."""
    repo = store.repo
    seg = next(p for p in repo.ls_tree("HEAD") if p.startswith("index/"))
    (store.root / seg).write_bytes(b"not the bytes the manifest names")
    repo.run("add", "--", seg)
    repo.run("-c", "user.name=x", "-c", "user.email=x@y", "commit", "-qm", "corrupt", "--no-verify")
    push = subprocess.run(
        ["git", "-C", str(store.root), "push", url, "HEAD:refs/heads/main"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    repo.run("reset", "--quiet", "--hard", "HEAD~1")
    return push


def test_ssh_hub_ingest_standby_verify_and_promote(
    tmp_path: Path, repos: Path, ssh_server: SshServer, docs: Path
) -> None:
    hub = repos / "hub.git"
    url = ssh_server.url(hub)
    store = KnowledgeStore.init(tmp_path / "kb", hub=url, config=FAKE_CONFIG)
    first = store.ingest(docs)
    assert first.pushed and GitRepo(hub).rev_parse("main") == first.commit
    standby = Follower(KnowledgeService("default", tmp_path / "replica"), hub=url)
    standby.open()
    assert standby.sync_once().status == UPDATED and standby.service.commit == first.commit
    refused = _bad_push(store, url)  # the hub's pre-receive runs in the ssh session
    assert refused.returncode != 0 and "fails verification" in refused.stderr
    assert GitRepo(hub).rev_parse("main") == first.commit
    standby.stop()
    res = promote(tmp_path / "replica")
    assert res.epoch == 2 and res.hub == url
    record = read_record(GitRepo(hub), GitRepo(hub).rev_parse(WRITER_REF))
    assert record is not None and record.epoch == 2
    new = KnowledgeStore(tmp_path / "replica")
    write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
    assert new.ingest(docs).pushed
    with pytest.raises(FencedError):
        store.ingest(docs)


def test_old_primary_restarted_after_promotion_is_fenced(
    tmp_path: Path, repos: Path, ssh_server: SshServer, docs: Path
) -> None:
    """Promote, restart the old primary as `kbgit serve`: it must not answer, nor write."""
    hub = repos / "hub.git"
    url = ssh_server.url(hub)
    store = KnowledgeStore.init(tmp_path / "kb", hub=url, config=FAKE_CONFIG)
    store.ingest(docs)
    standby = Follower(KnowledgeService("default", tmp_path / "replica"), hub=url)
    standby.open()
    standby.sync_once()
    promote(tmp_path / "replica")
    new = KnowledgeStore(tmp_path / "replica")
    write_docs(tmp_path / "new", {"tides.md": "Tides follow the moon twice a day."})
    newer = new.ingest(tmp_path / "new").commit  # the old primary does not have this one
    old = KbgitProc(["serve", str(store.root), "--interval", "1"], tmp_path / "old.log")
    try:
        health = _wait_loaded(old.url)  # no query is answered while it starts, either
        assert health["role"] == "fenced" and health["status"] == "unavailable"
        assert health["sync"]["writer"]["epoch"] == 2 and not health["ready"]
        assert requests.get(old.url + "/ready", timeout=5).status_code == 503
        q = requests.post(old.url + "/query", json={"query": "keys", "k": 1}, timeout=10)
        assert q.status_code == 503 and "fenced" in q.json()["error"]
    finally:
        old.stop()
    write_docs(docs, {"stale.md": "a write attempted by the fenced old primary"})
    with pytest.raises(FencedError):
        store.ingest(docs)
    assert GitRepo(hub).rev_parse("main") == newer


def _wait_loaded(url: str, timeout: float = 60.0) -> dict:
    """Return /health once the index is loaded; every query tried meanwhile must fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            q = requests.get(url + "/query", params={"q": "keys", "k": 1}, timeout=2)
            assert q.status_code != 200, q.text
            body = requests.get(url + "/health", timeout=2).json()
            if body["index"]["loaded"]:
                return body
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not load its index within {timeout}s")


def test_smart_http_hub_with_basic_auth_from_the_environment(
    tmp_path: Path, repos: Path, http_server: HttpGitServer, docs: Path, caplog
) -> None:
    hub = repos / "hub.git"
    url = http_server.url(hub)  # names the user, never the password
    store = KnowledgeStore.init(tmp_path / "kb", hub=url, config=FAKE_CONFIG)
    first = store.ingest(docs)
    assert first.pushed and GitRepo(hub).rev_parse("main") == first.commit
    standby = Follower(KnowledgeService("default", tmp_path / "replica"), hub=url)
    standby.open()
    assert standby.sync_once().status == UPDATED
    # a plain git client (no kbgit helper: the password in the URL) pushes a corrupt commit;
    # git http-backend runs the hub's pre-receive too
    refused = _bad_push(store, http_server.url(hub, with_password=True))
    assert refused.returncode != 0 and "fails verification" in refused.stderr
    res = promote(tmp_path / "replica")
    assert res.epoch == 2
    secret = http_server.password
    assert secret not in caplog.text and secret not in str(standby.service.health())
    for path in (tmp_path / "kb", tmp_path / "replica"):
        assert secret not in (path / ".git" / "config").read_text()


def test_wrong_http_credentials_fail_cleanly_and_stay_secret(
    tmp_path: Path, repos: Path, http_server: HttpGitServer, docs: Path, monkeypatch
) -> None:
    hub = repos / "hub.git"
    monkeypatch.setenv("KBGIT_HUB_PASSWORD", "wrong-password-123")
    with pytest.raises(GitError) as info:
        KnowledgeStore.init(tmp_path / "kb", hub=http_server.url(hub), config=FAKE_CONFIG)
    assert "Authentication failed" in info.value.stderr
    # a URL that carries the password is redacted wherever kbgit shows it
    monkeypatch.delenv("KBGIT_HUB_PASSWORD")
    leaky = http_server.url(hub, with_password=True)
    standby = Follower(KnowledgeService("default", tmp_path / "replica"), hub=leaky)
    assert http_server.password not in standby.service.sync.upstream
    bad = leaky.replace(http_server.password, "not-it")
    follower = Follower(KnowledgeService("default", tmp_path / "r2"), hub=bad)
    follower.open()
    result = follower.sync_once()
    assert result.status == "error" and "not-it" not in (result.error or "")
    assert "not-it" not in str(follower.service.health())

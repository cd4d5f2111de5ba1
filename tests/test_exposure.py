"""What the hub hook sends and what /health shows to strangers (issue 15, items 9 and 10)."""

from __future__ import annotations

import http.server
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import ConfigError, KnowledgeStore
from kbgit.config import StoreSpec
from kbgit.gitrepo import GitRepo
from kbgit.hub.hooks import install, post_receive

from .serve_helpers import TOKEN, auth, get, post, start_server, wait_until


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the status and Location the server was given."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        if self.server.location:  # type: ignore[attr-defined]
            self.send_header("Location", self.server.location)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Stay quiet."""


@pytest.fixture
def http_pair() -> Iterator[tuple[http.server.HTTPServer, http.server.HTTPServer]]:
    """A standby look-alike that redirects to a second server recording what it gets."""
    servers = []
    for _ in range(2):
        srv = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
        srv.seen, srv.status, srv.location = [], 200, ""  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    redirector, target = servers
    redirector.status = 302  # type: ignore[attr-defined]
    redirector.location = f"http://127.0.0.1:{target.server_port}/admin/sync"  # type: ignore[attr-defined]
    yield redirector, target
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_post_receive_does_not_follow_a_redirect_with_the_token(http_pair) -> None:
    redirector, target = http_pair
    url = f"http://127.0.0.1:{redirector.server_port}"
    (report,) = post_receive([url], TOKEN)
    assert "redirect, not followed (302)" in report
    assert redirector.seen == [f"Bearer {TOKEN}"]
    assert target.seen == []  # the token went nowhere else


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://127.0.0.1:70/", "http://127.0.0.1:8002/a b", "127.0.0.1"],
)
def test_notify_accepts_only_http_urls(hub: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        install(hub, notify=[url])
    proc = subprocess.run(
        [sys.executable, "-m", "kbgit", "hooks", "install", str(hub), "--notify", url],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "not an http(s) URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_url_already_in_the_hub_config_is_skipped(hub: Path) -> None:
    (report,) = post_receive(["gopher://x y"], TOKEN, timeout=5)
    assert "not an http(s) URL, skipped" in report


def test_hub_config_holding_the_token_is_private(hub: Path) -> None:
    install(hub, notify=["http://127.0.0.1:9"], token="s3cret")
    mode = stat.S_IMODE((hub / "config").stat().st_mode)
    assert mode == 0o600
    assert GitRepo(hub).run("config", "kbgit.token") == "s3cret"
    assert stat.S_IMODE((hub / "config").stat().st_mode) == 0o600


def test_health_hides_paths_and_raw_errors_without_the_token(
    tmp_path: Path, store: KnowledgeStore, docs: Path, hub: Path
) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)))
    try:
        wait_until(lambda: get(f"{srv.url}/ready").status_code == 200)
        hub.rename(tmp_path / "moved.git")  # the next sync fails with git's error text
        post(f"{srv.url}/admin/sync", headers=auth())
        wait_until(lambda: get(f"{srv.url}/health").json()["sync"]["last_result"] == "error")
        public = get(f"{srv.url}/health")
        text = public.text
        assert public.status_code == 200 and str(hub) not in text and str(tmp_path) not in text
        body = public.json()
        assert body["sync"]["failures_in_row"] >= 1 and body["lag"]["commits"] == 0
        assert body["sync"]["last_error"].startswith("withheld")
        full = get(f"{srv.url}/health", headers=auth()).json()
        assert str(hub) in json.dumps(full) and "withheld" not in json.dumps(full)
    finally:
        srv.stop()


def test_post_receive_refuses_a_token_that_would_add_headers(http_pair) -> None:
    _redirector, target = http_pair
    url = f"http://127.0.0.1:{target.server_port}"
    (report,) = post_receive([url], "tok\r\nX-Injected: 1")
    assert "line break, not sent" in report and target.seen == []
    (report,) = post_receive([url], TOKEN)
    assert report == f"{url}: notified (200)" and target.seen == [f"Bearer {TOKEN}"]

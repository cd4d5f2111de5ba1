"""The console and the write API through the shipped nginx config, before and after failover."""

from __future__ import annotations

import pytest
import requests

from kbgit import KnowledgeStore, create_hub

from ..conftest import FAKE_CONFIG, write_docs
from .procs import TOKEN, KbgitProc, NginxProc, free_port, nginx_binary, served_by

pytestmark = pytest.mark.integration


def test_console_and_uploads_through_nginx(tmp_path) -> None:
    nginx_bin = nginx_binary()
    assert nginx_bin is not None, "nginx is not installed: bash scripts/system-deps.sh installs it"
    hub = create_hub(tmp_path / "hub.git")
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)
    store.ingest(write_docs(tmp_path / "docs", {"keys.md": "Rotate API keys every ninety days.\n"}))
    primary_port = free_port()
    config = tmp_path / "standby.toml"
    config.write_text(f'[serve]\nprimary_url = "http://127.0.0.1:{primary_port}"\n')
    procs: list = []
    try:
        standby = KbgitProc(
            ["standby", str(hub), str(tmp_path / "replica"), "--interval", "1", "--config",
             str(config)],
            tmp_path / "standby.log",
        )  # fmt: skip
        procs.append(standby)
        primary = KbgitProc(
            ["serve", str(store.root), "--interval", "1"], tmp_path / "primary.log", primary_port
        )
        procs.append(primary)
        standby.wait_ready()
        primary.wait_ready()
        (tmp_path / "nginx").mkdir()
        nginx = NginxProc(
            nginx_bin, tmp_path / "nginx", f"127.0.0.1:{primary_port}", f"127.0.0.1:{standby.port}"
        )
        procs.append(nginx)
        auth = {"Authorization": f"Bearer {TOKEN}"}

        page = requests.get(f"{nginx.url}/ui/status", timeout=10)
        assert page.status_code == 200 and served_by(page) == f"127.0.0.1:{primary_port}"
        assert 'href="/ui/static/console.css"' in page.text
        assert requests.get(f"{nginx.url}/ui/static/console.css", timeout=10).status_code == 200
        # a body far above the query limit (64 KiB) passes on the write path
        big = ("Espresso machines descale on Fridays. " * 5000).encode()
        up = requests.post(
            f"{nginx.url}/documents", files={"files": ("big.txt", big)}, headers=auth, timeout=120
        )
        assert up.status_code == 200, up.text[:300]
        assert up.json()["added"] == ["big.txt"] and up.json()["commit"] == store.repo.head()

        primary.stop()
        page = requests.get(f"{nginx.url}/ui/status", timeout=10)
        assert page.status_code == 200 and served_by(page) == f"127.0.0.1:{standby.port}"
        assert "role-standby" in page.text
        refused = requests.post(
            f"{nginx.url}/documents", files={"files": ("x.md", b"x\n")}, headers=auth, timeout=30
        )
        assert refused.status_code == 409
        assert refused.json()["primary"] == f"http://127.0.0.1:{primary_port}"
    finally:
        for p in reversed(procs):
            p.stop()

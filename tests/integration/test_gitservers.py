"""The loopback git servers of the integration tests leave no process behind when stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbgit import create_hub

from .gitservers import HttpGitServer
from .procs import wait_for

pytestmark = pytest.mark.integration


def _serving(sock: Path) -> list[int]:
    """Return the pids whose command line names ``sock`` (fcgiwrap's master and workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if entry.isdigit() and str(sock).encode() in cmd:
            pids.append(int(entry))
    return pids


def test_stopping_the_http_server_ends_every_fcgiwrap_worker(tmp_path: Path) -> None:
    create_hub(tmp_path / "repos" / "hub.git")
    server = HttpGitServer(tmp_path / "http", tmp_path / "repos", workers=3)
    sock = tmp_path / "http" / "fcgiwrap.sock"
    wait_for(lambda: len(_serving(sock)) >= 4, 10, what="fcgiwrap master and 3 workers")
    server.stop()
    wait_for(lambda: not _serving(sock), 10, what="no fcgiwrap process left")

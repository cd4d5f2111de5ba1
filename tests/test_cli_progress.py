"""Ingest progress without a terminal: periodic log lines, JSON with --log-json."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.cli.progress import ProgressLines


def _kbgit(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kbgit")
    assert exe, "the kbgit console script is not installed (pip install -e .)"
    # pipes, not a terminal: what cron, CI and systemd give a command
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_ingest_without_a_terminal_prints_progress_lines(store: KnowledgeStore, docs: Path) -> None:
    out = _kbgit("ingest", str(store.root), str(docs))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "kbgit.progress" in line]
    assert any("hashing 1/4 files" in line for line in lines)
    assert any("hashing 4/4 files (100%" in line for line in lines)
    assert any("embedding" in line and "chunks (100%" in line for line in lines)


def test_log_json_makes_progress_json_records(store: KnowledgeStore, docs: Path) -> None:
    out = _kbgit("--log-json", "ingest", str(store.root), str(docs))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    progress = [r for r in records if r["logger"] == "kbgit.progress"]
    assert progress and all(r["level"] == "info" for r in progress)
    assert any(r["msg"].startswith("reading 4/4 files") for r in progress)


def test_no_progress_is_silent(store: KnowledgeStore, docs: Path) -> None:
    out = _kbgit("ingest", str(store.root), str(docs), "--no-progress")
    assert out.returncode == 0 and "kbgit.progress" not in out.stderr


def test_lines_come_at_start_end_and_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kbgit.progress")
    lines = ProgressLines(every=3600)
    for done in range(1, 101):
        lines("embed", done, 100)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "embedding 1/100 chunks",
        "embedding 100/100 chunks",
    ]
    caplog.clear()
    every_time = ProgressLines(every=0)
    for done in range(1, 4):
        every_time("hash", done, 3)
    assert len(caplog.records) == 3

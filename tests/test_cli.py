"""The kbgit CLI: exit codes, messages, help text; state checked by reopening the store."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main

from .conftest import write_docs


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, (*prefix, name))
    return out


def test_every_command_has_help_with_text(runner: CliRunner) -> None:
    commands = all_commands(main)
    assert {("init",), ("ingest",), ("status",), ("query",), ("verify",), ("hub", "create")} <= set(
        commands
    )
    for path in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        cmd = main
        for part in path:
            cmd = cmd.commands[part]  # type: ignore[attr-defined]
        assert cmd.help and len(cmd.help.strip()) > 20, f"{' '.join(path)} needs a docstring"


def test_quick_start_flow(runner: CliRunner, tmp_path: Path, docs: Path) -> None:
    hub, kb = tmp_path / "hub.git", tmp_path / "kb"
    assert runner.invoke(main, ["hub", "create", str(hub)]).exit_code == 0
    res = runner.invoke(
        main,
        [
            "init",
            str(kb),
            "--hub",
            str(hub),
            "--model",
            "fake:64",
            "--chunk-size",
            "40",
            "--chunk-overlap",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["ingest", str(kb), str(docs)])
    assert res.exit_code == 0, res.output
    assert "added 4, updated 0, skipped 0, deleted 0" in res.output and "pushed" in res.output
    store = KnowledgeStore(kb)
    assert len(store.verify().ledger.documents) == 4
    res = runner.invoke(main, ["ingest", str(kb), str(docs)])
    assert "nothing changed: no commit" in res.output
    res = runner.invoke(main, ["query", str(kb), "VPN handshake", "-k", "2", "--json"])
    data = json.loads(res.output)
    assert data["commit"] == store.repo.head() and data["hits"][0]["source"] == "guide/vpn.md"
    res = runner.invoke(main, ["status", str(kb), "--source", str(docs)])
    assert "0 ahead, 0 behind" in res.output and "4 unchanged" in res.output
    assert runner.invoke(main, ["verify", str(kb)]).exit_code == 0


def test_partial_failure_exit_code(
    runner: CliRunner, tmp_path: Path, store: KnowledgeStore
) -> None:
    src = write_docs(tmp_path / "src", {"ok.md": "good words", "bad.txt": b"\xff\xfe\x00"})
    res = runner.invoke(main, ["ingest", str(store.root), str(src)])
    assert res.exit_code == 3
    assert "failed: bad.txt: binary" in res.output
    assert "ok.md" in KnowledgeStore(store.root).verify().ledger.documents


def test_verify_failure_exit_code(runner: CliRunner, store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    seg = store.root / "index" / "g000001.jsonl"
    seg.write_bytes(seg.read_bytes().replace(b"Rotate", b"R0tate"))
    store.repo.run("add", "--all")
    store.repo.run("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "tamper")
    res = runner.invoke(main, ["verify", str(store.root)])
    assert res.exit_code == 4 and "sha256 mismatch" in res.output
    assert runner.invoke(main, ["verify", str(store.root), "HEAD~1"]).exit_code == 0


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [shutil.which("kbgit") or "kbgit", "status", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "hint: create one with: kbgit init" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_init_refuses_an_existing_store(runner: CliRunner, store: KnowledgeStore) -> None:
    res = runner.invoke(main, ["init", str(store.root)])
    assert res.exit_code == 1 and "already a store" in res.output


def test_query_on_an_empty_store_explains(runner: CliRunner, store: KnowledgeStore) -> None:
    res = runner.invoke(main, ["query", str(store.root), "anything"])
    assert res.exit_code == 1 and "no commits yet" in res.output


def test_repair_command(runner: CliRunner, store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    (store.root / "ledger.json").write_text("garbage")
    res = runner.invoke(main, ["repair", str(store.root)])
    assert res.exit_code == 0 and "repaired" in res.output
    store.verify()
    assert runner.invoke(main, ["repair", str(store.root)]).output.strip() == "nothing to repair"

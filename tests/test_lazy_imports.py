"""Commands that need no model start without importing torch (checked with -X importtime)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.hub import hooks as hub_hooks

from .conftest import write_docs

HEAVY = ("torch", "sentence_transformers", "transformers")


def imported(args: list[str], **kw) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m kbgit ARGS``; return the process and top-level modules."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kbgit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )
    names = set(re.findall(r"\|\s+(\S+)$", proc.stderr, flags=re.MULTILINE))
    return proc, {n.split(".")[0] for n in names}


@pytest.mark.parametrize("command", [["status"], ["log"], ["verify"], ["show", None, "HEAD"]])
def test_model_free_commands_do_not_import_torch(
    store: KnowledgeStore, docs: Path, command: list
) -> None:
    store.ingest(docs)
    args = [str(store.root) if a is None else a for a in command]
    if None not in command:
        args.append(str(store.root))
    proc, modules = imported(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kbgit" in modules and not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_hub_pre_receive_hook_does_not_import_torch(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    hub_hooks.install(hub)
    store.ingest(docs)
    old = store.repo.head()
    write_docs(docs, {"tides.md": "Spring tides follow the new and full moon.\n"})
    store.ingest(docs, push=False)
    new = store.repo.head()
    store.repo.run("push", "-q", str(hub), f"{new}:refs/heads/incoming")  # objects only
    line = f"{old} {new} refs/heads/main\n"
    proc, modules = imported(["hook", "pre-receive"], input=line, cwd=hub)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kbgit" in modules and not modules & set(HEAVY), sorted(modules & set(HEAVY))

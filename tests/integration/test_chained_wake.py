"""Chained replication as real processes: hub -> standby A -> standby B (B follows A's clone).

Both standbys poll once an hour: only the hub's post-receive hook can wake A, and only A's
follower (``kbgit hooks chain``) can wake B, after A has verified and served the commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks

from ..conftest import write_docs
from ..serve_helpers import wait_until
from .procs import TOKEN
from .procs import KbgitProc as Proc

pytestmark = pytest.mark.integration


def test_a_push_reaches_the_second_tier_without_polling(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, procs: list[Proc]
) -> None:
    first = store.ingest(docs).commit
    a_replica, b_replica = tmp_path / "tier1", tmp_path / "tier2"
    a = Proc(["standby", str(hub), str(a_replica), "--interval", "3600"], tmp_path / "a.log")
    procs.append(a)
    a.wait_ready()
    b = Proc(["standby", str(a_replica), str(b_replica), "--interval", "3600"], tmp_path / "b.log")
    procs.append(b)
    b.wait_ready()
    assert a.head() == first and b.head() == first  # each one's first (start-up) sync
    hub_hooks.install(hub, notify=[a.url], token=TOKEN)
    chain = subprocess.run(
        [sys.executable, "-m", "kbgit", "hooks", "chain", str(a_replica), "--notify", b.url],
        capture_output=True,
        text=True,
        env={**os.environ, "KBGIT_TOKEN": TOKEN},
        timeout=60,
    )
    assert chain.returncode == 0, chain.stderr
    assert GitRepo(a_replica).run("config", "--get-all", "kbgit.notify") == b.url
    news = {
        "tides.md": ("Tides: the moon pulls the sea twice a day.", "moon pulls the sea"),
        "lava.md": ("Volcanoes: molten lava erupts from the crater.", "lava erupts crater"),
    }
    for name, (text, query) in news.items():  # twice: the notifier thread ends, starts again
        write_docs(docs, {name: text})
        commit = store.ingest(docs).commit
        wait_until(lambda c=commit: b.head() == c, timeout=30)
        assert a.head() == commit
        assert b.query(query, k=1).json()["hits"][0]["source"] == name
    # B verified and served what it fetched from A's clone; it never contacted the hub
    assert GitRepo(b_replica).remote_url("hub") == str(a_replica.resolve())

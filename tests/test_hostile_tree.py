"""Hostile commits pushed with plain git: symlinks, gitlinks and modes (issue 15, item 1).

Every tree entry of a store must be a regular file (mode 100644). A symbolic link,
submodule or executable file fails verification everywhere: the hub's pre-receive
hook, ``kbgit verify`` and every standby, which keeps serving the last good commit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main as cli
from kbgit.errors import IntegrityError
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.follower import REFUSED, UPDATED

from . import hostile
from .conftest import write_docs

HOSTILE = {
    "symlink to a file": ("docs/x.txt", "120000", b"/etc/passwd", "symbolic link"),
    "symlink to a directory": ("docs/dir", "120000", b"/tmp", "symbolic link"),
    "symlinked index file": ("index/g000009.jsonl", "120000", b"/etc/passwd", "symbolic link"),
    "executable document": ("docs/run.txt", "100755", b"echo hi\n", "executable"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_non_regular_entries_fail_the_hook_verify_and_the_standby(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, case: str
) -> None:
    path, mode, content, reason = HOSTILE[case]
    good = store.ingest(docs).commit
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    follower = hostile.standby(tmp_path / "replica", hub)
    assert follower.sync_once().status == UPDATED
    hub_hooks.install(hub)
    edit = hostile.add_doc(path[len("docs/") :], content) if path.startswith("docs/") else None
    bad = hostile.forge(attacker, {path: (mode, content)}, ledger=edit)

    code, err = hostile.push(attacker)
    assert code != 0 and reason in err and "Traceback" not in err
    assert GitRepo(hub).rev_parse("main") == good

    res = CliRunner().invoke(cli, ["verify", str(attacker)])
    assert res.exit_code == 4 and reason in res.output

    hostile.unhook(hub)  # a hub without the hook: the standby is the last line
    assert hostile.push(attacker)[0] == 0
    result = follower.sync_once()
    assert result.status == REFUSED and reason in (result.error or "")
    assert follower.service.commit == good and follower.repo.head() == good
    assert not os.path.lexists(tmp_path / "replica" / path)
    health = follower.service.health()
    assert health["refused"][0]["commit"] == bad and reason in health["refused"][0]["reason"]


def test_a_gitlink_fails_verification(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    commit = store.ingest(docs).commit
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    assert commit is not None
    hostile.git(attacker, "read-tree", "HEAD")
    hostile.git(attacker, "update-index", "--add", "--cacheinfo", f"160000,{commit},docs/sub")
    tree = hostile.git(attacker, "write-tree")
    bad = hostile.git(attacker, "commit-tree", tree, "-p", "HEAD", "-m", "gitlink")
    hostile.git(attacker, "update-ref", "HEAD", bad)
    res = CliRunner().invoke(cli, ["verify", str(attacker)])
    assert res.exit_code == 4 and "submodule" in res.output


def test_ingest_never_writes_through_a_symlink_in_the_working_tree(
    tmp_path: Path, store: KnowledgeStore, docs: Path
) -> None:
    """A store whose HEAD holds docs/dir -> outside (committed before verification knew)."""
    store.ingest(docs)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "docs" / "dir").symlink_to(outside)
    store.repo.run("add", "docs/dir")
    store.repo.run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "link")
    write_docs(docs, {"dir/pwn.txt": "written through a link"})
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.ingest(docs, keep_missing=True, push=False)
    assert list(outside.iterdir()) == []


def test_source_symlinks_are_skipped_and_reported(
    tmp_path: Path, store: KnowledgeStore, docs: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 the secret password is hunter2\n")
    secret_dir = tmp_path / "secret-dir"
    write_docs(secret_dir, {"inner.txt": "another secret hunter2"})
    (docs / "passwd.txt").symlink_to(secret)
    (docs / "linked").symlink_to(secret_dir)
    result = store.ingest(docs)
    failed = {f.path: f.reason for f in result.failed}
    assert "symbolic link" in failed["passwd.txt"] and "symbolic link" in failed["linked"]
    assert "keys.md" in result.added  # everything else is ingested
    ledger = store.snapshot().ledger
    assert not any("passwd" in p or p.startswith("linked") for p in ledger.documents)
    res = CliRunner().invoke(cli, ["ingest", str(store.root), str(docs)])
    assert res.exit_code == 3 and "passwd.txt" in res.output

"""History: log, diff, show, rollback, tags, plain-git recipes, revision snapshots, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbgit import FormatError, IntegrityError, KnowledgeStore, QueryError
from kbgit.cli import main
from kbgit.config import StoreConfig
from kbgit.errors import ConfigError
from kbgit.format.ledger import LEDGER_PATH
from kbgit.format.manifest import MANIFEST_PATH, Manifest
from kbgit.gitrepo import GitRepo
from kbgit.history.compaction import compact
from kbgit.history.log import RevisionCache, diff, log, show
from kbgit.history.rollback import rollback, tag
from kbgit.serving.failover import promote

from .conftest import FAKE_CONFIG, write_docs

QUERIES = ["rotate api keys", "restore backups", "vpn handshake mtu", "on-call shift swap"]


def git(repo: Path, *args: str) -> str:
    """Run plain git as an operator would."""
    cmd = ["git", "-C", str(repo), "-c", "user.name=op", "-c", "user.email=op@example.org", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def answers(kb: KnowledgeStore, rev: str = "HEAD") -> list[list[tuple[str, float]]]:
    """Top-3 (chunk id, score) for every query of the fixed set."""
    return [
        [(h.chunk_id, round(h.score, 5)) for h in kb.query(q, 3, rev=rev).hits] for q in QUERIES
    ]


@pytest.fixture
def history(store: KnowledgeStore, docs: Path) -> tuple[KnowledgeStore, list[str], Path]:
    """A store with three ingests: initial, edit + add, delete. Returns (store, commits, docs)."""
    commits = [store.ingest(docs).commit]
    write_docs(
        docs,
        {
            "keys.md": "# Keys\n\nRotate keys monthly now. Use the vault for API keys.\n",
            "faq/dns.md": "DNS changes take an hour to propagate. Lower the TTL first.\n",
        },
    )
    commits.append(store.ingest(docs).commit)
    (docs / "backup.txt").unlink()
    commits.append(store.ingest(docs).commit)
    assert all(commits)
    return store, commits, docs


def standby_of(hub: Path, path: Path) -> KnowledgeStore:
    return KnowledgeStore.init(path, hub=str(hub), config=FAKE_CONFIG)


# -- log, diff, show ----------------------------------------------------------------------
def test_log_reads_ingest_trailers(history) -> None:
    kb, commits, _ = history
    entries = log(kb.repo)
    assert [e.commit for e in entries] == commits[::-1]
    first, second, third = entries[::-1]
    assert (first.kind, first.added, first.vectors) == ("ingest", 4, kb.verify(commits[0]).vectors)
    assert (second.added, second.updated, second.deleted) == (1, 1, 0)
    assert (third.added, third.updated, third.deleted, third.vectors_deleted) == (0, 0, 1, 1)
    assert third.generation == 3 and third.vectors == kb.verify().vectors
    assert len(log(kb.repo, limit=2)) == 2


def test_log_describes_plain_git_commits_from_ledgers(history) -> None:
    kb, commits, _ = history
    git(kb.root, "revert", "--no-edit", "HEAD")
    entry = log(kb.repo, limit=1)[0]
    assert entry.kind == "git" and entry.subject.startswith("Revert")
    assert (entry.added, entry.deleted, entry.updated) == (1, 0, 0)  # backup.txt is back
    assert entry.vectors == kb.verify().vectors
    assert entry.generation == 2  # the revert restored HEAD~1's manifest


def test_diff_added_removed_modified_renamed(history) -> None:
    kb, commits, docs = history
    d = diff(kb.repo, commits[0], commits[2])
    assert (d.added, d.removed, d.modified) == (["faq/dns.md"], ["backup.txt"], ["keys.md"])
    assert d.unchanged == 2 and not d.settings_changed and d.chunks_added >= 2
    (docs / "faq" / "dns.md").rename(docs / "dns.md")
    kb.ingest(docs)
    moved = diff(kb.repo, "HEAD~1", "HEAD")
    assert moved.renamed == [("faq/dns.md", "dns.md")] and moved.added == moved.removed == []
    assert moved.chunks_added == moved.chunks_removed == 0
    assert diff(kb.repo, "HEAD", "HEAD").empty
    with pytest.raises(QueryError, match="no such revision"):
        diff(kb.repo, "nope", "HEAD")


def test_show_reports_documents_vectors_model_chunking(history) -> None:
    kb, commits, _ = history
    view = show(kb.repo, commits[0], verify=True)
    assert view.commit == commits[0] and view.verified
    assert sorted(view.documents) == ["backup.txt", "guide/oncall.txt", "guide/vpn.md", "keys.md"]
    assert view.model_id == "fake:64" and view.dim == 64
    assert view.chunking == FAKE_CONFIG.chunking
    assert (
        view.vectors
        == kb.verify(commits[0]).vectors
        == sum(d["chunks"] for d in view.documents.values())
    )
    assert [s["name"] for s in view.segments] == ["g000001"]


# -- rollback -----------------------------------------------------------------------------
def test_rollback_is_a_forward_commit_that_a_standby_follows(history, hub, tmp_path) -> None:
    kb, commits, _ = history
    standby = standby_of(hub, tmp_path / "standby")
    assert standby.repo.head() == commits[2]
    expected = answers(kb, commits[0])
    res = rollback(kb, commits[0])
    head = kb.repo.head()
    assert res.commit == head and res.pushed and res.target == commits[0]
    assert git(kb.root, "rev-parse", "HEAD~1") == commits[2]  # forward, not a reset
    assert git(kb.root, "rev-parse", "HEAD^2") == commits[0]  # where the tree came from
    assert (res.change.added, res.change.removed) == (["backup.txt"], ["faq/dns.md"])
    assert kb.repo.read_file(head, LEDGER_PATH) == kb.repo.read_file(commits[0], LEDGER_PATH)
    old, new = (
        Manifest.from_bytes(kb.repo.read_file(c, MANIFEST_PATH)) for c in commits[0:1] + [head]
    )
    assert new.generation == 3 and new.segments == old.segments
    assert answers(kb) == expected
    assert standby.pull() == head
    assert answers(standby) == expected
    assert not kb.needs_repair() and GitRepo(hub).rev_parse("main") == head


def test_rolling_back_a_rollback_restores_the_newer_store(history) -> None:
    kb, commits, _ = history
    before = answers(kb)
    rollback(kb, commits[0])
    assert answers(kb) != before
    res = rollback(kb, "HEAD~1")
    assert res.target == commits[2] and answers(kb) == before
    assert kb.repo.count_commits("HEAD") == 5
    entries = log(kb.repo, limit=2)
    assert [e.kind for e in entries] == ["rollback", "rollback"]
    assert entries[0].rollback_to == commits[2] and entries[1].rollback_to == commits[0]


def test_rollback_dry_run_and_noop_commit_nothing(history) -> None:
    kb, commits, _ = history
    res = rollback(kb, commits[1], dry_run=True)
    assert res.dry_run and res.commit is None and res.change.added == ["backup.txt"]
    assert kb.repo.head() == commits[2] and not kb.needs_repair()
    same = rollback(kb, "HEAD")
    assert same.noop and kb.repo.head() == commits[2]


def hub_objects(hub: Path) -> dict[str, str]:
    out = GitRepo(hub).run("cat-file", "--batch-all-objects", "--batch-check")
    return {line.split()[0]: line.split()[1] for line in out.splitlines()}


def test_rollback_adds_no_index_or_document_blob_to_the_hub(history, hub) -> None:
    kb, commits, _ = history
    before = hub_objects(hub)
    res = rollback(kb, commits[0])
    added = {oid: kind for oid, kind in hub_objects(hub).items() if oid not in before}
    blobs = [oid for oid, kind in added.items() if kind == "blob"]
    manifest_blob = kb.repo.run("rev-parse", f"{res.commit}:{MANIFEST_PATH}")
    assert blobs == [manifest_blob]  # every other blob of commits[0] is already there
    assert sorted(added.values()).count("commit") == 1
    # what a push or a standby's fetch transfers: no blob but the manifest
    sent = GitRepo(hub).run("rev-list", "--objects", res.commit, "--not", commits[2])
    assert sorted(line.split(" ", 1)[1] for line in sent.splitlines() if " " in line) == [
        "",  # the root tree
        MANIFEST_PATH,
    ]


def test_linear_rollback_and_rollback_to_a_side_commit_have_one_parent(history) -> None:
    kb, commits, _ = history
    res = rollback(kb, commits[0], linear=True)
    assert git(kb.root, "log", "-1", "--format=%P") == commits[2]
    assert kb.verify().ledger == kb.verify(commits[0]).ledger and res.pushed
    git(kb.root, "checkout", "-q", "-b", "side", commits[1])
    git(kb.root, "revert", "--no-edit", "HEAD")  # a valid store, outside main's history
    side = kb.repo.head()
    git(kb.root, "checkout", "-q", "main")
    res = rollback(kb, "side")
    assert res.warnings == ["side is not in the history of HEAD"]
    parents = git(kb.root, "log", "-1", "--format=%P").split()
    assert len(parents) == 1 and side not in parents  # the side branch stays off main
    assert kb.verify().ledger == kb.verify(side).ledger


def test_ingest_after_rollback_never_reuses_a_segment_name(history) -> None:
    kb, commits, docs = history
    rollback(kb, commits[0])
    write_docs(docs, {"new.md": "A brand new runbook about certificates and renewals.\n"})
    kb.ingest(docs)
    names = {s.name for s in kb.verify().manifest.segments}
    assert "g000004" in names
    for old in commits:
        assert "index/g000004.faiss" not in kb.repo.ls_tree(old)


def test_rollback_refuses_a_commit_that_fails_verification(history, hub) -> None:
    kb, commits, _ = history
    git(kb.root, "checkout", "-q", "-b", "broken", commits[0])
    seg = kb.root / "index" / "g000001.faiss"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    git(kb.root, "commit", "-qam", "corrupt a segment")
    git(kb.root, "checkout", "-q", "main")
    with pytest.raises(IntegrityError, match="fails verification: .*sha256 mismatch"):
        rollback(kb, "broken")
    assert kb.repo.head() == commits[2] == GitRepo(hub).rev_parse("main")
    assert not kb.needs_repair()


def test_rollback_refuses_an_incompatible_format(history) -> None:
    kb, commits, _ = history
    git(kb.root, "checkout", "-q", "-b", "future", commits[0])
    path = kb.root / MANIFEST_PATH
    path.write_text(re.sub(r'"format": \d+', '"format": 9', path.read_text()))
    git(kb.root, "commit", "-qam", "format 9")
    git(kb.root, "checkout", "-q", "main")
    with pytest.raises(FormatError, match="format 9 is not supported"):
        rollback(kb, "future")
    assert kb.repo.head() == commits[2]


# -- tags ---------------------------------------------------------------------------------
def test_tag_is_pushed_and_rollback_accepts_it_on_another_store(history, hub, tmp_path) -> None:
    kb, commits, _ = history
    other = standby_of(hub, tmp_path / "other")  # cloned before the tag exists
    res = tag(kb, "before-cleanup", commits[0], message="known good")
    promote(other.root)  # the writer role moves to `other` (refs/kbgit/writer)
    assert res.pushed and res.commit == commits[0]
    assert GitRepo(hub).rev_parse("before-cleanup") == commits[0]
    assert log(kb.repo)[-1].tags == ["before-cleanup"]
    out = rollback(other, "before-cleanup")  # fetches the hub's tags to resolve it
    assert out.target == commits[0] and out.pushed
    assert kb.pull() == out.commit and answers(kb) == answers(kb, "before-cleanup")


def test_tag_refuses_bad_names_and_duplicates(history) -> None:
    kb, commits, _ = history
    tag(kb, "v1")
    with pytest.raises(ConfigError, match="already exists"):
        tag(kb, "v1", commits[0])
    for bad in ("bad name", "-x", "a..b", ""):
        with pytest.raises(ConfigError, match="invalid tag name"):
            tag(kb, bad)


# -- plain git ----------------------------------------------------------------------------
def test_plain_git_rollback_recipes_give_verified_stores(history, hub, tmp_path) -> None:
    kb, commits, docs = history
    expected = answers(kb, commits[0])
    git(kb.root, "checkout", "--no-overlay", commits[0], "--", ".")
    git(kb.root, "commit", "-qm", "operator: back to the first ingest")
    assert kb.verify().commit == kb.repo.head() and answers(kb) == expected
    git(kb.root, "revert", "--no-edit", "HEAD")
    assert answers(kb) == answers(kb, commits[2])
    kb.push()
    write_docs(docs, {"more.md": "Escalation goes to the duty manager after one hour.\n"})
    assert kb.ingest(docs).pushed  # the ingest after a plain-git rollback verifies too
    standby = standby_of(hub, tmp_path / "standby")
    assert standby.verify().commit == kb.repo.head() and answers(standby) == answers(kb)


def test_plain_checkout_without_no_overlay_is_caught_by_verify(history) -> None:
    kb, commits, _ = history
    git(kb.root, "checkout", commits[0], "--", ".")  # keeps files added after commits[0]
    git(kb.root, "commit", "-qm", "operator: incomplete rollback")
    with pytest.raises(IntegrityError, match="not in manifest|not in ledger"):
        kb.verify()


# -- revision snapshots for servers ------------------------------------------------------
def test_revision_cache_serves_past_revisions_read_only(history) -> None:
    kb, commits, _ = history
    revs = RevisionCache(kb.repo, capacity=2)
    snap = revs.get(commits[0])
    assert snap.commit == commits[0] and revs.get(commits[0]) is snap
    vector = kb.embedder.embed([QUERIES[1]])[0]
    assert snap.search(vector, 1)[0].source == "backup.txt"
    revs.get(commits[1])
    revs.get("HEAD")
    assert len(revs) == 2 and revs.get(commits[0]) is not snap  # evicted, reloaded
    assert kb.repo.head() == commits[2] and not kb.needs_repair()
    for bad in ("nope", "--output=/tmp/x", "HEAD\n"):
        with pytest.raises(QueryError):
            revs.get(bad)


# -- CLI ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["log", "diff", "show", "rollback", "tag", "compact", "gc"])
def test_every_history_command_has_help_with_an_example(command: str) -> None:
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0 and "Example:" in res.output


def test_cli_log_diff_show_tag_rollback(history) -> None:
    kb, commits, _ = history
    run = CliRunner().invoke
    res = run(main, ["log", str(kb.root), "--json"])
    assert res.exit_code == 0, res.output
    assert [e["commit"] for e in json.loads(res.output)] == commits[::-1]
    res = run(main, ["diff", str(kb.root), commits[0], "HEAD"])
    assert res.exit_code == 0 and "A faq/dns.md" in res.output and "D backup.txt" in res.output
    res = run(main, ["show", str(kb.root), commits[0], "--verify", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["vectors"] > 0
    assert run(main, ["tag", str(kb.root), "good", commits[0]]).exit_code == 0
    res = run(main, ["rollback", str(kb.root), "good", "--dry-run"])
    assert res.exit_code == 0 and "would restore" in res.output
    assert kb.repo.head() == commits[2]
    res = run(main, ["rollback", str(kb.root), "good"])
    assert res.exit_code == 0 and "pushed" in res.output
    assert KnowledgeStore(kb.root).verify().ledger.documents.keys() == (
        kb.verify(commits[0]).ledger.documents.keys()
    )
    res = run(main, ["rollback", str(kb.root), "nope"])
    assert res.exit_code == 1 and "no such revision" in res.output


def test_cli_compact_and_gc(history, hub) -> None:
    kb, _, _ = history
    run = CliRunner().invoke
    res = run(main, ["compact", str(kb.root), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["segments_after"] == 1
    assert compact(kb).noop
    res = run(main, ["gc", str(kb.root), "--hub", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["path"] == str(hub)
    assert "count: 0" in GitRepo(hub).run("count-objects", "-v")  # no loose objects left


def test_rollback_warns_when_the_model_differs(tmp_path, hub, docs) -> None:
    kb = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)
    first = kb.ingest(docs).commit
    kb2 = KnowledgeStore(kb.root, config=StoreConfig(model="fake:32", hub=str(hub)))
    kb2.ingest(docs)
    res = rollback(kb2, first)
    assert res.warnings and "fake:64" in res.warnings[0]
    assert kb2.verify().ledger.model_id == "fake:64"


def test_rollback_to_a_segment_whose_bytes_reappeared_under_another_name(
    store: KnowledgeStore, docs: Path, tmp_path: Path
) -> None:
    """A document re-added after a delete gets a byte-identical segment under a new name."""
    kb = store
    kb.ingest(docs)
    extra = write_docs(tmp_path / "extra", {"x.md": "Exactly one chunk about the xylophone.\n"})
    kb.ingest(extra, keep_missing=True)
    with_g2 = kb.repo.head()
    (extra / "x.md").unlink()
    kb.ingest(docs)  # drops x.md, and with it the whole segment g000002
    write_docs(extra, {"x.md": "Exactly one chunk about the xylophone.\n"})
    kb.ingest(extra, keep_missing=True)  # g000004: the same bytes as g000002
    tree = kb.repo.ls_tree("HEAD")
    assert tree["index/g000004.faiss"] == kb.repo.ls_tree(with_g2)["index/g000002.faiss"]
    assert kb.query("xylophone", 1).hits[0].source == "x.md"  # caches g000004's blobs
    rollback(kb, with_g2)
    assert kb.query("xylophone", 1).hits[0].source == "x.md"  # same cache, name g000002


def test_plain_git_revert_of_a_range_including_a_kbgit_rollback(history) -> None:
    kb, commits, docs = history
    rollback(kb, commits[0])  # a two-parent commit in the range
    write_docs(docs, {"late.md": "A late addition about quotas and audits.\n"})
    kb.ingest(docs)
    git(kb.root, "revert", "--no-edit", "-m", "1", f"{commits[1]}..HEAD")
    snap = kb.verify()
    assert snap.ledger == kb.verify(commits[1]).ledger
    assert answers(kb) == answers(kb, commits[1])


def test_rollback_refuses_a_model_this_host_cannot_load(history) -> None:
    kb, commits, _ = history
    git(kb.root, "checkout", "-q", "-b", "othermodel", commits[0])
    for name in (LEDGER_PATH, MANIFEST_PATH):
        path = kb.root / name
        path.write_text(path.read_text().replace('"fake:64"', '"local:gone-model"'))
    manifest = Manifest.from_bytes((kb.root / MANIFEST_PATH).read_bytes())
    digest = hashlib.sha256((kb.root / LEDGER_PATH).read_bytes()).hexdigest()
    fixed = dataclasses.replace(manifest, ledger_sha256=digest)
    (kb.root / MANIFEST_PATH).write_bytes(fixed.to_bytes())
    git(kb.root, "commit", "-qam", "a store embedded with a model this host lacks")
    git(kb.root, "checkout", "-q", "main")
    assert kb.verify("othermodel").ledger.model_id == "local:gone-model"
    with pytest.raises(ConfigError, match="which this host cannot load"):
        rollback(kb, "othermodel")
    assert kb.repo.head() == commits[2] and not kb.needs_repair()


def test_rollback_tag_and_compaction_pass_the_hubs_verifying_hook(history, hub) -> None:
    """The pre-receive hook verifies each pushed commit; history writes all pass it."""
    from kbgit.hub import hooks

    kb, commits, _ = history
    assert (hub / "hooks" / "pre-receive") in hooks.install(hub)
    assert rollback(kb, commits[0]).pushed
    assert tag(kb, "checked", "HEAD~1").pushed
    assert rollback(kb, "checked").pushed
    assert compact(kb, force=True).pushed
    assert GitRepo(hub).rev_parse("main") == kb.repo.head()

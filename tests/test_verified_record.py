"""The local record of verified commits: a restart trusts them; a tampered record is ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbgit import IntegrityError, KnowledgeStore
from kbgit.format.verified import RECORD_NAME, VerifiedRecord
from kbgit.serving.service import KnowledgeService


def _commit_bad_document(store: KnowledgeStore) -> str:
    """Commit a document whose bytes disagree with the ledger (with plain git)."""
    path = store.root / "docs" / "guide" / "vpn.md"
    path.write_bytes(path.read_bytes().replace(b"VPN", b"VPX"))
    store.repo.run("add", "--all")
    store.repo.run("-c", "user.name=op", "-c", "user.email=op@x", "commit", "-qm", "edit")
    head = store.repo.head()
    assert head is not None
    return head


def test_restart_trusts_recorded_commits_and_ignores_a_tampered_record(
    store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    good = store.repo.head()
    svc = KnowledgeService("default", store.root)
    svc.reload()
    record_file = store.root / ".git" / RECORD_NAME
    data = json.loads(record_file.read_text())
    assert data["commits"] == [good] and len(data["sha256"]) == 64
    assert good in VerifiedRecord.open(store.repo)

    bad = _commit_bad_document(store)
    with pytest.raises(IntegrityError, match=r"docs/guide/vpn\.md: sha256 mismatch"):
        KnowledgeService("default", store.root).reload(bad)
    assert bad not in VerifiedRecord.open(store.repo)  # a refused commit is never recorded

    # a record that lists the commit (as if verified before) is trusted: no second pass
    record = VerifiedRecord.open(store.repo)
    record.add(bad)
    assert KnowledgeService("default", store.root).reload(bad).commit == bad

    # the same record with a broken checksum is discarded: full verification again
    data = json.loads(record_file.read_text())
    data["commits"].append("f" * 40)
    record_file.write_text(json.dumps(data))
    assert bad not in VerifiedRecord.open(store.repo)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        KnowledgeService("default", store.root).reload(bad)


@pytest.mark.parametrize("torn", [b"", b'{"verifier": 1, "commits": ["'])
def test_a_record_torn_by_a_crash_is_ignored(
    store: KnowledgeStore, docs: Path, torn: bytes
) -> None:
    """The record is written without fsync (a cache): what a crash leaves must not be trusted."""
    store.ingest(docs)
    bad = _commit_bad_document(store)
    record = VerifiedRecord.open(store.repo)
    record.add(bad)  # as if verified before
    record_file = store.root / ".git" / RECORD_NAME
    assert bad in VerifiedRecord.open(store.repo)
    record_file.write_bytes(torn)
    assert bad not in VerifiedRecord.open(store.repo)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        KnowledgeService("default", store.root).reload(bad)


def test_a_trusted_load_remembers_its_documents_so_the_next_commit_reads_only_new_ones(
    store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    KnowledgeService("default", store.root).reload()  # verifies and records HEAD
    restarted = KnowledgeService("default", store.root)  # a restart: HEAD is trusted
    snap = restarted.reload()
    assert snap.commit in restarted.record
    blobs = {p: b for p, b in store.repo.ls_tree(snap.commit).items() if p.startswith("docs/")}
    assert blobs
    # without this, the first commit after a restart read and hashed every document
    # again (4.8 s instead of 1.2-1.7 s at 1M vectors, bench/README.md)
    for path, blob in blobs.items():
        doc = snap.ledger.documents[path.removeprefix("docs/")]
        assert restarted.cache.doc_claims(blob) == (doc.sha256, doc.size)


def test_store_records_what_it_verified_and_refuses_a_bad_revision(
    store: KnowledgeStore, docs: Path
) -> None:
    """query --rev: a commit verified here once is trusted; a bad one is never recorded."""
    first = store.ingest(docs).commit
    (docs / "keys.md").write_text("Keys rotate monthly now, with a one day overlap.\n")
    head = store.ingest(docs).commit
    assert head and first
    store.snapshot()
    assert head in VerifiedRecord.open(store.repo)
    old = KnowledgeStore(store.root).query("keys rotate", rev=first)
    assert old.commit == first and old.hits
    assert first in VerifiedRecord.open(store.repo)
    bad = _commit_bad_document(store)
    with pytest.raises(IntegrityError, match=r"docs/guide/vpn\.md: sha256 mismatch"):
        KnowledgeStore(store.root).query("vpn", rev=bad)
    assert bad not in VerifiedRecord.open(store.repo)

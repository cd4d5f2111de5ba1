"""kbgit verify: every mismatch between files, manifest, ledger and vectors is caught."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from kbgit import IntegrityError, KnowledgeStore
from kbgit.format.vector_index import decode_vectors

from .ledger_helpers import LEDGER_MISMATCH, edit_ledger_entry


def commit_all(store: KnowledgeStore, message: str = "hand edit") -> None:
    """Commit the working tree with plain git, as an operator (or attacker) might."""
    store.repo.run("add", "--all")
    store.repo.run("-c", "user.name=op", "-c", "user.email=op@x", "commit", "-q", "-m", message)


@pytest.fixture
def ingested(store: KnowledgeStore, docs: Path) -> KnowledgeStore:
    store.ingest(docs)
    (docs / "keys.md").write_text("Keys rotate monthly now, with a one day overlap.\n")
    (docs / "backup.txt").unlink()
    store.ingest(docs)  # two segments and a tombstone file
    store.verify()
    return store


def segment_files(store: KnowledgeStore) -> list[Path]:
    return sorted((store.root / "index").iterdir())


def test_verify_passes_on_every_commit(ingested: KnowledgeStore) -> None:
    for commit in ingested.repo.run("rev-list", "HEAD").split():
        assert ingested.verify(commit).commit == commit


def test_flipped_byte_in_a_segment(ingested: KnowledgeStore) -> None:
    faiss_file = next(p for p in segment_files(ingested) if p.suffix == ".faiss")
    data = bytearray(faiss_file.read_bytes())
    data[-3] ^= 0x01
    faiss_file.write_bytes(bytes(data))
    commit_all(ingested)
    with pytest.raises(IntegrityError, match=r"g000001\.faiss: sha256 mismatch"):
        ingested.verify()


def test_flipped_byte_in_a_document(ingested: KnowledgeStore) -> None:
    path = ingested.root / "docs" / "guide" / "vpn.md"
    path.write_bytes(path.read_bytes().replace(b"VPN", b"VPX"))
    commit_all(ingested)
    with pytest.raises(IntegrityError, match=r"docs/guide/vpn\.md: sha256 mismatch"):
        ingested.verify()


def test_missing_segment(ingested: KnowledgeStore) -> None:
    (ingested.root / "index" / "g000002.jsonl").unlink()
    commit_all(ingested)
    with pytest.raises(IntegrityError, match=r"index file missing: index/g000002\.jsonl"):
        ingested.verify()


def test_extra_index_file(ingested: KnowledgeStore) -> None:
    (ingested.root / "index" / "g000009.faiss").write_bytes(b"junk")
    commit_all(ingested)
    with pytest.raises(IntegrityError, match="not in manifest"):
        ingested.verify()


def test_ledger_mismatch(ingested: KnowledgeStore) -> None:
    edit_ledger_entry(ingested.root, "keys.md", lambda d: d["chunks"].append("0" * 32))
    commit_all(ingested)
    with pytest.raises(IntegrityError, match=LEDGER_MISMATCH):
        ingested.verify()


def test_ledger_and_manifest_consistent_but_vectors_not(ingested: KnowledgeStore) -> None:
    """Even a forger who fixes the manifest hash is caught by ledger <-> vector checks."""
    edit_ledger_entry(
        ingested.root, "keys.md", lambda d: d["chunks"].append("0" * 32), consistent=True
    )
    commit_all(ingested)
    with pytest.raises(IntegrityError, match="not live in the segment"):
        ingested.verify()


def test_document_not_in_ledger(ingested: KnowledgeStore) -> None:
    (ingested.root / "docs" / "sneaky.md").write_text("injected")
    commit_all(ingested)
    with pytest.raises(IntegrityError, match="document not in ledger: docs/sneaky.md"):
        ingested.verify()


def test_pickle_file_is_refused(ingested: KnowledgeStore) -> None:
    (ingested.root / "index.pkl").write_bytes(pickle.dumps({"a": 1}))
    commit_all(ingested)
    with pytest.raises(IntegrityError, match="pickle"):
        ingested.verify()


def test_crafted_faiss_header_is_refused_without_faiss_parsing() -> None:
    import struct

    header = struct.pack("<4siqqq?iQ", b"IxFI", 4, 10**12, 0, 0, True, 0, 4 * 10**12)
    with pytest.raises(IntegrityError, match="FAISS file is"):
        decode_vectors(header, label="x")
    with pytest.raises(IntegrityError, match="not a FAISS IndexFlatIP"):
        decode_vectors(b"IxF2" + header[4:], label="x")
    with pytest.raises(IntegrityError, match="truncated"):
        decode_vectors(b"IxFI", label="x")


def test_old_commits_still_verify_after_damage_at_head(ingested: KnowledgeStore) -> None:
    good = ingested.repo.head()
    (ingested.root / "manifest.json").write_text("{not json")
    commit_all(ingested)
    with pytest.raises(IntegrityError):
        ingested.verify()
    assert ingested.verify(good).commit == good


def _rewrite_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")


def test_warm_cache_still_checks_manifest_claims(ingested: KnowledgeStore) -> None:
    """A server's cache of verified blobs must not let a lying manifest through."""
    from kbgit.format.checks import SegmentCache
    from kbgit.format.snapshot import load_snapshot

    cache = SegmentCache()
    load_snapshot(ingested.repo, "HEAD", cache=cache)  # warm: every blob verified once

    def lie(data: dict) -> None:
        data["segments"][0]["faiss"]["sha256"] = "0" * 64

    _rewrite_json(ingested.root / "manifest.json", lie)
    commit_all(ingested)
    with pytest.raises(IntegrityError, match="sha256"):
        load_snapshot(ingested.repo, "HEAD", cache=cache)


def test_warm_cache_still_checks_ledger_document_hashes(ingested: KnowledgeStore) -> None:
    from kbgit.format.checks import SegmentCache
    from kbgit.format.snapshot import load_snapshot

    cache = SegmentCache()
    load_snapshot(ingested.repo, "HEAD", cache=cache)
    edit_ledger_entry(
        ingested.root, "guide/vpn.md", lambda d: d.update(sha256="f" * 64), consistent=True
    )
    commit_all(ingested)
    with pytest.raises(IntegrityError, match=r"docs/guide/vpn\.md: sha256 mismatch"):
        load_snapshot(ingested.repo, "HEAD", cache=cache)


def test_segment_listed_twice_in_the_manifest(ingested: KnowledgeStore) -> None:
    def dup(data: dict) -> None:
        seg = data["segments"][-1]
        data["segments"].append(seg)
        data["live_vectors"] += seg["vectors"] - sum(t["count"] for t in seg["tombstones"])

    _rewrite_json(ingested.root / "manifest.json", dup)
    commit_all(ingested)
    with pytest.raises(IntegrityError, match="listed twice"):
        ingested.verify()

"""verify_commit(base=...): trusts files unchanged since an accepted commit, catches the rest."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from kbgit import IntegrityError, KnowledgeStore
from kbgit.config import StoreConfig
from kbgit.errors import GitError
from kbgit.format.snapshot import load_snapshot
from kbgit.format.verify import verify_commit
from kbgit.gitrepo import GitRepo
from kbgit.history.compaction import compact
from kbgit.history.rollback import rollback
from kbgit.hub import hooks as hub_hooks

from .conftest import write_docs
from .ledger_helpers import LEDGER_MISMATCH, edit_ledger_entry, ledger_entry


def commit_all(store: KnowledgeStore, message: str = "hand edit") -> str:
    """Commit the working tree with plain git, as an operator (or attacker) might."""
    store.repo.run("add", "--all")
    store.repo.run("-c", "user.name=op", "-c", "user.email=op@x", "commit", "-q", "-m", message)
    head = store.repo.head()
    assert head is not None
    return head


@pytest.fixture
def ingested(store: KnowledgeStore, docs: Path) -> KnowledgeStore:
    store.ingest(docs)
    (docs / "keys.md").write_text("Keys rotate monthly now, with a one day overlap.\n")
    (docs / "backup.txt").unlink()
    store.ingest(docs)  # segments g000001, g000002 and a tombstone file of g000001
    return store


def rewrite_json(path: Path, edit: Callable[[dict], None]) -> bytes:
    data = json.loads(path.read_text())
    edit(data)
    raw = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    path.write_bytes(raw)
    return raw


def flip(path: Path, old: bytes = b"", new: bytes = b"") -> None:
    data = path.read_bytes()
    if old:
        path.write_bytes(data.replace(old, new))
    else:
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])


def new_commit_then_edit(store: KnowledgeStore, docs: Path, edit: Callable[[], None]) -> str:
    """Ingest a new document (not pushed), then recommit it by hand with ``edit`` applied."""
    good = store.repo.head()
    write_docs(docs, {"pelican.md": "Pelicans dive for fish along the harbour wall at dawn.\n"})
    store.ingest(docs, push=False)
    store.repo.run("reset", "-q", "--soft", str(good))
    edit()
    return commit_all(store)


def assert_both_refuse(store: KnowledgeStore, bad: str, good: str, match: str) -> None:
    """The incremental check refuses ``bad`` with the same kind of message as the full one."""
    assert store.repo.run("rev-parse", f"{bad}~1") == good
    with pytest.raises(IntegrityError, match=match):
        load_snapshot(store.repo, bad)
    with pytest.raises(IntegrityError, match=match):
        verify_commit(store.repo, bad, base=good)


def _defect(name: str, match: str):
    def mark(fn: Callable[[KnowledgeStore, Path], None]):
        return pytest.param(fn, match, id=name)

    return mark


def _seg_of(store: KnowledgeStore, doc: str) -> str:
    return ledger_entry(store.root, doc)["segment"]


def _forge_ledger_consistently(
    store: KnowledgeStore, doc: str, edit: Callable[[dict], None]
) -> None:
    edit_ledger_entry(store.root, doc, edit, consistent=True)


def _retombstone_dead_chunk(store: KnowledgeStore) -> None:
    """A new tombstone file for a chunk of g000001 that base had already tombstoned."""
    manifest = json.loads((store.root / "manifest.json").read_text())
    seg = next(s for s in manifest["segments"] if s["name"] == "g000001")
    dead = json.loads((store.root / seg["tombstones"][0]["path"]).read_text())
    raw = json.dumps(dead[:1]).encode()
    path = "index/g000001.del.g000009.json"
    (store.root / path).write_bytes(raw)
    ref = {"path": path, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw), "count": 1}
    seg["tombstones"].append(ref)
    manifest["live_vectors"] -= 1
    (store.root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))


DEFECTS = [
    _defect("flipped-byte-old-segment", r"g000001\.faiss: sha256 mismatch")(
        lambda s, d: flip(s.root / "index" / "g000001.faiss")
    ),
    _defect("flipped-byte-doc", r"docs/guide/vpn\.md: sha256 mismatch")(
        lambda s, d: flip(s.root / "docs" / "guide" / "vpn.md", b"VPN", b"VPX")
    ),
    _defect("missing-segment", r"index file missing: index/g000002\.jsonl")(
        lambda s, d: (s.root / "index" / "g000002.jsonl").unlink()
    ),
    _defect("extra-index-file", "not in manifest")(
        lambda s, d: (s.root / "index" / "g000009.faiss").write_bytes(b"junk")
    ),
    _defect("ledger-mismatch", LEDGER_MISMATCH)(
        lambda s, d: edit_ledger_entry(s.root, "keys.md", lambda x: x["chunks"].append("0" * 32))
    ),
    _defect("ledger-forged-vectors-not", "not live in the segment")(
        lambda s, d: _forge_ledger_consistently(
            s, "keys.md", lambda x: x["chunks"].append("0" * 32)
        )
    ),
    _defect("ledger-drops-live-chunk", "is in no ledger document")(
        lambda s, d: _forge_ledger_consistently(s, "guide/vpn.md", lambda x: x["chunks"].pop())
    ),
    _defect("doc-not-in-ledger", "document not in ledger: docs/sneaky.md")(
        lambda s, d: (s.root / "docs" / "sneaky.md").write_text("injected")
    ),
    _defect("pickle", "pickle")(
        lambda s, d: (s.root / "index.pkl").write_bytes(pickle.dumps({"a": 1}))
    ),
    _defect("tombstone-dead-chunk", "tombstoned twice")(lambda s, d: _retombstone_dead_chunk(s)),
    _defect("forged-claim-unchanged-segment", "sha256")(
        lambda s, d: rewrite_json(
            s.root / "manifest.json",
            lambda m: m["segments"][0]["faiss"].update(sha256="0" * 64),
        )
    ),
    _defect("forged-vector-count", "vectors")(
        lambda s, d: rewrite_json(
            s.root / "manifest.json",
            lambda m: (
                m["segments"][1].update(vectors=m["segments"][1]["vectors"] + 1),
                m.update(live_vectors=m["live_vectors"] + 1),
            ),
        )
    ),
    _defect("forged-live-total", "live vectors, manifest says")(
        lambda s, d: rewrite_json(
            s.root / "manifest.json", lambda m: m.update(live_vectors=m["live_vectors"] + 1)
        )
    ),
]


@pytest.mark.parametrize(("edit", "match"), DEFECTS)
def test_defect_on_top_of_a_good_base(
    ingested: KnowledgeStore, docs: Path, edit: Callable, match: str
) -> None:
    good = ingested.repo.head()
    assert good is not None
    edit(ingested, docs)
    assert_both_refuse(ingested, commit_all(ingested), good, match)


def _new_segment_file(store: KnowledgeStore) -> Path:
    return store.root / "index" / f"{_seg_of(store, 'pelican.md')}.faiss"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: flip(_new_segment_file(s)), r"g000003\.faiss: sha256 mismatch"),
        (
            lambda s: flip(s.root / "docs" / "pelican.md", b"Pelicans", b"Pelicanz"),
            r"docs/pelican\.md: sha256 mismatch",
        ),
        (lambda s: (s.root / "index" / "g000003.jsonl").unlink(), "index file missing"),
    ],
    ids=["flipped-byte-new-segment", "flipped-byte-new-doc", "missing-new-segment"],
)
def test_defect_in_what_the_commit_adds(
    ingested: KnowledgeStore, docs: Path, edit: Callable, match: str
) -> None:
    good = ingested.repo.head()
    assert good is not None
    bad = new_commit_then_edit(ingested, docs, lambda: edit(ingested))
    assert_both_refuse(ingested, bad, good, match)


def test_tombstoning_a_live_chunk_left_in_the_ledger(ingested: KnowledgeStore) -> None:
    good = ingested.repo.head()
    assert good is not None
    manifest = json.loads((ingested.root / "manifest.json").read_text())
    seg = next(s for s in manifest["segments"] if s["name"] == _seg_of(ingested, "keys.md"))
    live = ledger_entry(ingested.root, "keys.md")
    raw = json.dumps(live["chunks"][:1]).encode()
    path = f"index/{seg['name']}.del.g000009.json"
    (ingested.root / path).write_bytes(raw)
    sha = hashlib.sha256(raw).hexdigest()
    seg["tombstones"].append({"path": path, "sha256": sha, "size": len(raw), "count": 1})
    manifest["live_vectors"] -= 1
    (ingested.root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))
    assert_both_refuse(ingested, commit_all(ingested), good, "not live in the segment")


def test_segment_listed_twice_is_refused(ingested: KnowledgeStore) -> None:
    """Its rows would count as live twice: both the full and the incremental check refuse."""
    good = ingested.repo.head()

    def twice(m: dict) -> None:
        seg = next(s for s in m["segments"] if s["name"] == "g000002")
        m["segments"].append(seg)
        m["live_vectors"] += seg["vectors"] - sum(t["count"] for t in seg["tombstones"])

    rewrite_json(ingested.root / "manifest.json", twice)
    bad = commit_all(ingested)
    for base in (good, None):
        with pytest.raises(IntegrityError, match="twice"):
            verify_commit(ingested.repo, bad, base=base)
    with pytest.raises(IntegrityError, match="twice"):
        load_snapshot(ingested.repo, bad)


def _check_history(store: KnowledgeStore, since: str | None = None) -> int:
    """Verify every commit against each parent, incrementally and fully; return the count."""
    spec = f"{since}..HEAD" if since else "HEAD"
    lines = store.repo.run("rev-list", "--reverse", "--parents", spec).splitlines()
    for line in lines:
        commit, *parents = line.split()
        snap = load_snapshot(store.repo, commit)
        verify_commit(store.repo, commit)  # no base: full
        for parent in parents:
            verify_commit(store.repo, commit, base=parent)
        assert snap.commit == commit
    return len(lines)


def test_good_sequences_pass_and_agree_with_full_verification(
    tmp_path: Path, ingested: KnowledgeStore, docs: Path
) -> None:
    store = ingested
    first = store.repo.run("rev-list", "--max-parents=0", "HEAD")
    write_docs(docs, {"guide/vpn.md": "The VPN now uses a new endpoint; check the MTU first.\n"})
    store.ingest(docs)  # edit
    (docs / "guide" / "oncall.txt").rename(docs / "oncall-moved.txt")
    store.ingest(docs)  # rename
    (docs / "keys.md").unlink()
    store.ingest(docs)  # delete
    rollback(store, first)  # a merge-like commit: second parent is the target
    assert store.repo.run("rev-list", "--parents", "-n1", "HEAD").count(" ") == 2
    compact(store, force=True)
    (store.root / "kb.toml").write_text(
        StoreConfig(model="fake:32", chunk_size=40, chunk_overlap=5, hub=store.config.hub).to_toml()
    )
    store = KnowledgeStore(store.root)
    write_docs(docs, {"late.md": "A late document about harbour pelicans.\n"})
    store.ingest(docs)  # model change: everything re-embedded
    assert _check_history(store) == 8


def test_unchanged_segments_are_not_read(ingested: KnowledgeStore, docs: Path) -> None:
    """Trust is real: a base segment whose blob is gone from the repo is never needed."""
    store = ingested
    base = store.repo.head()
    write_docs(docs, {"pelican.md": "Pelicans dive for fish along the harbour wall at dawn.\n"})
    head = store.ingest(docs, push=False).commit
    blob = store.repo.run("rev-parse", f"{head}:index/g000001.jsonl")
    loose = store.root / ".git" / "objects" / blob[:2] / blob[2:]
    assert loose.exists()
    loose.unlink()
    verify_commit(store.repo, head, base=base)  # g000001 unchanged: trusted, not read
    with pytest.raises(GitError, match="missing"):
        verify_commit(store.repo, head)  # full verification needs it


def test_base_that_is_not_an_ancestor_means_a_full_check(ingested: KnowledgeStore) -> None:
    store = ingested
    older, newer = store.repo.run("rev-list", "HEAD").split()[::-1][:2]
    verify_commit(store.repo, older, base=newer)  # not an ancestor: checked in full, passes
    flip(store.root / "index" / "g000001.faiss")
    bad = commit_all(store)
    side = store.repo.run("commit-tree", f"{newer}^{{tree}}", "-m", "side", "-p", older)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        verify_commit(store.repo, bad, base=side)


# -- end to end: a hub with the hooks installed, plain git push ----------------------------
def _push(store: KnowledgeStore) -> tuple[int, str]:
    proc = store.repo._exec(["push", "hub", "HEAD:refs/heads/main"])
    return proc.returncode, proc.stderr.decode()


def test_hub_refuses_bad_pushes_on_a_good_history(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    hub_hooks.install(hub)
    assert store.ingest(docs).pushed  # new ref: full verification
    write_docs(docs, {"keys.md": "Keys rotate monthly now.\n"})
    good = store.ingest(docs)
    assert good.pushed  # incremental against the hub's branch
    for edit, match in [
        (lambda: flip(store.root / "index" / "g000001.faiss"), "sha256 mismatch"),
        (lambda: flip(store.root / "docs" / "guide" / "vpn.md", b"VPN", b"VPX"), "sha256"),
        (
            lambda: _forge_ledger_consistently(
                store, "keys.md", lambda x: x["chunks"].append("0" * 32)
            ),
            "not live in the segment",
        ),
    ]:
        edit()
        commit_all(store)
        code, err = _push(store)
        assert code != 0 and "REFUSED" in err and "fails verification" in err, err
        assert match in err, err
        assert GitRepo(hub).rev_parse("main") == good.commit  # the hub did not move
        store.repo.run("reset", "-q", "--hard", good.commit)
    # several commits in one push, each checked against the one before it
    write_docs(docs, {"a.md": "Apples ripen in the autumn sun.\n"})
    store.ingest(docs, push=False)
    write_docs(docs, {"b.md": "Bees carry pollen between the apple trees.\n"})
    last = store.ingest(docs, push=False).commit
    code, err = _push(store)
    assert code == 0, err
    assert GitRepo(hub).rev_parse("main") == last


def test_hub_refuses_a_bad_commit_hidden_under_a_good_one(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    hub_hooks.install(hub)
    good = store.ingest(docs).commit
    flip(store.root / "index" / "g000001.faiss")
    bad = commit_all(store, "corrupt")
    store.repo.run("checkout", good, "--", "index")
    top = commit_all(store, "restore")
    load_snapshot(store.repo, top)  # the tip itself is fine
    code, err = _push(store)
    assert code != 0 and f"commit {bad[:12]} fails verification" in err, err
    assert GitRepo(hub).rev_parse("main") == good


# -- a base that is not an ancestor (rollback, reading an old revision) --------------------
def test_any_base_trusts_shared_files_and_revives_dropped_tombstones(
    ingested: KnowledgeStore,
) -> None:
    """An older commit checked against a newer one: the newer one's tombstones are dropped."""
    store = ingested
    older, newer = store.repo.run("rev-list", "--reverse", "HEAD").split()
    verified = verify_commit(store.repo, older, base=newer, any_base=True)
    assert verified.commit == older and verified.ledger == load_snapshot(store.repo, older).ledger


def test_any_base_refuses_a_dropped_tombstone_the_ledger_still_drops(
    ingested: KnowledgeStore,
) -> None:
    """Dropping a tombstone revives its rows: a ledger that does not list them is refused."""
    store = ingested
    base = store.repo.head()
    manifest = json.loads((store.root / "manifest.json").read_text())
    seg = next(s for s in manifest["segments"] if s["name"] == "g000001")
    assert seg["tombstones"]
    for ref in seg["tombstones"]:
        manifest["live_vectors"] += ref["count"]
        (store.root / ref["path"]).unlink()
    seg["tombstones"] = []
    (store.root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))
    bad = commit_all(store)
    with pytest.raises(IntegrityError, match="is in no ledger document"):
        load_snapshot(store.repo, bad)
    with pytest.raises(IntegrityError, match="is in no ledger document"):
        verify_commit(store.repo, bad, base=base, any_base=True)

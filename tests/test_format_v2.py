"""Store format 2: sharded ledger, migration from format 1, mixed releases during an upgrade."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbgit import IntegrityError, KnowledgeStore
from kbgit.cli import main
from kbgit.format.snapshot import load_snapshot
from kbgit.format.verify import verify_commit
from kbgit.history.migrate import migrate
from kbgit.serving.follower import REFUSED, UPDATED, Follower
from kbgit.serving.service import KnowledgeService

from . import old_release
from .conftest import write_docs
from .ledger_helpers import LEDGER_MISMATCH, edit_ledger_entry

TIDES = {"tides.md": "Spring tides follow the new and full moon along the harbour.\n"}


@pytest.fixture(scope="session")
def old_kbgit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last release that reads only format 1, extracted from this repository's history."""
    return old_release.extract(tmp_path_factory.mktemp("old-release"))


def ledger_root(store: KnowledgeStore) -> dict:
    return json.loads((store.root / "ledger.json").read_text())


def changed_paths(store: KnowledgeStore, a: str = "HEAD~1", b: str = "HEAD") -> set[str]:
    return set(store.repo.run("diff", "--name-only", a, b).split())


def shard_of(path: str) -> str:
    return f"ledger/{hashlib.sha256(path.encode()).hexdigest()[:2]}.json"


def commit_all(store: KnowledgeStore) -> str:
    store.repo.run("add", "--all")
    store.repo.run("-c", "user.name=op", "-c", "user.email=op@x", "commit", "-q", "-m", "edit")
    head = store.repo.head()
    assert head is not None
    return head


def test_new_store_is_format_2_and_a_commit_rewrites_only_changed_shards(
    store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    root = ledger_root(store)
    assert root["format"] == 2 and root["documents"] == 4
    files = {f"ledger/{p.name}" for p in (store.root / "ledger").iterdir()}
    assert files == {f"ledger/{k}.json" for k in root["shards"]}
    assert files == {
        shard_of(p) for p in ("keys.md", "backup.txt", "guide/vpn.md", "guide/oncall.txt")
    }
    write_docs(docs, {"keys.md": "Keys rotate monthly now, with a one day overlap.\n"})
    store.ingest(docs)
    ledger_files = {p for p in changed_paths(store) if p.startswith("ledger")}
    assert ledger_files == {"ledger.json", shard_of("keys.md")}
    assert store.verify().vectors == ledger_root(store)["chunks"]


def test_a_shard_loses_its_last_document_and_its_file(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    (docs / "backup.txt").unlink()
    store.ingest(docs)
    assert not (store.root / shard_of("backup.txt")).exists()
    assert shard_of("backup.txt") in changed_paths(store)
    assert ledger_root(store)["documents"] == 3
    store.verify()


def test_format_1_store_is_served_kept_in_format_1_then_migrated(
    store: KnowledgeStore, docs: Path, old_kbgit: Path
) -> None:
    proc = old_release.cli(old_kbgit, "ingest", str(store.root), str(docs))
    assert proc.returncode == 0, proc.stderr
    assert ledger_root(store)["format"] == 1
    first = store.repo.head()
    assert first is not None
    write_docs(docs, TIDES)
    store.ingest(docs)  # this release keeps a format 1 store in format 1 (old standbys follow)
    assert ledger_root(store)["format"] == 1 and not (store.root / "ledger").exists()
    before = store.query("spring tides moon", k=3)
    v1 = store.repo.head()
    assert v1 is not None
    out = CliRunner().invoke(main, ["migrate", str(store.root)])
    assert out.exit_code == 0, out.output
    assert "migrated format 1 -> 2" in out.output and "pushed" in out.output
    assert ledger_root(store)["format"] == 2
    changed = changed_paths(store, v1)
    assert changed >= {"ledger.json", "manifest.json"}
    assert all(p.startswith("ledger") or p == "manifest.json" for p in changed)  # same blobs
    after = store.query("spring tides moon", k=3)
    assert after.hits == before.hits and after.commit != before.commit
    verify_commit(store.repo, "HEAD", base=v1)  # the hub's incremental check accepts it
    for commit in (first, v1):  # history stays readable: format 1 commits verify as before
        assert load_snapshot(store.repo, commit).ledger.format == 1
    assert store.verify(first).ledger.format == 1 and store.verify().ledger.format == 2
    again = migrate(store)
    assert again.noop and again.commit is None


# -- rolling upgrade: a standby of the old release next to one of this release -------------
OLD_STANDBY = """
import json, sys
from kbgit.serving.follower import Follower
from kbgit.serving.service import KnowledgeService
svc = KnowledgeService("default", sys.argv[1], role="standby")
follower = Follower(svc, hub=sys.argv[2], interval=0.05, backoff_max=0.4)
follower.open()
for line in sys.stdin:
    result = follower.sync_once()
    hits = svc.query(line.strip(), k=1).hits if svc.ready else []
    print(json.dumps({
        "status": result.status, "serving": svc.commit,
        "refused": [[r.commit, r.reason] for r in svc.sync.refused],
        "top": hits[0].source if hits else None,
    }), flush=True)
"""


def _ask(proc, text: str) -> dict:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "old standby exited"
    return json.loads(line)


def test_rolling_upgrade_old_standby_refuses_format_2_visibly_and_keeps_serving(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, old_kbgit: Path
) -> None:
    proc = old_release.cli(old_kbgit, "ingest", str(store.root), str(docs))
    assert proc.returncode == 0, proc.stderr
    old = old_release.script(old_kbgit, OLD_STANDBY, str(tmp_path / "old-standby"), str(hub))
    new = Follower(KnowledgeService("default", tmp_path / "new-standby"), hub=str(hub))
    new.open()
    try:
        write_docs(docs, TIDES)
        store.ingest(docs)  # the upgraded primary still writes format 1
        v1 = store.repo.head()
        seen = _ask(old, "spring tides moon")
        assert seen["status"] == UPDATED and seen["serving"] == v1 and seen["top"] == "tides.md"
        assert new.sync_once().status == UPDATED and new.service.commit == v1
        res = migrate(store)
        assert res.pushed and res.commit is not None
        seen = _ask(old, "spring tides moon")  # refused, visibly, and still answering
        assert seen["status"] == REFUSED and seen["serving"] == v1 and seen["top"] == "tides.md"
        assert seen["refused"][0][0] == res.commit
        assert "format 2 is not supported" in seen["refused"][0][1]
        assert new.sync_once().status == UPDATED and new.service.commit == res.commit
        hit = new.service.query("spring tides moon", k=1).hits[0]
        assert hit.source == "tides.md"
    finally:
        old.kill()
        old.wait()
    verified = old_release.cli(old_kbgit, "verify", str(store.root))
    assert verified.returncode != 0 and "format 2 is not supported" in verified.stderr
    assert "Traceback" not in verified.stderr
    # the old standby's host is upgraded: this release picks the same clone up and serves v2
    upgraded = Follower(KnowledgeService("default", tmp_path / "old-standby"), hub=str(hub))
    upgraded.open()
    assert upgraded.sync_once().status in (UPDATED, "ok")
    assert upgraded.service.commit == res.commit


# -- verify: a ledger shard that disagrees with the root, the manifest or its paths ------
def _extra_shard(store: KnowledgeStore) -> None:
    (store.root / "ledger" / "zz.json").write_text("{}\n")


def _drop_shard(store: KnowledgeStore) -> None:
    (store.root / shard_of("keys.md")).unlink()


def _misplace(store: KnowledgeStore) -> None:
    """Move a document's entry into another shard, fixing every checksum on the way."""
    src, dst = shard_of("keys.md"), shard_of("backup.txt")
    a = json.loads((store.root / src).read_text())
    b = json.loads((store.root / dst).read_text())
    b["keys.md"] = a.pop("keys.md")
    root = ledger_root(store)
    for rel, data in ((src, a), (dst, b)):
        raw = (json.dumps(data, sort_keys=True) + "\n").encode()
        (store.root / rel).write_bytes(raw)
        chunks = sum(len(d["chunks"]) for d in data.values())
        root["shards"][Path(rel).stem] = {
            "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
            "documents": len(data), "chunks": chunks,
        }  # fmt: skip
    root_raw = (json.dumps(root, sort_keys=True, indent=1) + "\n").encode()
    (store.root / "ledger.json").write_bytes(root_raw)
    manifest = json.loads((store.root / "manifest.json").read_text())
    manifest["ledger_sha256"] = hashlib.sha256(root_raw).hexdigest()
    (store.root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))


def _miscount(store: KnowledgeStore) -> None:
    """The root claims one document more for a shard (totals kept consistent)."""
    root = ledger_root(store)
    root["shards"][Path(shard_of("keys.md")).stem]["documents"] += 1
    root["documents"] += 1
    raw = (json.dumps(root, sort_keys=True, indent=1) + "\n").encode()
    (store.root / "ledger.json").write_bytes(raw)
    manifest = json.loads((store.root / "manifest.json").read_text())
    manifest["ledger_sha256"] = hashlib.sha256(raw).hexdigest()
    (store.root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))


SHARD_DEFECTS = [
    pytest.param(
        lambda s: edit_ledger_entry(s.root, "keys.md", lambda d: d["chunks"].append("0" * 32)),
        LEDGER_MISMATCH,
        id="shard-edited-root-not",
    ),
    pytest.param(
        lambda s: edit_ledger_entry(
            s.root, "keys.md", lambda d: d["chunks"].append("0" * 32), consistent=True
        ),
        "not live in the segment",
        id="shard-forged-consistently",
    ),
    pytest.param(_extra_shard, r"ledger shard not in ledger\.json: ledger/zz\.json", id="extra"),
    pytest.param(_drop_shard, r"ledger shard missing: ledger/", id="missing"),
    pytest.param(_misplace, r"keys\.md belongs in shard", id="misplaced-document"),
    pytest.param(
        _miscount,
        r"1 documents .* ledger\.json says 2|ledger/.*: ledger\.json claims do not match",
        id="miscounted",
    ),
]


@pytest.mark.parametrize(("edit", "match"), SHARD_DEFECTS)
def test_verify_catches_a_ledger_shard_that_disagrees(
    store: KnowledgeStore, docs: Path, edit: Callable[[KnowledgeStore], None], match: str
) -> None:
    store.ingest(docs)
    good = store.repo.head()
    assert good is not None
    edit(store)
    bad = commit_all(store)
    with pytest.raises(IntegrityError, match=match):
        load_snapshot(store.repo, bad)
    with pytest.raises(IntegrityError, match=match):
        verify_commit(store.repo, bad, base=good)


def test_rollback_across_the_migration_restores_format_1(
    store: KnowledgeStore, docs: Path, old_kbgit: Path
) -> None:
    proc = old_release.cli(old_kbgit, "ingest", str(store.root), str(docs))
    assert proc.returncode == 0, proc.stderr
    v1 = store.repo.head()
    assert v1 is not None
    migrate(store)
    write_docs(docs, TIDES)
    store.ingest(docs)  # a format 2 commit with a new shard
    assert store.query("spring tides moon", k=1).hits[0].source == "tides.md"
    from kbgit.history.rollback import rollback

    res = rollback(store, v1)
    assert res.commit == store.repo.head()
    assert ledger_root(store)["format"] == 1 and not (store.root / "ledger").exists()
    assert store.verify().ledger.format == 1
    assert all(h.source != "tides.md" for h in store.query("spring tides moon", k=3).hits)
    assert migrate(store).format_after == 2 and store.verify().ledger.format == 2

"""Fencing: the hub's refs/kbgit/writer names the one writer; a fenced primary neither
writes nor answers as the primary."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.errors import FencedError, NotReadyError
from kbgit.fencing import WRITER_REF, check, claim, read_record, writer_id
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.failover import promote, rejoin
from kbgit.serving.follower import Follower
from kbgit.serving.service import KnowledgeService
from server import create_app

from . import hostile
from .conftest import write_docs
from .test_promote import _replica


def _hub_record(hub: Path):
    repo = GitRepo(hub)
    return read_record(repo, repo.rev_parse(WRITER_REF))


def test_first_ingest_claims_the_writer_role(hub, store: KnowledgeStore, docs) -> None:
    assert _hub_record(hub) is None
    store.ingest(docs)
    record = _hub_record(hub)
    assert record is not None and record.epoch == 1 and record.writer == writer_id(store.repo)
    assert store.repo.rev_parse(WRITER_REF) == record.commit
    write_docs(docs, {"more.md": "another page about pagers"})
    store.ingest(docs)
    assert _hub_record(hub) == record  # later writes keep the record as it is


def test_promote_takes_the_next_epoch_and_fences_the_old_primary(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    res = promote(tmp_path / "replica")
    assert res.epoch == 2 and not res.claim_pending
    record = _hub_record(hub)
    assert record.writer == writer_id(GitRepo(tmp_path / "replica")) != writer_id(store.repo)
    hub_head = GitRepo(hub).rev_parse("main")
    write_docs(docs, {"late.md": "written on the old primary after the promotion"})
    with pytest.raises(FencedError, match="fenced") as err:
        store.ingest(docs)
    assert "kbgit rejoin" in (err.value.hint or "")
    assert GitRepo(hub).rev_parse("main") == hub_head and store.repo.head() == hub_head
    status = check(store.repo, "hub")
    assert status.held is False and status.hub == record


def test_a_write_racing_the_promotion_does_not_land(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    write_docs(docs, {"race.md": "committed just before the promotion, pushed just after"})
    local = store.ingest(docs, push=False).commit  # the check passed: it was the writer
    hub_head = GitRepo(hub).rev_parse("main")
    promote(tmp_path / "replica")
    with pytest.raises(FencedError, match="did not land"):
        store.writer.push()  # atomic with the leased writer ref: refused as a whole
    assert GitRepo(hub).rev_parse("main") == hub_head != local
    new = KnowledgeStore(tmp_path / "replica")
    write_docs(tmp_path / "new", {"tides.md": "Tides follow the moon."})
    assert new.ingest(tmp_path / "new").pushed  # the new writer is not disturbed


def test_an_offline_claim_loses_to_a_later_promotion(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub, "a")
    _replica(tmp_path, hub, "b")
    pending = claim(GitRepo(tmp_path / "b"), "hub", reachable=False)  # as if the hub were down
    assert pending.epoch == 2 and _hub_record(hub).epoch == 1
    assert promote(tmp_path / "a").epoch == 2  # reached the hub first
    status = check(GitRepo(tmp_path / "b"), "hub")
    assert status.held is False and status.hub.writer == writer_id(GitRepo(tmp_path / "a"))


def test_an_offline_promotion_publishes_its_claim_on_first_write(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    hub.rename(tmp_path / "hub-away")
    res = promote(tmp_path / "replica")
    assert not res.hub_reachable and res.claim_pending and res.epoch == 2
    (tmp_path / "hub-away").rename(hub)
    new = KnowledgeStore(tmp_path / "replica")
    write_docs(tmp_path / "new", {"tides.md": "Tides follow the moon."})
    assert new.ingest(tmp_path / "new").pushed
    assert _hub_record(hub).writer == writer_id(new.repo)
    with pytest.raises(FencedError):
        store.ingest(docs)


def test_rejoin_drops_the_claim_and_a_second_promotion_moves_the_role_back(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    promote(tmp_path / "replica")
    rejoin(store.root)
    assert store.repo.rev_parse(WRITER_REF) is None
    res = promote(store.root)  # the old primary, now a replica, becomes the writer again
    assert res.epoch == 3 and _hub_record(hub).writer == writer_id(store.repo)
    with pytest.raises(FencedError):
        KnowledgeStore(tmp_path / "replica").ingest(docs)


def _served_primary(root: Path) -> tuple[KnowledgeService, Follower]:
    service = KnowledgeService("default", root)
    follower = Follower(service)  # a primary: follows its own HEAD
    follower.writer_check_every = 0  # every sync asks the hub
    follower.open()
    return service, follower


def test_a_fenced_primary_is_not_ready_and_health_says_so(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    service, follower = _served_primary(store.root)
    assert service.ready and service.sync.role == "primary" and service.sync.fenced is None
    _replica(tmp_path, hub)
    promote(tmp_path / "replica")
    follower.sync_once()  # the next sync sees the new record
    assert not service.ready and service.sync.role == "fenced"
    with pytest.raises(NotReadyError, match="fenced"):
        service.query("rotate keys")
    client = create_app_client(service, follower)
    resp = client.get("/health")
    body = resp.get_json()
    assert resp.status_code == 503 and body["role"] == "fenced"
    assert body["sync"]["fenced"] and body["sync"]["writer"]["epoch"] == 2
    assert body["sync"]["writer"]["held"] is False
    assert client.get("/ready").status_code == 503
    assert client.get("/query", query_string={"q": "keys"}).status_code == 503


def test_a_restarted_old_primary_is_fenced_before_it_answers(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    promote(tmp_path / "replica")
    service, _follower = _served_primary(store.root)  # `kbgit serve OLD` after the promotion
    assert service.current is not None and not service.ready
    assert service.sync.fenced and "epoch 2" in service.sync.fenced


def create_app_client(service: KnowledgeService, follower: Follower):
    """Return a Flask test client of an app serving ``service``."""
    from kbgit.serving.service import ServiceRegistry

    registry = ServiceRegistry()
    registry.add(service)
    return create_app(registry, followers={service.name: follower}).test_client()


def _forge_record(clone: Path, parent: str | None, message: str, tree: str | None = None) -> str:
    """Write a writer-record commit with plain git, as a pusher could."""
    empty = hostile.git(clone, "hash-object", "-t", "tree", "-w", "/dev/null")
    args = ["commit-tree", tree or empty, *(["-p", parent] if parent else []), "-m", message]
    return hostile.git(clone, *args)


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("junk\n\nnot a record at all", "not a kbgit writer record"),
        ("x\n\nKbgit-Writer: eve\nKbgit-Epoch: 1\n", "epoch 1 after epoch 1"),  # not forward
        ("x\n\nKbgit-Writer: eve\nKbgit-Epoch: abc\n", "not a kbgit writer record"),
    ],
)
def test_the_hub_refuses_a_writer_record_that_is_not_the_next_epoch(
    tmp_path, hub, store: KnowledgeStore, docs, message: str, why: str
) -> None:
    hub_hooks.install(hub)
    store.ingest(docs)
    before = _hub_record(hub)
    clone = hostile.attacker(hub, tmp_path / "eve")
    hostile.git(clone, "fetch", "-q", "origin", f"{WRITER_REF}:{WRITER_REF}")
    bad = _forge_record(clone, before.commit, message)
    code, err = hostile.push_ref(clone, bad, WRITER_REF)
    assert code != 0 and why in err and "Traceback" not in err
    assert _hub_record(hub) == before
    write_docs(docs, {"after.md": "the writer still writes"})
    assert store.ingest(docs).pushed  # and a promotion still works
    _replica(tmp_path, hub)
    assert promote(tmp_path / "replica").epoch == before.epoch + 1


def test_the_hub_refuses_other_refs_under_refs_kbgit(tmp_path, hub, store, docs) -> None:
    # every store fetches refs/kbgit/*: anything a pusher put there reached every replica
    hub_hooks.install(hub)
    store.ingest(docs)
    clone = hostile.attacker(hub, tmp_path / "eve")
    junk = hostile.blob(clone, b"x" * 100_000)
    tree = hostile.git(clone, "mktree", input=f"100644 blob {junk}\tjunk\n".encode())
    commit = _forge_record(clone, None, "junk", tree)
    code, err = hostile.push_ref(clone, commit, "refs/kbgit/junk")
    assert code != 0 and "refs/kbgit/junk" in err
    assert GitRepo(hub).rev_parse("refs/kbgit/junk") is None
    # a record with files in its tree is refused too
    hostile.git(clone, "fetch", "-q", "origin", f"{WRITER_REF}:{WRITER_REF}")
    parent = _hub_record(hub).commit
    msg = "x\n\nKbgit-Writer: eve\nKbgit-Epoch: 2\n"
    code, err = hostile.push_ref(clone, _forge_record(clone, parent, msg, tree), WRITER_REF)
    assert code != 0 and "empty tree" in err


def test_a_promotion_by_plain_git_with_the_next_epoch_is_accepted(
    tmp_path, hub, store, docs
) -> None:
    hub_hooks.install(hub)
    store.ingest(docs)
    before = _hub_record(hub)
    clone = hostile.attacker(hub, tmp_path / "eve")
    msg = f"x\n\nKbgit-Writer: eve\nKbgit-Epoch: {before.epoch + 1}\n"
    code, err = hostile.push_ref(clone, _forge_record(clone, before.commit, msg), WRITER_REF)
    assert code == 0, err  # what `kbgit promote` pushes: the hub cannot tell them apart
    with pytest.raises(FencedError):
        store.ingest(docs)

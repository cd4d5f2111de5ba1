"""The follower, driven one sync_once() at a time against real hubs and clones."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.errors import GitError, NotReadyError
from kbgit.gitrepo import GitRepo
from kbgit.serving.follower import DIVERGED, ERROR, OK, REFUSED, UPDATED, Follower
from kbgit.serving.service import KnowledgeService

from .conftest import write_docs
from .serve_helpers import corrupt_commit, push_raw, restore_commit


def _standby(tmp_path: Path, hub: Path, name: str = "replica", **kw) -> Follower:
    svc = KnowledgeService("default", tmp_path / name)
    follower = Follower(svc, hub=str(hub), interval=0.05, backoff_max=0.4, **kw)
    follower.open()
    return follower


def _answer(follower: Follower, text: str) -> tuple[str, list[str]]:
    res = follower.service.query(text, k=3)
    return res.commit, [h.source for h in res.hits]


def test_standby_clones_verifies_and_follows(tmp_path, hub, store: KnowledgeStore, docs) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    assert not follower.service.ready  # nothing served before the first verified commit
    first = follower.sync_once()
    assert first.status == UPDATED and first.commit == store.repo.head()
    assert follower.repo.head() == store.repo.head()  # local branch fast-forwarded
    assert (tmp_path / "replica" / "docs" / "keys.md").exists()  # and the working tree
    assert follower.sync_once().status == OK

    write_docs(docs, {"tides.md": "Spring tides follow the new and full moon."})
    store.ingest(docs)
    result = follower.sync_once()
    assert result.status == UPDATED
    commit, sources = _answer(follower, "spring tides moon")
    assert commit == store.repo.head() and sources[0] == "tides.md"
    assert follower.service.sync.lag_commits == 0 and follower.service.lag_seconds() == 0


def test_empty_hub_is_not_an_error(tmp_path, hub) -> None:
    follower = _standby(tmp_path, hub)
    assert follower.sync_once().status == OK
    with pytest.raises(NotReadyError):
        follower.service.query("anything")


def test_bad_commit_is_refused_and_a_later_good_one_served(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    good = store.ingest(docs).commit
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    bad = corrupt_commit(store)
    push_raw(store)  # no hooks on this hub: the bad commit reaches it
    result = follower.sync_once()
    assert result.status == REFUSED and result.upstream == bad
    assert "sha256 mismatch" in result.error
    assert follower.service.commit == good and follower.repo.head() == good
    assert _answer(follower, "rotate keys")[0] == good  # still serving
    st = follower.service.sync
    assert [r.commit for r in st.refused] == [bad] and st.refused_total == 1
    assert st.lag_commits == 1
    assert follower.sync_once().status == REFUSED and st.refused_total == 1  # not re-counted
    assert follower.next_delay(result) > follower.interval  # backing off

    fixed = restore_commit(store, good)
    push_raw(store)
    assert follower.sync_once().status == UPDATED
    assert follower.service.commit == fixed and follower.repo.head() == fixed
    assert follower.service.sync.lag_commits == 0


def test_newest_good_ancestor_is_served_when_the_tip_is_bad(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    write_docs(docs, {"owls.md": "Owls hunt at night over the meadow."})
    middle = store.ingest(docs).commit
    bad = corrupt_commit(store)
    push_raw(store)
    result = follower.sync_once()
    assert result.status == REFUSED and result.upstream == bad
    assert follower.service.commit == middle  # advanced as far as verified commits go
    assert _answer(follower, "owls night")[1][0] == "owls.md"


def test_diverged_replica_refuses_to_move(tmp_path, hub, store: KnowledgeStore, docs) -> None:
    good = store.ingest(docs).commit
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    local = follower.repo
    local.run(
        "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "--allow-empty", "-m", "x"
    )
    mine = local.head()
    write_docs(docs, {"new.md": "A brand new page about lighthouses."})
    store.ingest(docs)
    result = follower.sync_once()
    assert result.status == DIVERGED and "not an ancestor" in result.error
    assert local.head() == mine  # never reset silently
    assert follower.service.commit == good
    assert follower.service.health()["sync"]["diverged"] is True


def test_hub_outage_keeps_serving_and_reports_lag(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    good = store.ingest(docs).commit
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    hub.rename(hub.with_name("hub-away.git"))
    time.sleep(0.3)
    result = follower.sync_once()
    assert result.status == ERROR and "fetch" in result.error
    assert _answer(follower, "rotate keys")[0] == good
    health = follower.service.health()
    assert health["lag"]["seconds"] >= 0.3 and health["sync"]["last_result"] == ERROR
    assert follower.service.sync.failures_in_row == 1
    delays = []
    for _ in range(5):
        delays.append(follower.next_delay(follower.sync_once()))
    assert delays == sorted(delays) and delays[-1] == follower.backoff_max  # capped backoff
    hub.with_name("hub-away.git").rename(hub)
    assert follower.sync_once().status == OK and follower.service.lag_seconds() == 0


def test_restart_resumes_from_the_clone_without_the_hub(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    good = store.ingest(docs).commit
    _standby(tmp_path, hub).sync_once()
    shutil.rmtree(hub)
    again = _standby(tmp_path, hub)  # a restarted process: loads HEAD before any fetch
    assert again.service.ready and again.service.commit == good
    assert again.sync_once().status == ERROR
    assert _answer(again, "backups nightly")[0] == good


@pytest.mark.parametrize("damage", ["objects-gone", "pack-bytes"])
def test_corrupt_clone_is_moved_aside_and_recloned(
    tmp_path, hub, store: KnowledgeStore, docs, damage: str
) -> None:
    good = store.ingest(docs).commit
    _standby(tmp_path, hub).sync_once()
    replica = tmp_path / "replica"
    if damage == "objects-gone":
        shutil.rmtree(replica / ".git" / "objects")
        (replica / ".git" / "objects").mkdir()
    else:  # bytes flipped inside the pack: git can no longer inflate some objects
        follower = _standby(tmp_path, hub, name="replica")
        follower.repo.run("repack", "-adq")
        (pack,) = (replica / ".git" / "objects" / "pack").glob("*.pack")
        data = bytearray(pack.read_bytes())
        for i in range(64, len(data) - 64, 97):
            data[i] ^= 0x5A
        pack.chmod(0o644)
        pack.write_bytes(bytes(data))
    follower = _standby(tmp_path, hub)
    assert list(tmp_path.glob("replica.corrupt-*")), "the damaged clone is kept for inspection"
    assert follower.sync_once().status == UPDATED
    assert follower.service.commit == good


def test_primary_follower_reloads_after_ingest_and_refuses_a_bad_head(
    store: KnowledgeStore, docs
) -> None:
    good = store.ingest(docs).commit
    svc = KnowledgeService("default", store.root)
    follower = Follower(svc, interval=0.05)
    follower.open()
    assert svc.commit == good and follower.sync_once().status == OK
    write_docs(docs, {"kites.md": "Kites fly best in a steady sea breeze."})
    new = store.ingest(docs).commit
    assert follower.sync_once().status == UPDATED and svc.commit == new
    bad = corrupt_commit(store)
    result = follower.sync_once()
    assert result.status == REFUSED and svc.commit == new
    assert svc.sync.refused[0].commit == bad


def test_run_loop_is_woken_early_and_stops(tmp_path, hub, store: KnowledgeStore, docs) -> None:
    store.ingest(docs)
    svc = KnowledgeService("default", tmp_path / "replica")
    follower = Follower(svc, hub=str(hub), interval=30.0, backoff_max=30.0)
    follower.open()
    follower.start()
    try:
        deadline = time.monotonic() + 10
        while not svc.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.commit == store.repo.head()
        write_docs(docs, {"moss.md": "Moss grows on the north side of old oaks."})
        new = store.ingest(docs).commit
        follower.wake()  # what /admin/sync does; the 30 s interval would be far too slow
        deadline = time.monotonic() + 10
        while svc.commit != new and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.commit == new
    finally:
        follower.stop()
    assert not any(t.name.startswith("kbgit-sync") for t in threading.enumerate())


def test_run_loop_follows_on_its_interval_without_a_wake(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    svc = KnowledgeService("default", tmp_path / "replica")
    follower = Follower(svc, hub=str(hub), interval=0.3, backoff_max=1.0)
    follower.open()
    follower.start()
    try:
        deadline = time.monotonic() + 10
        while not svc.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        for n in range(2):  # two commits, each picked up by the scheduled interval alone
            write_docs(docs, {f"tide{n}.md": f"Tide table number {n} for the harbour."})
            new = store.ingest(docs).commit
            deadline = time.monotonic() + 10
            while svc.commit != new and time.monotonic() < deadline:
                time.sleep(0.05)
            assert svc.commit == new
    finally:
        follower.stop()


def _readers_of(path: Path) -> list[int]:
    """Return the pids of this process's ``git cat-file --batch-command`` children on ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"--batch-command" in argv and str(path).encode() in argv:
            found.append(int(entry.name))
    return found


def test_a_standby_reads_objects_through_one_long_lived_git(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    assert follower.sync_once().status == UPDATED
    (reader,) = _readers_of(tmp_path / "replica")
    for n in range(3):  # objects fetched after the reader started are found by it
        write_docs(docs, {f"crane{n}.md": f"Harbour crane number {n} lifts containers."})
        commit = store.ingest(docs).commit
        assert follower.sync_once().status == UPDATED and follower.service.commit == commit
    assert _answer(follower, "harbour crane number 2")[0] == commit
    assert _readers_of(tmp_path / "replica") == [reader]  # the same one process throughout
    follower.repo.close()
    assert _readers_of(tmp_path / "replica") == []


def test_a_missing_object_is_an_error_through_the_long_lived_reader(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    with pytest.raises(GitError, match="missing"):
        follower.repo.read_blobs(["0" * 40])
    assert follower.repo.read_file(follower.service.commit, "no/such/file") is None
    assert follower.repo.rev_parse("f" * 40) is None
    assert follower.service.query("rotate keys", k=1).commit == follower.service.commit


def test_git_maintenance_runs_every_so_many_updates_not_in_each_fetch(
    tmp_path, hub, store: KnowledgeStore, docs, monkeypatch
) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    follower.maintain_every = 3
    trace = tmp_path / "trace2.json"

    def sync() -> str:  # traced: every git process the follower runs, nothing else
        monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
        try:
            return follower.sync_once().status
        finally:
            monkeypatch.delenv("GIT_TRACE2_EVENT")

    def maintenance_runs() -> int:
        events = [json.loads(line) for line in trace.read_text().splitlines()]
        return sum(e["event"] == "start" and "maintenance" in e["argv"] for e in events)

    assert sync() == UPDATED  # update 1: the first clone
    for n in range(4):
        write_docs(docs, {"gull.md": f"Gulls follow the ferry, version {n}."})
        store.ingest(docs)
        assert sync() == UPDATED
        assert maintenance_runs() == (1 if n >= 1 else 0), n  # at update 3, once


def test_has_path_with_and_without_the_long_lived_reader(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    commit = follower.service.commit
    for repo in (follower.repo, GitRepo(tmp_path / "replica")):  # reader, then one-shot git
        assert repo.has_path(commit, "docs") and repo.has_path(commit, "docs/keys.md")
        assert not repo.has_path(commit, "evals") and not repo.has_path(commit, "docs/nope.md")


def test_the_reader_restarts_after_a_repack_deletes_the_packs_it_holds(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    follower = _standby(tmp_path, hub)
    follower.sync_once()
    repo, replica = follower.repo, tmp_path / "replica"
    assert repo.reader is not None
    (first,) = _readers_of(replica)
    write_docs(docs, {"tern.md": "Terns hover, then plunge for sand eels."})
    store.ingest(docs)
    assert follower.sync_once().status == UPDATED  # a new pack: found, no restart
    assert _readers_of(replica) == [first] and repo.reader.started == 1
    repo.run("repack", "-adq")  # every pack replaced: the old ones are deleted
    assert follower.service.query("terns sand eels", k=1).hits[0].source == "tern.md"
    repo.read_blobs(repo.ls_tree(follower.service.commit, ["docs"]).values())
    (second,) = _readers_of(replica)
    assert second != first and repo.reader.started == 2
    deleted = [
        link for link in Path(f"/proc/{second}/fd").iterdir() if "(deleted)" in os.readlink(link)
    ]
    assert deleted == []  # the new process holds no deleted pack open


def test_a_standby_fetches_only_its_branch_and_the_writer_record(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    """A hosted hub runs no kbgit hook: anyone who can push may push other refs.

    A standby (and a primary) must not download them: a 4 MB blob on a junk branch and
    under refs/kbgit/ stays on the hub.
    """
    import subprocess

    store.ingest(docs)
    junk = tmp_path / "junk"
    subprocess.run(["git", "init", "-q", "-b", "junk", str(junk)], check=True)
    (junk / "big.bin").write_bytes(os.urandom(4 << 20))
    subprocess.run(["git", "-C", str(junk), "add", "big.bin"], check=True)
    subprocess.run(
        ["git", "-C", str(junk), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "j"],
        check=True,
    )
    blob = subprocess.run(
        ["git", "-C", str(junk), "rev-parse", "HEAD:big.bin"], capture_output=True, text=True
    ).stdout.strip()
    for ref in ("refs/heads/junk", "refs/heads/main-junk", "refs/kbgit/junk"):
        subprocess.run(["git", "-C", str(junk), "push", "-q", str(hub), f"HEAD:{ref}"], check=True)
    follower = _standby(tmp_path, hub)
    assert follower.sync_once().status == UPDATED
    assert follower.repo.head() == store.repo.head()
    missing = subprocess.run(
        ["git", "-C", str(tmp_path / "replica"), "cat-file", "-e", blob], capture_output=True
    )
    assert missing.returncode != 0, "the junk blob reached the standby"
    store.pull()  # the writer's own fetch takes the branch and the writer record only
    assert subprocess.run(["git", "-C", str(store.root), "cat-file", "-e", blob]).returncode != 0
    # a new store's clone, over a transport (a plain path hard-links the hub's objects)
    clone = GitRepo.clone(f"file://{hub}", tmp_path / "clone", "main", "hub")
    assert clone.head() == store.repo.head()
    gone = subprocess.run(["git", "-C", str(tmp_path / "clone"), "cat-file", "-e", blob])
    assert gone.returncode != 0


def test_a_recloned_replica_keeps_the_next_tier_it_wakes(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    from kbgit.hub.hooks import install_chain, notify_targets

    store.ingest(docs)
    _standby(tmp_path, hub).sync_once()
    replica = tmp_path / "replica"
    install_chain(replica, notify=["http://127.0.0.1:9/"], token="s3cret")
    shutil.rmtree(replica / ".git" / "objects")  # damaged: moved aside and cloned again
    (replica / ".git" / "objects").mkdir()
    follower = _standby(tmp_path, hub)
    assert list(tmp_path.glob("replica.corrupt-*"))
    assert follower.sync_once().status == UPDATED
    # without this the second tier silently fell back to polling
    assert notify_targets(str(replica / ".git"), {}) == (["http://127.0.0.1:9"], "s3cret")
    assert (replica / ".git" / "config").stat().st_mode & 0o077 == 0  # holds the token

"""One writer at a time, the hub's history is never overwritten, kill -9 is recoverable."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kbgit import HubMovedError, KnowledgeStore, LockedError
from kbgit.gitrepo import GitRepo

from .conftest import FAKE_CONFIG, share_writer_claim, write_docs

KBGIT = [sys.executable, "-m", "kbgit"]


def run_kbgit(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KBGIT, *args], capture_output=True, text=True, timeout=120, **kw)


def many_docs(root: Path, n: int, tag: str = "") -> Path:
    return write_docs(
        root,
        {
            f"d{i:04d}.md": f"# Document {i} {tag}\n\n"
            + " ".join(f"word{(i * 7 + j) % 997} topic{i % 13}" for j in range(400))
            for i in range(n)
        },
    )


def test_second_writer_fails_fast_with_no_wait(store: KnowledgeStore, docs: Path) -> None:
    with store.lock():
        proc = run_kbgit("ingest", str(store.root), str(docs), "--no-wait")
        assert proc.returncode == 1
        assert "locked by another writer" in proc.stderr and "Traceback" not in proc.stderr
        with pytest.raises(LockedError):
            KnowledgeStore(store.root).ingest(docs, wait=False)
    assert store.repo.head() is None


def test_second_writer_waits_then_completes(store: KnowledgeStore, docs: Path) -> None:
    lock = store.lock()
    proc = subprocess.Popen(
        [*KBGIT, "ingest", str(store.root), str(docs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        # release only once it says it waits (a loaded box can take seconds to get there)
        deadline = time.monotonic() + 60
        while not any("waiting for another ingest" in line for line in lines):
            assert proc.poll() is None, "the second ingest should be waiting for the lock"
            assert time.monotonic() < deadline, "the second ingest never said it waits"
            time.sleep(0.05)
        assert store.repo.head() is None
    finally:
        lock.release()
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines)
    assert store.repo.head() is not None and store.verify()


def test_two_concurrent_ingests_serialize(store: KnowledgeStore, tmp_path: Path) -> None:
    a = many_docs(tmp_path / "a", 30, "alpha")
    b = write_docs(tmp_path / "b", {"only.md": "a single different document"})
    procs = [
        subprocess.Popen(
            [*KBGIT, "ingest", str(store.root), str(src)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in (a, b)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert store.repo.count_commits("HEAD") == 2
    snap = store.verify()
    # the later ingest mirrors its own folder (cleanup=full), so one of the two states won
    assert set(snap.ledger.documents) in ({"only.md"}, {f"d{i:04d}.md" for i in range(30)})
    assert GitRepo(store.config.hub).rev_parse("refs/heads/main") == store.repo.head()


def test_hub_moved_refuses_and_loses_nothing(
    tmp_path: Path, store: KnowledgeStore, docs: Path, hub: Path
) -> None:
    store.ingest(docs)
    other = KnowledgeStore.init(tmp_path / "other", hub=str(hub), config=FAKE_CONFIG)
    share_writer_claim(store, other)
    (docs / "new.md").write_text("written by the other primary")
    pushed = other.ingest(docs).commit
    head_before = store.repo.head()
    (docs / "mine.md").write_text("my own change")
    with pytest.raises(HubMovedError) as info:
        store.ingest(docs)
    assert "kbgit pull" in (info.value.hint or "")
    assert store.repo.head() == head_before
    assert GitRepo(hub).rev_parse("refs/heads/main") == pushed
    assert store.pull() == pushed
    result = store.ingest(docs)
    assert result.added == ["mine.md"] and result.pushed
    assert GitRepo(hub).is_ancestor(pushed, result.commit)


def test_diverged_store_cannot_push_over_the_hub(
    tmp_path: Path, store: KnowledgeStore, docs: Path, hub: Path
) -> None:
    store.ingest(docs)
    other = KnowledgeStore.init(tmp_path / "other", hub=str(hub), config=FAKE_CONFIG)
    share_writer_claim(store, other)
    (docs / "x.md").write_text("local only commit")
    local = store.ingest(docs, push=False).commit
    (docs / "x.md").write_text("the other primary's commit")
    theirs = other.ingest(docs).commit
    with pytest.raises(HubMovedError, match="hub has commits"):
        store.ingest(docs)
    # even a forced plain-git push is refused by the hub
    proc = subprocess.run(
        ["git", "-C", str(store.root), "push", "--force", "hub", "HEAD:refs/heads/main"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert GitRepo(hub).rev_parse("refs/heads/main") == theirs
    assert store.repo.head() == local


def test_repair_after_a_half_written_tree(store: KnowledgeStore, docs: Path) -> None:
    first = store.ingest(docs).commit
    (store.root / "index" / "g000002.faiss").write_bytes(b"IxFI half written")
    (store.root / "index" / ".kbgit-tmp-123-g000002.jsonl").write_bytes(b"{")
    (store.root / "ledger.json").write_text("{ truncated")
    (store.root / "docs" / "keys.md").unlink()
    lock = store.root / ".git" / "index.lock"
    lock.write_text("")
    os.utime(lock, (time.time() - 60, time.time() - 60))  # left by a crash a minute ago
    assert store.needs_repair()
    assert store.status(fetch=False).dirty
    (docs / "added.md").write_text("new after crash")
    result = store.ingest(docs)  # repairs, then completes
    assert result.added == ["added.md"] and result.skipped == 4
    assert not store.needs_repair()
    assert store.repo.is_ancestor(first, result.commit)
    store.verify()


def _ingest_and_kill(store: KnowledgeStore, src: Path, delay: float) -> int:
    # its own process group, so the kill also takes the git child it may be running
    # (like a crash or an OOM kill of the whole service, not just the Python parent)
    proc = subprocess.Popen(
        [*KBGIT, "ingest", "--no-push", str(store.root), str(src)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30)


def _kill_then_recover(
    store: KnowledgeStore, src: Path, base: str, delay: float, expected_docs: set[str]
) -> tuple[float, int, bool, bool]:
    """Kill an ingest after ``delay`` s, check the store, let the next ingest repair it."""
    store.repo.run("reset", "--quiet", "--hard", base)
    code = _ingest_and_kill(store, src, delay)
    dirty = store.needs_repair()
    head = store.repo.head()
    assert head == base or store.repo.is_ancestor(base, head)
    # the next command repairs and completes
    result = KnowledgeStore(store.root).ingest(src, push=False)
    assert set(store.verify().ledger.documents) == expected_docs
    assert result.commit is not None or head != base
    assert not store.needs_repair()
    return (round(delay, 3), code, dirty, head != base)


def test_kill_9_at_several_points_then_repair(store: KnowledgeStore, tmp_path: Path) -> None:
    src = many_docs(tmp_path / "src", 300)
    base = store.ingest(write_docs(tmp_path / "seed", {"seed.md": "seed document"})).commit
    t0 = time.monotonic()
    probe = run_kbgit("ingest", "--no-push", str(store.root), str(src))
    full = time.monotonic() - t0
    assert probe.returncode == 0, probe.stderr
    expected_docs = set(store.verify().ledger.documents)
    # import, scan, embed, then the writes: spread kills over the second half and beyond
    outcomes = [
        _kill_then_recover(store, src, base, full * (0.3 + 0.075 * step), expected_docs)
        for step in range(10)
    ]
    assert any(code == -signal.SIGKILL for _d, code, _w, _m in outcomes), outcomes
    # make sure one kill landed while files were being written: bisect between the last
    # kill that left a clean tree at the base and the first that found the commit made
    lo = max((d for d, _c, dirty, moved in outcomes if not dirty and not moved), default=0.0)
    hi = min((d for d, _c, _w, moved in outcomes if moved), default=full * 1.5)
    for _ in range(8):
        if any(dirty for _d, _c, dirty, _m in outcomes) or hi - lo < 0.005:
            break
        mid = (lo + hi) / 2
        outcomes.append(_kill_then_recover(store, src, base, mid, expected_docs))
        _d, _c, dirty, moved = outcomes[-1]
        if moved:
            hi = mid
        elif not dirty:
            lo = mid
    assert any(dirty for _d, _c, dirty, _m in outcomes), outcomes


def test_hub_setting_is_what_ingest_pushes_to(
    tmp_path: Path, store: KnowledgeStore, docs: Path
) -> None:
    from kbgit import StoreConfig, create_hub

    store.ingest(docs)
    second = create_hub(tmp_path / "second.git")
    cfg = StoreConfig.load(store.root, env={"KBGIT_HUB": str(second)})
    moved = KnowledgeStore(store.root, cfg)
    assert moved.status().hub == str(second)
    assert moved.push()  # the whole history goes to the hub the settings name
    assert GitRepo(second).rev_parse("refs/heads/main") == store.repo.head()


# -- staging exactly what a transaction writes (issue 10: commit cost follows the change) ---
def test_a_stray_file_is_never_committed_and_the_next_writer_removes_it(
    store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    stray = store.root / "docs" / "stray.md"
    write_docs(docs, {"new.md": "A new runbook about the pager rotation.\n"})

    def drop_a_stray_file(stage: str, done: int, total: int) -> None:
        if stage == "embed" and not stray.exists():  # inside the transaction, after repair
            stray.write_text("copied here by hand while the ingest ran\n")

    result = store.ingest(docs, progress=drop_a_stray_file)
    tree = store.repo.ls_tree(result.commit)
    assert "docs/new.md" in tree and "docs/stray.md" not in tree
    assert stray.exists() and store.needs_repair()
    store.verify()
    assert store.ingest(docs).commit is None  # nothing to commit; its repair removes the stray
    assert not stray.exists() and not store.needs_repair()


ODD_NAMES = {
    "-leading-dash.md": "Leading dash files must not be read as git options.\n",
    "--.md": "Two dashes only, like the end of git's options.\n",
    "with space/a b.md": "Spaces in folder and file names.\n",
    "ünïcødé/日本語.md": "Unicode folder and file names, not ASCII.\n",
    "[glob]*?.md": "Pathspec magic characters taken literally.\n",
    ":(exclude)x.md": "A pathspec magic prefix taken literally.\n",
    'quote"s.md': "A double quote git would otherwise quote.\n",
}


def test_odd_file_names_are_staged_exactly(store: KnowledgeStore, tmp_path: Path) -> None:
    src = write_docs(tmp_path / "odd", {"plain.md": "A plain document.\n", **ODD_NAMES})
    first = store.ingest(src)
    assert not first.failed, first.failed
    tree = store.repo.ls_tree(first.commit)
    assert {f"docs/{n}" for n in ODD_NAMES} <= set(tree)
    assert not store.needs_repair()
    store.verify()
    (src / "-leading-dash.md").unlink()
    (src / "ünïcødé" / "日本語.md").rename(src / "ünïcødé" / "名前.md")
    write_docs(src, {"[glob]*?.md": "Edited: pathspec magic characters taken literally.\n"})
    second = store.ingest(src)
    tree = store.repo.ls_tree(second.commit)
    assert "docs/-leading-dash.md" not in tree and "docs/ünïcødé/日本語.md" not in tree
    assert "docs/ünïcødé/名前.md" in tree and len(second.updated) == 1
    assert not (store.root / "docs" / "-leading-dash.md").exists()
    assert not store.needs_repair()
    store.verify()


def test_a_copied_store_gets_the_index_settings_and_a_fresh_index(
    store: KnowledgeStore, docs: Path, tmp_path: Path
) -> None:
    """Commits stage only what changed, so the writer refreshes a stale index itself."""
    assert store.repo.run("config", "core.splitIndex") == "true"
    store.ingest(docs)
    copy = Path(shutil.copytree(store.root, tmp_path / "copy", symlinks=True))
    repo = GitRepo(copy)
    repo.run("config", "--unset", "core.splitIndex")  # a store made before the settings
    assert repo.run("diff-files", "--name-only")  # new inodes and ctimes: every entry stale
    kb = KnowledgeStore(copy)
    write_docs(docs, {"new.md": "A new runbook about the pager rotation.\n"})
    assert kb.ingest(docs, push=False).added == ["new.md"]
    assert not repo.run("diff-files", "--name-only")
    assert repo.run("config", "core.splitIndex") == "true"
    assert not kb.needs_repair()


def test_a_stale_config_lock_only_delays_the_settings(store: KnowledgeStore, docs: Path) -> None:
    """A kill while git wrote its config (config.lock left) must not stop the writer."""
    store.ingest(docs)
    store.repo.run("config", "--unset", "core.splitIndex")  # a store made before the settings
    lock = store.root / ".git" / "config.lock"
    lock.write_text("")
    write_docs(docs, {"new.md": "A new runbook about the pager rotation.\n"})
    assert KnowledgeStore(store.root).ingest(docs).added == ["new.md"]
    store.verify()
    lock.unlink()
    KnowledgeStore(store.root).ingest(docs)
    assert store.repo.run("config", "core.splitIndex") == "true"


@pytest.mark.parametrize("with_hub", [True, False])
def test_the_write_path_packs_loose_objects_itself_in_the_foreground(
    tmp_path: Path, hub: Path, with_hub: bool
) -> None:
    """Commits no longer run ``git commit`` (and its gc); a detached gc started by the
    hub check's fetch raced the next ingests (commit+push 1.5-1.7x slower once a store
    passed gc.auto's loose objects). Each transaction runs git's auto-maintenance itself,
    under the lock, after the push: a store without a hub is packed too."""
    from kbgit import KnowledgeStore

    from .conftest import FAKE_CONFIG

    kb = KnowledgeStore.init(
        tmp_path / "kb", hub=str(hub) if with_hub else None, config=FAKE_CONFIG
    )
    blobs = tmp_path / "blobs"  # 4,000 loose objects: past gc.auto for certain
    blobs.mkdir()
    for i in range(4000):
        (blobs / str(i)).write_text(f"loose object {i}")
    shas = subprocess.run(
        ["git", "-C", str(kb.root), "hash-object", "-w", "--stdin-paths"],
        input="\n".join(str(blobs / str(i)) for i in range(4000)),
        text=True,
        check=True,
        capture_output=True,
    ).stdout.split()
    tree = kb.repo.run(
        "mktree", input="".join(f"100644 blob {b}\t{i}\n" for i, b in enumerate(shas)).encode()
    )
    kb.repo.run("update-ref", "refs/junk", kb.repo.run("commit-tree", tree, "-m", "junk"))
    write_docs(tmp_path / "d", {"f.md": "one document about a topic"})
    kb.ingest(tmp_path / "d")
    counts = dict(line.split(": ", 1) for line in kb.repo.run("count-objects", "-v").splitlines())
    assert int(counts["packs"]) >= 1
    # packed before the write returned (git's loose-objects task deletes the loose copies
    # at its next run, so concurrent readers never miss an object)
    assert int(counts["in-pack"]) >= 4000
    assert not (kb.root / ".git" / "gc.pid").exists()  # nothing left running detached

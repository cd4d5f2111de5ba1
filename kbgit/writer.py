"""The one write path: every commit kbgit makes goes through :meth:`Writer.transaction`.

Ingest, LangChain writes, rollback, compaction (and migration) all do the same steps,
in this order, and nothing else writes commits::

    writer = Writer(repo, config)
    with writer.transaction(wait=True) as txn:      # lock -> repair -> hub check -> HEAD state
        txn.ledger, txn.manifest                    # HEAD's state (None before the first commit)
        txn.write("ledger.json", data); txn.delete("docs/old.md")
        txn.commit(subject, body_lines, trailers)   # one commit, trailers from format/trailers.py
        txn.push()                                  # to the hub, if one is configured

Writes are temp file + rename (a reader never sees half a file); git fsyncs the objects
of a commit before its branch moves, and a crash leaves the working tree at HEAD or at
the new commit, or half-written: the next transaction's repair resets it from HEAD.
Only the paths written or deleted are staged: nothing else ever enters a commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import filelock

from .config import HUB_REMOTE, StoreConfig
from .errors import ConfigError, FencedError, GitError, HubMovedError, IntegrityError, LockedError
from .fencing import ensure_held, push_branch
from .format.checks import EVALS_DIR, SegmentCache
from .format.ledger import DOCS_DIR, LEDGER_PATH, Ledger
from .format.manifest import INDEX_DIR, MANIFEST_PATH, Manifest
from .format.shards import SHARD_DIR, ShardCache, read_ledger_at, shard_keys
from .format.signatures import check_key, sign_options
from .format.snapshot import load_snapshot
from .format.trailers import Trailers, commit_message
from .fsio import remove, write_atomic
from .gitrepo import EMPTY_TREE, GitRepo, redact
from .unpushed import clear_pushing, mark_pushing, refused_hint, settle_refused

logger = logging.getLogger(__name__)

LOCK_NAME = "kbgit-writer.lock"
#: the paths a kbgit commit consists of; repair and commits touch nothing else
TRACKED = (DOCS_DIR, INDEX_DIR, LEDGER_PATH, SHARD_DIR, MANIFEST_PATH, EVALS_DIR)

#: a fetch that starts no background gc (see Writer.maintain)
NO_AUTO_GC = ("maintenance.auto=false",)
#: git's incremental maintenance, as for large repositories (Scalar): past 100 loose
#: objects they go into one new pack, past 10 packs a multi-pack index and a repack of
#: the small ones. Each costs about the change since the last run, never the whole store
#: as ``gc --auto``'s full repack does (3.8 s in one ingest of 200, bench/README.md).
MAINTENANCE = (
    "maintenance", "run", "--auto", "--quiet", "--task=loose-objects", "--task=incremental-repack",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class HeadState:
    """HEAD's commit, ledger and manifest (all None before the first commit)."""

    commit: str | None
    ledger: Ledger | None
    manifest: Manifest | None


class Writer:
    """The writer of one working store: lock, repair, hub check, commit, push.

    >>> writer = Writer(GitRepo("./kb"), StoreConfig.load("./kb"))     # doctest: +SKIP
    >>> with writer.transaction() as txn:                               # doctest: +SKIP
    ...     txn.write("manifest.json", data)
    ...     txn.commit("kbgit compact: ...", [], Trailers(operation="compact"))
    """

    def __init__(self, repo: GitRepo, config: StoreConfig) -> None:
        self.repo = repo
        self.root = Path(repo.path)
        self.config = config
        #: ledger shards already read and checked (format 2): a commit re-reads only new ones
        self.shards = ShardCache()
        #: whether git's settings were checked (stores made before them get them once)
        self._tuned = False

    # -- lock and repair ------------------------------------------------------------------
    def lock(
        self, *, wait: bool = True, timeout: float = -1, on_wait: Callable[[], None] | None = None
    ) -> filelock.BaseFileLock:
        """Take the writer lock; raise LockedError if busy and ``wait`` is false."""
        lock = filelock.FileLock(str(self.root / ".git" / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
            return lock
        except filelock.Timeout:
            if not wait:
                raise LockedError(
                    f"{self.root} is locked by another writer (an ingest is running)",
                    hint="wait for it, or run without --no-wait to queue behind it",
                ) from None
        if on_wait:
            on_wait()
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise LockedError(f"gave up waiting for the writer lock of {self.root}") from None
        return lock

    def needs_repair(self, *, refresh: bool = False) -> bool:
        """Tell whether the working tree differs from HEAD (an interrupted write).

        With ``refresh`` (writer lock held) git may also rewrite its index when stat data
        went stale (a copied or restored store: new inodes and times). Commits stage only
        the paths they change, so nothing else refreshes it, and every later status would
        hash each file again.
        """
        env = {"GIT_OPTIONAL_LOCKS": "1"} if refresh else None
        out = self.repo.run(
            "status", "--porcelain", "--untracked-files=all", "--", *TRACKED, env=env
        )
        return bool(out) or (self.root / ".git" / "index.lock").exists()

    def repair(self) -> bool:
        """Reset a half-written working tree to HEAD; return whether anything was repaired.

        Call with the writer lock held. HEAD is always a complete commit: git moves a
        branch only after every object of the commit is written.
        """
        if not self._tuned:  # stores made before the settings get them once
            self._tuned = True
            try:
                self.repo.tune()
            except GitError as exc:  # e.g. a config.lock left by a kill: slower, not wrong
                logger.warning("cannot apply git settings to %s: %s", self.root, exc)
        if not self.needs_repair(refresh=True):
            return False
        self._clear_stale_index_lock()
        if self.repo.head() is not None:
            self.repo.run("reset", "--quiet", "--hard", "HEAD")
        self.repo.run("clean", "-fdq", "--", *TRACKED)
        if self.repo.head() is None:
            for name in TRACKED:
                path = self.root / name
                if path.is_file():
                    path.unlink()
        logger.warning("repaired %s: working tree reset to HEAD", self.root)
        return True

    def _clear_stale_index_lock(self, grace: float = 10.0) -> None:
        """Remove git's index.lock left by a killed writer.

        A killed ingest can leave its git child running for a moment (kill -9 of the
        parent does not kill the child): wait while the lock is fresh, then remove it.
        """
        lock = self.root / ".git" / "index.lock"
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                return
            if age > grace:
                break
            time.sleep(0.05)
        lock.unlink(missing_ok=True)

    # -- state and hub --------------------------------------------------------------------
    def head_state(self) -> HeadState:
        """Return HEAD's commit, ledger and manifest (parsed, not verified)."""
        head = self.repo.head()
        if head is None:
            return HeadState(None, None, None)
        manifest_raw = self.repo.read_file(head, MANIFEST_PATH)
        ledger = read_ledger_at(self.repo, head, self.shards) if manifest_raw else None
        if ledger is None or manifest_raw is None:
            raise ConfigError(f"HEAD of {self.root} is not a kbgit commit")
        self.shards.retain(shard_keys(ledger))
        return HeadState(head, ledger, Manifest.from_bytes(manifest_raw))

    def check_hub(self, *, settle: bool = False) -> str | None:
        """Fetch the hub; refuse if it has commits we do not (another writer pushed).

        With ``settle``, a HEAD whose push the hub refused is undone first (see :meth:`settle`).
        """
        if not self.config.hub:
            return None
        try:
            # no auto-maintenance here: maintain() runs it after the write
            hub_head = self.repo.fetch(HUB_REMOTE, self.config.branch, config=NO_AUTO_GC)
        except GitError as exc:
            raise GitError(
                f"cannot reach the hub {redact(self.config.hub)}: {exc.stderr or exc}",
                stderr=exc.stderr,
                hint="check the hub path/URL in kb.toml; nothing was changed",
            ) from exc
        if settle:
            self.settle(hub_head)
        head = self.repo.head()
        if hub_head is not None and (head is None or not self.repo.is_ancestor(hub_head, head)):
            behind_only = head is not None and self.repo.is_ancestor(head, hub_head)
            raise HubMovedError(
                f"the hub has commits this store does not have (hub at {hub_head[:12]})",
                hint=_moved_hint(self.root, behind_only),
            )
        return hub_head

    def push(self) -> bool:
        """Push HEAD to the hub if it is ahead; return whether anything was pushed.

        A push the hub refuses because it moved (another writer pushed first) or because
        its pre-receive hook declined leaves the store as it was before the commits the
        hub lacks: HEAD goes back to the hub's commit and the refused commits are kept
        under ``refs/kbgit/unpushed/``. Any other failure (hub unreachable, disk full)
        keeps the commit, and the next transaction pushes it.
        """
        head = self.repo.head()
        if not self.config.hub or head is None:
            return False
        hub_head = self.repo.remote_head(HUB_REMOTE, self.config.branch)
        if hub_head == head:
            return False
        self.mark_pushing()
        try:  # atomic with the leased writer ref: a fenced store's branch update never lands
            push_branch(self.repo, HUB_REMOTE, self.config.branch)
        except FencedError:
            raise
        except GitError as exc:
            declined = "hook declined" in exc.stderr
            undone = self._settle_after_refusal(declined)
            if undone is None and not declined and any(m in exc.stderr for m in _HUB_FAULTS):
                raise _push_failed(exc.stderr) from exc  # a full disk, permissions, ...
            raise HubMovedError(
                f"the hub refused the push: {exc.stderr}",
                stderr=exc.stderr,
                hint=refused_hint(self.root, undone, declined),
            ) from exc
        # the hub accepted exactly HEAD: record it without another round trip
        self.repo.run("update-ref", f"refs/remotes/{HUB_REMOTE}/{self.config.branch}", head)
        clear_pushing(self.repo)
        return True

    # -- refused pushes (kbgit/unpushed.py) ---------------------------------------------
    def mark_pushing(self) -> None:
        """Record that HEAD is being pushed (read by :meth:`settle` after a crash)."""
        mark_pushing(self.repo)

    def settle(self, hub_head: str | None, *, declined: bool = False) -> str | None:
        """Undo a pushed-but-refused HEAD (see :func:`kbgit.unpushed.settle_refused`)."""
        return settle_refused(self.repo, hub_head, declined=declined, repair=self.repair)

    def _settle_after_refusal(self, declined: bool) -> str | None:
        try:
            # no auto-maintenance here: maintain() runs it after the write
            hub_head = self.repo.fetch(HUB_REMOTE, self.config.branch, config=NO_AUTO_GC)
        except GitError:
            return None  # cannot tell whether the hub moved: keep the commit
        return self.settle(hub_head, declined=declined)

    def author_args(self) -> list[str]:
        """Return git ``-c`` options naming the configured author (and signing key)."""
        name, _, email = self.config.author.partition(" <")
        author = ["-c", f"user.name={name}", "-c", f"user.email={email.rstrip('>')}"]
        if self.config.signing_key:
            return author + sign_options(check_key(self.config.signing_key))
        return author

    # -- the transaction ------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(
        self, *, wait: bool = True, on_wait: Callable[[], None] | None = None
    ) -> Iterator[Transaction]:
        """Hold the lock, repair, check the hub and yield HEAD's state for one commit."""
        if self.config.signing_key:
            check_key(self.config.signing_key)  # before any work: a missing key is a typo
        with self.lock(wait=wait, on_wait=on_wait):
            self.repair()
            try:
                self.check_hub(settle=True)
            except HubMovedError:  # fenced by a promotion: say that rather than "moved"
                ensure_held(self.repo, HUB_REMOTE, fetch=False, take_free=False)
                raise
            if self.config.hub:  # refs/kbgit/writer must name this store (or nobody yet)
                ensure_held(self.repo, HUB_REMOTE, fetch=False)
            yield Transaction(self, self.head_state())
            self.maintain()

    def maintain(self) -> None:
        """Run git's incremental auto-maintenance (:data:`MAINTENANCE`) now, in the
        foreground, under the lock, after the commit and its push.

        Commits are ``commit-tree``, which starts no gc, and the hub check's fetch starts
        none either: a gc detached by a fetch raced the next writes (bench/README.md). A
        failure is logged, never raised: the commit stands.
        """
        try:
            self.repo.run(*MAINTENANCE)
        except GitError as exc:
            logger.warning("git maintenance failed in %s: %s", self.root, exc.stderr or exc)


class Transaction:
    """One commit in the making: staged writes and deletes on top of HEAD's state."""

    def __init__(self, writer: Writer, state: HeadState) -> None:
        self.writer = writer
        self.repo = writer.repo
        self.head = state.commit
        self.ledger = state.ledger
        self.manifest = state.manifest
        self.writes: dict[str, bytes] = {}
        self.deletes: list[str] = []

    def write(self, path: str, data: bytes) -> None:
        """Stage ``data`` for ``path`` (relative to the store)."""
        self.writes[path] = data

    def delete(self, path: str) -> None:
        """Stage the removal of ``path``."""
        self.deletes.append(path)

    def restore_tree(self, commit: str) -> None:
        """Stage ``commit``'s tree: write or delete each file that differs from HEAD's.

        Only the difference is read (:meth:`GitRepo.changed_files`), and it is staged like
        any other change, so later writes apply on top and the commit touches only it.
        """
        changes = self.repo.changed_files(self.head or EMPTY_TREE, commit)
        blobs = self.repo.read_blobs(b for b in changes.values() if b is not None)
        for path, blob in changes.items():
            if blob is None:
                self.delete(path)
            else:
                self.write(path, blobs[blob])

    def commit(
        self,
        subject: str,
        body: Sequence[str],
        trailers: Trailers,
        *,
        second_parent: str | None = None,
        verify: SegmentCache | Callable[[str], object] | None = None,
    ) -> str:
        """Write the staged files and commit them; return the new commit id.

        ``second_parent`` records a merge parent (rollback: git then sends nothing that
        commit has). With ``verify`` (a segment cache to load the commit with, or a
        function that checks a commit id) the commit is checked, and undone (HEAD reset to
        its parent) if it fails.
        """
        root = self.writer.root
        self.writer.check_hub()  # under the lock, right before committing: did the hub move?
        for path in self.deletes:
            remove(root / path, root)
        # no fsync per file: the working tree is a checkout of git's objects, which git
        # fsyncs (core.fsync=committed) before the branch moves; a file a crash cut short
        # differs from HEAD and the next transaction's repair restores it from them
        for path, data in self.writes.items():
            write_atomic(root / path, data, root=root, durable=False)
        message = commit_message(subject, body, trailers)
        parent = self.head  # under the lock HEAD cannot move; update-ref checks it anyway
        commit = self._commit_tree(message, parent, second_parent)
        if verify is not None:
            try:
                if isinstance(verify, SegmentCache):
                    load_snapshot(self.repo, commit, cache=verify)
                else:
                    verify(commit)
            except IntegrityError:
                self.repo.run("reset", "--quiet", "--hard", parent or "HEAD")
                logger.error("commit %s failed verification and was undone", commit[:12])
                raise
        self.head = commit
        return commit

    def _commit_tree(self, message: str, parent: str | None, second: str | None) -> str:
        """Stage exactly the paths this transaction wrote or deleted, and commit them.

        Git's index already holds HEAD (repair made sure), so only the changed entries
        are updated and ``write-tree`` reuses the cached trees of untouched folders: the
        cost follows the change, not the store (``git add --all`` of the tracked folders
        stats every file). A file nobody staged (a stray file) is never committed.
        """
        self.stage()
        tree = self.repo.run("write-tree")
        parents = [a for p in (parent, second) if p for a in ("-p", p)]
        sign = ["-S"] if self.writer.config.signing_key else []
        commit = self.repo.run(
            *self.writer.author_args(), "commit-tree", *sign, tree, *parents, "-F", "-",
            input=message.encode(),
        )  # fmt: skip
        # compare-and-swap on HEAD's branch: "" means it must not exist yet (first commit)
        self.repo.run("update-ref", "-m", "kbgit: commit", "HEAD", commit, parent or "")
        return commit

    def stage(self) -> None:
        """Update git's index for every path written or deleted (never any other path)."""
        paths = dict.fromkeys([*self.deletes, *self.writes])
        if paths:
            data = b"".join(os.fsencode(p) + b"\0" for p in paths)
            self.repo.run("update-index", "--add", "--remove", "--replace", "-z", "--stdin",
                          input=data)  # fmt: skip

    def push(self) -> bool:
        """Push the new HEAD to the hub; return whether anything was pushed."""
        return self.writer.push()


#: what git says when the hub could not store a push (not that another writer moved it)
_HUB_FAULTS = (
    "No space left",
    "unpack failed",
    "unpacker error",
    "unable to migrate objects",
    "Permission denied",
    "Disk quota exceeded",
)


def _push_failed(stderr: str) -> GitError:
    """Return the error for a push the hub could not take although it did not move.

    A full disk, permissions or an unreachable hub: the commit stays and the next ingest
    pushes it. Rejoining would set the pending commit aside, so the hint never says so.
    """
    return GitError(
        f"the push to the hub failed: {stderr}",
        stderr=stderr,
        hint="the commit is kept locally and the next ingest pushes it: fix what git "
        "reports on the hub (disk space, permissions, reachability), then run kbgit ingest again",
    )


def _moved_hint(root: Path, behind_only: bool) -> str:
    if behind_only:
        return (
            "another writer pushed. If a standby was promoted in this store's place, "
            f"this store must not write again: kbgit rejoin {root}, then run "
            "kbgit standby on it. If this store is still the designated writer, "
            f"continue from the hub's history: kbgit pull {root}"
        )
    return (
        "this store and the hub have diverged: another primary wrote to the hub "
        f"(a standby was promoted). Rejoin as a standby: kbgit rejoin {root} "
        "(keeps the commits the hub lacks on a branch), then run kbgit standby on it"
    )


__all__ = ["LOCK_NAME", "TRACKED", "HeadState", "Transaction", "Writer"]

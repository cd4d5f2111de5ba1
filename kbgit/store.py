"""The KnowledgeStore facade: init, ingest, status, query, verify, repair, pull.

A store is a git working repo (``./kb``) whose every commit is a complete snapshot:
``ledger.json``, ``manifest.json``, ``docs/`` and ``index/``. One writer at a time
holds ``.git/kbgit-writer.lock``; ``kb.toml`` beside ``.git`` holds local settings and
is never committed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import filelock

from .config import CONFIG_NAME, HUB_REMOTE, StoreConfig
from .embeddings import Embedder, load_embedder
from .errors import ConfigError, GitError, HubMovedError, KbgitError, LockedError, QueryError
from .fsio import remove, write_atomic
from .gitrepo import GitRepo
from .ingest import (
    FileReport,
    Plan,
    ProgressFn,
    plan_changes,
    scan_folder,
)
from .ledger import DOCS_DIR, LEDGER_PATH, Ledger
from .manifest import INDEX_DIR, MANIFEST_PATH, Manifest
from .snapshot import Hit, SegmentCache, Snapshot, load_snapshot

logger = logging.getLogger(__name__)

LOCK_NAME = "kbgit-writer.lock"
_TRACKED = (DOCS_DIR, INDEX_DIR, LEDGER_PATH, MANIFEST_PATH)


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """What one ingest did."""

    commit: str | None
    added: list[str]
    updated: list[str]
    skipped: int
    deleted: list[str]
    renamed: list[tuple[str, str]]
    failed: list[FileReport]
    chunks_added: int
    chunks_deleted: int
    reembedded: bool
    pushed: bool

    @property
    def ok(self) -> bool:
        """Tell whether every file was ingested."""
        return not self.failed


@dataclasses.dataclass(frozen=True)
class StoreStatus:
    """Where a store stands: its HEAD, contents, hub position and pending changes."""

    root: str
    head: str | None
    head_time: int | None
    documents: int
    vectors: int
    segments: int
    tombstones: int
    model_id: str | None
    hub: str | None
    hub_head: str | None
    ahead: int
    behind: int
    dirty: bool
    plan: Plan | None


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """Ranked hits and the one commit they all came from."""

    commit: str
    hits: list[Hit]


class KnowledgeStore:
    """A versioned knowledge store in a git working repo.

    >>> store = KnowledgeStore.init("./kb", hub="/srv/kb-hub.git")    # doctest: +SKIP
    >>> result = store.ingest("./my-docs")                            # doctest: +SKIP
    >>> store.query("how do I rotate keys", k=5).hits[0].source       # doctest: +SKIP
    'runbooks/rotate-api-keys.md'
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: StoreConfig | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.root = Path(root)
        if not (self.root / ".git").is_dir():
            raise ConfigError(
                f"{self.root} is not a kbgit store", hint=f"create one with: kbgit init {self.root}"
            )
        self.config = config if config is not None else StoreConfig.load(self.root)
        self.repo = GitRepo(self.root)
        if self.config.hub:
            # kb.toml (or KBGIT_HUB) is the truth: point the git remote where it says
            hub = _absolute_hub(self.config.hub)
            if self.repo.remote_url(HUB_REMOTE) != hub:
                self.repo.set_remote(HUB_REMOTE, hub)
        self._embedder = embedder
        self._cache = SegmentCache()

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        root: str | os.PathLike[str],
        *,
        hub: str = "",
        config: StoreConfig | None = None,
        embedder: Embedder | None = None,
    ) -> KnowledgeStore:
        """Create a working store; clone the hub's history if it has any."""
        root = Path(root)
        if (root / ".git").exists():
            raise ConfigError(f"{root} is already a store", hint=f"use it: kbgit status {root}")
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"{root} exists and is not empty")
        config = dataclasses.replace(
            config or StoreConfig(), hub=_absolute_hub(hub or (config.hub if config else ""))
        )
        repo = None
        if config.hub and _hub_has_history(config.hub, config.branch):
            repo = GitRepo.clone(config.hub, root, config.branch, HUB_REMOTE)
        else:
            repo = GitRepo.init(root, config.branch)
            if config.hub:
                repo.set_remote(HUB_REMOTE, config.hub)
        exclude = root / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(f"/{CONFIG_NAME}\n")
        write_atomic(root / CONFIG_NAME, config.to_toml().encode())
        return cls(root, config, embedder)

    @property
    def embedder(self) -> Embedder:
        """Return the embedder for the configured model (loaded lazily)."""
        if self._embedder is None:
            self._embedder = load_embedder(self.config.model, batch_size=self.config.batch_size)
        return self._embedder

    # -- writer lock and repair -------------------------------------------------------
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

    def needs_repair(self) -> bool:
        """Tell whether the working tree differs from HEAD (an interrupted write)."""
        out = self.repo.run("status", "--porcelain", "--untracked-files=all", "--", *_TRACKED)
        return bool(out) or (self.root / ".git" / "index.lock").exists()

    def repair(self) -> bool:
        """Reset a half-written working tree to HEAD; return whether anything was repaired.

        Call with the writer lock held (ingest does). HEAD is always a complete commit:
        git moves a branch only after every object of the commit is written.
        """
        if not self.needs_repair():
            return False
        self._clear_stale_index_lock()
        if self.repo.head() is not None:
            self.repo.run("reset", "--quiet", "--hard", "HEAD")
        self.repo.run("clean", "-fdq", "--", *_TRACKED)
        if self.repo.head() is None:
            for name in _TRACKED:
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

    # -- reading ----------------------------------------------------------------------
    def snapshot(self, rev: str = "HEAD") -> Snapshot:
        """Verify and load the store at ``rev``."""
        if self.repo.head() is None:
            raise QueryError(
                f"{self.root} has no commits yet",
                hint=f"ingest documents first: kbgit ingest {self.root} DOCS",
            )
        return load_snapshot(self.repo, rev, cache=self._cache)

    def verify(self, rev: str = "HEAD") -> Snapshot:
        """Check every file of ``rev`` against its manifest and ledger; raise IntegrityError."""
        return load_snapshot(self.repo, rev, cache=SegmentCache())

    def _query_embedder(self, snap: Snapshot) -> Embedder:
        if self.embedder.model_id == snap.ledger.model_id:
            return self.embedder
        return load_embedder(snap.ledger.model_id)

    def query(
        self,
        text: str,
        k: int = 5,
        *,
        rev: str = "HEAD",
        source: str | Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> QueryResult:
        """Return the k chunks closest to ``text`` at revision ``rev``."""
        if not text or not text.strip():
            raise QueryError("query text is empty")
        snap = self.snapshot(rev)
        vector = self._query_embedder(snap).embed([text])[0]
        return QueryResult(
            snap.commit, snap.search(vector, k, source=source, score_threshold=score_threshold)
        )

    def _head_state(self) -> tuple[str | None, Ledger | None, Manifest | None]:
        head = self.repo.head()
        if head is None:
            return None, None, None
        ledger_raw = self.repo.read_file(head, LEDGER_PATH)
        manifest_raw = self.repo.read_file(head, MANIFEST_PATH)
        if ledger_raw is None or manifest_raw is None:
            raise ConfigError(f"HEAD of {self.root} is not a kbgit commit")
        return head, Ledger.from_bytes(ledger_raw), Manifest.from_bytes(manifest_raw)

    def status(
        self, source: str | os.PathLike[str] | None = None, *, fetch: bool = True
    ) -> StoreStatus:
        """Describe HEAD, hub position and, given a source folder, what an ingest would do."""
        head, ledger, manifest = self._head_state()
        hub_head = None
        if self.config.hub:
            try:
                hub_head = (
                    self.repo.fetch(HUB_REMOTE, self.config.branch)
                    if fetch
                    else self.repo.remote_head(HUB_REMOTE, self.config.branch)
                )
            except GitError as exc:
                logger.warning("hub unreachable: %s", exc)
                hub_head = self.repo.remote_head(HUB_REMOTE, self.config.branch)
        ahead, behind = self._divergence(head, hub_head)
        plan = None
        if source is not None:
            files, _problems = scan_folder(source)
            base = ledger or Ledger.empty(self.config.model, 0, self.config.chunking)
            plan = plan_changes(
                base,
                files,
                keep_missing=False,
                reembed_all=ledger is not None and not self._same_settings(ledger),
            )
        return StoreStatus(
            str(self.root),
            head,
            self.repo.commit_time(head) if head else None,
            len(ledger.documents) if ledger else 0,
            manifest.live_vectors if manifest else 0,
            len(manifest.segments) if manifest else 0,
            sum(len(s.tombstones) for s in manifest.segments) if manifest else 0,
            ledger.model_id if ledger else None,
            self.config.hub or None,
            hub_head,
            ahead,
            behind,
            self.needs_repair(),
            plan,
        )

    def _same_settings(self, ledger: Ledger) -> bool:
        """Compare settings without loading the model (the model id is known from config)."""
        probe = load_embedder(self.config.model) if self._embedder is None else self._embedder
        return ledger.same_settings(probe.model_id, probe.dim, self.config.chunking)

    def _divergence(self, head: str | None, hub_head: str | None) -> tuple[int, int]:
        if not self.config.hub:
            return 0, 0  # no hub: nothing to be ahead of or behind
        if head is None or hub_head is None:
            return (
                self.repo.count_commits(head) if head else 0,
                self.repo.count_commits(hub_head) if hub_head else 0,
            )
        return (
            self.repo.count_commits(f"{hub_head}..{head}"),
            self.repo.count_commits(f"{head}..{hub_head}"),
        )

    # -- writing ----------------------------------------------------------------------
    def _check_hub(self) -> str | None:
        """Fetch the hub; refuse if it has commits we do not (another writer pushed)."""
        if not self.config.hub:
            return None
        try:
            hub_head = self.repo.fetch(HUB_REMOTE, self.config.branch)
        except GitError as exc:
            raise GitError(
                f"cannot reach the hub {self.config.hub}: {exc.stderr or exc}",
                stderr=exc.stderr,
                hint="check the hub path/URL in kb.toml; nothing was changed",
            ) from exc
        head = self.repo.head()
        if hub_head is not None and (head is None or not self.repo.is_ancestor(hub_head, head)):
            behind_only = head is not None and self.repo.is_ancestor(head, hub_head)
            raise HubMovedError(
                f"the hub has commits this store does not have (hub at {hub_head[:12]})",
                hint=(
                    "another writer pushed. If a standby was promoted in this store's place, "
                    f"this store must not write again: kbgit rejoin {self.root}, then run "
                    "kbgit standby on it. If this store is still the designated writer, "
                    f"continue from the hub's history: kbgit pull {self.root}"
                )
                if behind_only
                else (
                    "this store and the hub have diverged: another primary wrote to the hub "
                    f"(a standby was promoted). Rejoin as a standby: kbgit rejoin {self.root} "
                    "(keeps the commits the hub lacks on a branch), then run kbgit standby on it"
                ),
            )
        return hub_head

    def pull(self) -> str | None:
        """Fast-forward this store to the hub's branch; return the new HEAD."""
        with self.lock(wait=False):
            self.repair()
            hub_head = self.repo.fetch(HUB_REMOTE, self.config.branch) if self.config.hub else None
            if hub_head is None:
                return self.repo.head()
            head = self.repo.head()
            if head is not None and not self.repo.is_ancestor(head, hub_head):
                raise HubMovedError(
                    "cannot fast-forward: this store has commits the hub lacks",
                    hint="push them (kbgit ingest pushes) or re-clone the store",
                )
            load_snapshot(self.repo, hub_head, cache=self._cache)  # refuse a bad commit
            self.repo.run("merge", "--ff-only", "--quiet", hub_head)
            return hub_head

    def push(self) -> bool:
        """Push HEAD to the hub if it is ahead; return whether anything was pushed."""
        head = self.repo.head()
        if not self.config.hub or head is None:
            return False
        hub_head = self.repo.remote_head(HUB_REMOTE, self.config.branch)
        if hub_head == head:
            return False
        try:
            self.repo.run("push", "--quiet", HUB_REMOTE, f"HEAD:refs/heads/{self.config.branch}")
        except GitError as exc:
            raise HubMovedError(
                f"the hub refused the push: {exc.stderr}",
                stderr=exc.stderr,
                hint=(
                    "the commit is kept locally; see kbgit status. If a standby was promoted, "
                    f"rejoin as a standby: kbgit rejoin {self.root}"
                ),
            ) from exc
        # the hub accepted exactly HEAD: record it without another round trip
        self.repo.run("update-ref", f"refs/remotes/{HUB_REMOTE}/{self.config.branch}", head)
        return True

    def ingest(
        self,
        source: str | os.PathLike[str],
        *,
        keep_missing: bool = False,
        wait: bool = True,
        push: bool = True,
        progress: ProgressFn | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> IngestResult:
        """Bring the store in line with ``source`` in one commit, and push it to the hub."""
        from .commit import run_ingest

        with self.lock(wait=wait, on_wait=on_wait):
            self.repair()
            self._check_hub()
            result = run_ingest(self, Path(source), keep_missing=keep_missing, progress=progress)
            pushed = self.push() if push else False
            return dataclasses.replace(result, pushed=pushed)

    def write_commit(self, writes: dict[str, bytes], deletes: Sequence[str], message: str) -> str:
        """Write files crash-safely, commit them with ``message``, return the commit id."""
        for path in deletes:
            remove(self.root / path, self.root)
        for path, data in writes.items():
            write_atomic(self.root / path, data)
        tracked = {
            p.split("/", 1)[0] for p in self.repo.run("ls-files", "--", *_TRACKED).split("\n")
        }
        paths = [p for p in _TRACKED if (self.root / p).exists() or p in tracked]
        self.repo.run("add", "--all", "--", *paths)
        name, _, email = self.config.author.partition(" <")
        self.repo.run(
            "-c",
            f"user.name={name}",
            "-c",
            f"user.email={email.rstrip('>')}",
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            input=message.encode(),
        )
        head = self.repo.head()
        assert head is not None
        return head


def _absolute_hub(hub: str) -> str:
    """Make a local hub path absolute: git resolves relative ones against the store."""
    if not hub or "://" in hub or (":" in hub.split("/")[0] and not Path(hub).exists()):
        return hub
    return str(Path(hub).resolve())


def _hub_has_history(hub: str, branch: str) -> bool:
    try:
        out = GitRepo(".").run("ls-remote", "--heads", hub, branch)
    except GitError as exc:
        raise GitError(
            f"cannot reach the hub {hub}",
            stderr=exc.stderr,
            hint="create it first: kbgit hub create PATH",
        ) from exc
    return bool(out)


__all__ = ["IngestResult", "KbgitError", "KnowledgeStore", "QueryResult", "StoreStatus"]

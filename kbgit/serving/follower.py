"""The follower: keeps a served store on the newest verified commit.

A standby's follower fetches the hub into ``refs/remotes/hub/<branch>``, verifies the
new commit completely (the checks of ``kbgit verify``), fast-forwards the local branch
and working tree, and only then swaps the snapshot in. A commit that fails verification
is refused and recorded; a diverged replica refuses to move and says so; it never
resets silently. A primary's follower watches its own HEAD and reloads after an ingest.

:meth:`Follower.sync_once` is the unit tests drive; :meth:`Follower.run` is a short loop
around it with capped exponential backoff, woken early by :meth:`Follower.wake`.

>>> follower = Follower(service, hub="/srv/kb-hub.git")     # doctest: +SKIP
>>> follower.sync_once().status                             # doctest: +SKIP
'updated'
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Iterator

import filelock
import schedule

from ..config import DEFAULT_BACKOFF_MAX, DEFAULT_BRANCH, DEFAULT_SYNC_INTERVAL, HUB_REMOTE
from ..errors import GitError, IntegrityError, KbgitError
from ..fencing import check as fence_check
from ..gitrepo import GitRepo, absolute_remote, redact
from ..hub.hooks import install_chain, notify_targets
from .downstream import Downstream
from .service import KnowledgeService, Loaded

logger = logging.getLogger(__name__)

#: older first-parent ancestors tried when the hub's newest commit is refused
MAX_FALLBACK = 5
#: held by a running follower; ``kbgit promote`` and ``kbgit rejoin`` refuse while it is
FOLLOWER_LOCK = "kbgit-follower.lock"

#: seconds between a primary's checks of the hub's writer record (one fetch each)
WRITER_CHECK_EVERY = 5.0

#: updates between two runs of ``git maintenance run --auto`` (packs loose objects, joins
#: packs past gc.autoPackLimit); the fetch and fast-forward of each sync skip it
MAINTAIN_EVERY = 50
#: a sync's fetch: no auto-maintenance process; the pack kept as received (index-pack: two
#: files written and fsynced, instead of unpack-objects writing and fsyncing each object)
FETCH_CONFIG = ("maintenance.auto=false", "fetch.unpackLimit=1")

OK, UPDATED, REFUSED, DIVERGED, ERROR = "ok", "updated", "refused", "diverged", "error"


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """The outcome of one sync attempt."""

    #: ok (nothing new), updated, refused, diverged or error
    status: str
    #: the commit served after this attempt
    commit: str | None
    #: the newest upstream commit seen (hub branch, or the primary's HEAD)
    upstream: str | None = None
    error: str | None = None
    seconds: float = 0.0
    #: seconds spent per stage (fetch, verify, fast_forward, model, swap)
    stages: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Tell whether the attempt succeeded (nothing new, or a new commit served)."""
        return self.status in (OK, UPDATED)


def _diverged(head: str, upstream: str) -> str:
    return (
        f"replica at {head[:12]} is not an ancestor of the hub's {upstream[:12]}: "
        "refusing to reset; re-clone the standby or investigate the hub"
    )


def describe(exc: BaseException) -> str:
    """Return a one-line reason for a failure (kbgit's own message, else type and text)."""
    if isinstance(exc, KbgitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


class Follower:
    """Follows the hub (standby) or the local HEAD (primary) for one service."""

    def __init__(
        self,
        service: KnowledgeService,
        *,
        hub: str = "",
        branch: str = DEFAULT_BRANCH,
        interval: float = DEFAULT_SYNC_INTERVAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
    ) -> None:
        self.service = service
        self.hub = absolute_remote(hub)
        self.branch = branch
        self.interval = interval
        self.backoff_max = backoff_max
        self._lock = service.lock  # an /admin/reload never interleaves with a sync
        #: the next tier's URLs and token, carried from a replica moved aside to its new clone
        self._chain: tuple[list[str], str | None] = ([], None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: filelock.BaseFileLock | None = None
        self._stages: dict[str, float] = {}
        #: seconds between writer-record checks of a primary (tests set 0)
        self.writer_check_every = WRITER_CHECK_EVERY
        self._writer_checked = float("-inf")
        #: commits this follower fast-forwarded to (every MAINTAIN_EVERY-th runs maintenance)
        self._updates = 0
        #: updates between two runs of git's auto-maintenance (tests set it lower)
        self.maintain_every = MAINTAIN_EVERY
        #: the standbys that follow this replica (chained replication), woken after a swap
        self.downstream = Downstream(service.path / ".git", service.name) if hub else None
        service.sync.role = "standby" if hub else "primary"
        service.sync.upstream = redact(self.hub)

    @property
    def repo(self) -> GitRepo:
        """Return the service's repository."""
        return self.service.repo

    # -- start-up ---------------------------------------------------------------------
    def open(self) -> None:
        """Make the replica usable: create it if absent, re-clone it if corrupt, load HEAD."""
        if self.hub:
            self._ensure_replica()
        else:
            self._check_writer()  # a fenced primary must not answer, even at start
        head = self.repo.head() if (self.service.path / ".git").exists() else None
        if head is None:
            return
        try:
            self.service.reload(head)
        except (IntegrityError, GitError) as exc:
            if not self.hub:
                self.service.refuse(head, str(exc))
                raise
            logger.error("%s: local clone is corrupt (%s): re-cloning", self.service.name, exc)
            self._move_aside()
            self._ensure_replica()
        except Exception as exc:  # e.g. its model is not allowed here or cannot load
            self.service.refuse(head, describe(exc))
            self._record(SyncResult(REFUSED, self.service.commit, head, describe(exc)))
            raise

    def _ensure_replica(self) -> None:
        path = self.service.path
        if (path / ".git").exists() and not self._local_ok():
            logger.error("%s: %s is not a usable git repo: re-cloning", self.service.name, path)
            self._move_aside()
        if not (path / ".git").exists():
            if path.exists() and any(path.iterdir()):
                raise KbgitError(
                    f"{path} exists, is not empty and is not a replica",
                    hint="choose an empty or missing directory for the standby",
                )
            GitRepo.init(path, self.branch)
            if self._chain[0]:  # the next tier the damaged replica woke (kbgit hooks chain)
                install_chain(path, notify=self._chain[0], token=self._chain[1])
        self.repo.set_remote(HUB_REMOTE, self.hub)

    def _local_ok(self) -> bool:
        try:
            self.repo.run("rev-parse", "--git-dir")
            named = self.repo.run_bytes("rev-parse", "--verify", "-q", "HEAD", check=False)
            head = self.repo.head()
            if named.strip() and head is None:
                return False  # the branch names a commit whose objects are gone
            if head is not None:
                self.repo.ls_tree(head)
            return True
        except GitError:
            return False

    def _move_aside(self) -> None:
        path = self.service.path
        self.repo.close()  # its git process would keep reading the old object store
        try:  # the config usually survives what broke the objects
            self._chain = notify_targets(str(path / ".git"), {})
        except Exception:  # noqa: BLE001 - unreadable: nothing to carry over
            logger.warning("%s: the replica's chain settings could not be read", self.service.name)
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d%H%M%S')}")
        if aside.exists():
            shutil.rmtree(aside)
        path.rename(aside)
        logger.warning("%s: moved the corrupt replica to %s", self.service.name, aside)

    # -- one attempt ------------------------------------------------------------------
    def sync_once(self) -> SyncResult:
        """Fetch, verify, fast-forward and swap once; never raise for a kbgit error."""
        with self._lock:
            started = time.monotonic()
            st = self.service.sync
            st.last_attempt = time.time()
            self._stages = {}
            try:
                result = self._sync_standby(started) if self.hub else self._sync_primary(started)
            except KbgitError as exc:
                result = SyncResult(ERROR, self.service.commit, st.upstream_head, str(exc))
                if self.hub and not self._local_ok():  # e.g. objects lost under the clone
                    self._move_aside()
                    self._ensure_replica()
            except Exception as exc:  # a bug must not stop the follower: recorded, backoff
                logger.exception("%s: sync attempt failed", self.service.name)
                result = SyncResult(ERROR, self.service.commit, st.upstream_head, describe(exc))
            result = dataclasses.replace(
                result,
                seconds=round(time.monotonic() - started, 4),
                stages={k: round(v, 4) for k, v in self._stages.items()},
            )
            self._record(result)
            return result

    def _record(self, result: SyncResult) -> None:
        st = self.service.sync
        previous = st.last_result
        st.last_result = result.status
        st.last_error = result.error
        if result.ok:
            st.last_success = time.time()
            st.failures_in_row = 0
        else:
            st.failures_in_row += 1
            st.sync_failures += 1
            if previous != result.status or st.failures_in_row in (1, 10, 100, 1000):
                logger.warning("%s: sync %s: %s", self.service.name, result.status, result.error)

    def _check_writer(self) -> None:
        """Fence this primary when the hub's writer record names another store."""
        st = self.service.sync
        if time.monotonic() - self._writer_checked < self.writer_check_every:
            return  # a primary polls its HEAD every second; the hub is asked less often
        if not (self.service.path / ".git").is_dir() or self.repo.remote_url(HUB_REMOTE) is None:
            return
        self._writer_checked = time.monotonic()
        try:
            with self._stage("writer"):
                status = fence_check(self.repo, HUB_REMOTE)
        except GitError as exc:  # hub unreachable: keep the last verdict, say so
            st.writer = {**(st.writer or {}), "error": redact(exc.stderr or str(exc))}
            return
        st.writer = {**status.hub.to_json(), "held": status.held} if status.hub else None
        fenced = status.describe() if status.held is False else None
        if fenced != st.fenced:
            log = logger.error if fenced else logger.warning
            log("%s: %s", self.service.name, f"fenced: {fenced}" if fenced else "writer again")
        st.fenced = fenced
        st.role = "fenced" if fenced else "primary"

    def _sync_primary(self, started: float) -> SyncResult:
        self._check_writer()
        head = self.repo.head()
        self.service.sync.upstream_head = head
        if head is None or head == self.service.commit:
            return SyncResult(OK, self.service.commit, head)
        if any(r.commit == head for r in self.service.sync.refused):
            return SyncResult(REFUSED, self.service.commit, head, "HEAD failed verification")
        return self._apply(head, started, move=False)

    def _sync_standby(self, started: float) -> SyncResult:
        st = self.service.sync
        try:
            with self._stage("fetch"):
                upstream = self.repo.fetch(HUB_REMOTE, self.branch, config=FETCH_CONFIG)
        except GitError as exc:
            if not self._local_ok():
                self._move_aside()
                self._ensure_replica()
            return SyncResult(
                ERROR, self.service.commit, st.upstream_head, f"fetch: {redact(exc.stderr)}"
            )
        st.upstream_head = upstream
        head = self.repo.head()
        if upstream is not None and upstream != head and head == self.service.commit is not None:
            return self._catch_up(head, upstream, started)  # the usual case: one git call
        self._measure_lag(upstream)
        if upstream is None:
            return SyncResult(OK, self.service.commit, None)
        st.diverged = head is not None and not self.repo.is_ancestor(head, upstream)
        if st.diverged:
            # commits on either side: the hub may even be behind what we serve (restored
            # from an old backup), and "0 commits of lag" would then read as "in sync"
            st.lag_commits = self.repo.count_commits(f"{self.service.commit or head}...{upstream}")
            return SyncResult(DIVERGED, self.service.commit, upstream, _diverged(head, upstream))
        if head == upstream:
            if self.service.commit != head:
                return self._apply(head, started, move=False)
            return SyncResult(OK, head, upstream)
        spec = f"{head}..{upstream}" if head else upstream
        out = self.repo.run("rev-list", "--first-parent", f"--max-count={MAX_FALLBACK + 1}", spec)
        return self._advance(out.split(), upstream, started)

    def _catch_up(self, head: str, upstream: str, started: float) -> SyncResult:
        """Decide ancestry, lag and the commits to try from one ``git log head...upstream``.

        The same answers as ``merge-base --is-ancestor``, ``log served..upstream`` and
        ``rev-list --first-parent head..upstream`` (served == head here), in one process.
        """
        st = self.service.sync
        out = self.repo.run("log", "--left-right", "--format=%m %H %ct %P", f"{head}...{upstream}")
        ours, times, first_parent = 0, [], {}
        for line in out.splitlines():
            mark, sha, when, *parents = line.split()
            if mark == "<":
                ours += 1  # a commit we have and the hub has not
            else:
                times.append(int(when))
                first_parent[sha] = parents[0] if parents else None
        st.lag_commits, st.behind_since = len(times), (float(times[-1]) if times else None)
        st.diverged = ours > 0
        if st.diverged:
            st.lag_commits += ours
            return SyncResult(DIVERGED, self.service.commit, upstream, _diverged(head, upstream))
        chain: list[str] = []
        commit: str | None = upstream
        while commit in first_parent and len(chain) <= MAX_FALLBACK:
            chain.append(commit)
            commit = first_parent[commit]
        return self._advance(chain, upstream, started)

    def _advance(self, candidates: list[str], upstream: str, started: float) -> SyncResult:
        """Serve the newest verified commit of ``candidates`` (newest first, up to upstream)."""
        first: SyncResult | None = None
        result = SyncResult(OK, self.service.commit, upstream)
        for candidate in candidates:
            result = self._apply(candidate, started, move=True)
            if result.status != REFUSED:
                break
            first = first or result
        # the newest commit decides the status; an older good one may still be served
        result = first or result
        return dataclasses.replace(result, commit=self.service.commit, upstream=upstream)

    def _apply(self, commit: str, started: float, *, move: bool) -> SyncResult:
        """Verify ``commit``, fast-forward to it if ``move``, then swap it in."""
        svc = self.service
        known = next((r for r in svc.sync.refused if r.commit == commit), None)
        if known is not None:
            return SyncResult(REFUSED, svc.commit, commit, known.reason)

        clock = [time.monotonic()]

        def verified() -> None:  # after verification, while the model may still load
            self._stages["verify"] = time.monotonic() - clock[0]
            clock[0] = time.monotonic()

        try:
            loaded: Loaded = svc.prepare(commit, verified=verified)
        except GitError:
            raise  # the clone or git, not the commit: an error, retried with backoff
        except Exception as exc:  # noqa: BLE001 - any failure refuses the commit, recorded
            svc.refuse(commit, describe(exc))
            svc.forget_unused()
            return SyncResult(REFUSED, svc.commit, commit, describe(exc))
        self._stages["model"] = time.monotonic() - clock[0]
        if move:  # only a commit that verified AND loaded moves the replica
            with self._stage("fast_forward"):
                self.repo.run(
                    "-c", "maintenance.auto=false", "merge", "--ff-only", "--quiet", commit
                )
        with self._stage("swap"):
            svc.install(loaded, started)
        if self.downstream is not None:
            self.downstream.poke()  # returns at once; the next tier fetches from our clone
        self._measure_lag(self.service.sync.upstream_head if self.hub else commit)
        if move:
            self._maintain()
        return SyncResult(UPDATED, commit, commit)

    def _maintain(self) -> None:
        """Run git's auto-maintenance every MAINTAIN_EVERY updates (not in every fetch/merge)."""
        self._updates += 1
        if self._updates % self.maintain_every == 0:  # after the swap: never delays serving
            with self._stage("maintenance"):
                self.repo.run("maintenance", "run", "--auto", "--quiet")

    def _measure_lag(self, upstream: str | None) -> None:
        st, served = self.service.sync, self.service.commit
        if upstream is None or upstream == served:
            st.lag_commits, st.behind_since = 0, None
            return
        spec = f"{served}..{upstream}" if served else upstream
        times = self.repo.run("log", "--format=%ct", spec).split()
        st.lag_commits = len(times)
        st.behind_since = float(times[-1]) if times else None

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self._stages[name] = self._stages.get(name, 0.0) + time.monotonic() - began

    # -- the loop ---------------------------------------------------------------------
    def next_delay(self, result: SyncResult) -> float:
        """Return seconds until the next attempt: the interval, or capped backoff."""
        if result.ok:
            return self.interval
        failures = max(1, self.service.sync.failures_in_row)
        return min(self.backoff_max, self.interval * 2 ** min(failures - 1, 16))

    def wake(self) -> None:
        """Run the next attempt now (the post-receive hook calls /admin/sync)."""
        self._wake.set()

    def _attempt(self, scheduler: schedule.Scheduler) -> None:
        """Run one sync and schedule the next after the interval (or the backoff)."""
        self._hold()
        try:
            result = self.sync_once()
        except Exception:  # noqa: BLE001 - the daemon must outlive a bug in one attempt
            logger.exception("%s: sync attempt crashed", self.service.name)
            result = SyncResult(ERROR, self.service.commit, error="internal error")
        scheduler.clear()
        scheduler.every(self.next_delay(result)).seconds.do(self._attempt, scheduler)

    def run(self, stop: threading.Event | None = None) -> None:
        """Sync until ``stop`` (or :meth:`stop`) is set; each attempt is one sync_once.

        A private ``schedule`` scheduler keeps the interval (and the capped backoff after
        failures); :meth:`wake` (``POST /admin/sync``) runs the next attempt at once.
        """
        stop = stop or self._stop
        scheduler = schedule.Scheduler()
        self._attempt(scheduler)
        while not stop.is_set() and not self._stop.is_set():
            idle = scheduler.idle_seconds
            woken = self._wake.wait(max(0.0, idle) if idle is not None else None)
            self._wake.clear()
            if stop.is_set() or self._stop.is_set():
                break
            if woken:
                scheduler.run_all()
            else:
                scheduler.run_pending()

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, name=f"kbgit-sync-{self.service.name}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait for the current attempt to finish."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._held is not None:
            self._held.release()
            self._held = None

    def _hold(self) -> None:
        """Take the follower lock if free (it tells promote/rejoin a process serves here)."""
        git_dir = self.service.path / ".git"
        if self._held is None and git_dir.is_dir():
            lock = filelock.FileLock(str(git_dir / FOLLOWER_LOCK))
            with contextlib.suppress(filelock.Timeout):
                lock.acquire(timeout=0)
                self._held = lock

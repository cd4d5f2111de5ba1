"""Serving state: the verified snapshot a server answers from, and how it is swapped.

A :class:`KnowledgeService` holds one store's current :class:`~kbgit.format.snapshot.Snapshot`
and the embedder its ledger names, as a single immutable pair. A reload verifies and
loads the new commit beside the old one, then replaces the pair with one reference
assignment: a query reads the pair once, so every answer comes wholly from one commit,
and the old snapshot is freed when its last in-flight query returns.

>>> registry = ServiceRegistry()
>>> svc = registry.add(KnowledgeService("default", "./kb", embedders=registry.embedders))
>>> svc.reload()                                        # doctest: +SKIP
>>> svc.query("how do I rotate keys", k=5).commit       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import MAX_K
from ..embeddings import Embedder, load_embedder
from ..errors import ConfigError, IntegrityError, KbgitError, NotReadyError, QueryError
from ..format.ann import AnnSettings
from ..format.anncache import AnnCache
from ..format.checks import SegmentCache
from ..format.limits import Limits
from ..format.manifest import MANIFEST_PATH, Manifest
from ..format.signatures import new_commits, require_signed
from ..format.snapshot import Snapshot, load_snapshot, with_ann
from ..format.verified import VerifiedRecord
from ..gitrepo import GitRepo
from ..models import ModelAllowList, check_model_id
from ..retrieval.evals import Score, served_score
from ..retrieval.fusion import HybridOptions
from ..retrieval.lexical import LexicalIndex
from ..retrieval.search import LexicalIndexes, search
from ..store import QueryResult

logger = logging.getLogger(__name__)

#: refused commits remembered for /health (oldest dropped first)
MAX_REFUSED = 20


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A verified snapshot and the embedder for its model: swapped as one reference."""

    snapshot: Snapshot
    embedder: Embedder
    loaded_at: float
    #: who signed the commit (allowed-signers principal); None when signatures are off
    signer: str | None = None
    #: BM25 over the same snapshot's live chunks (built before the swap)
    lexical: LexicalIndex | None = None


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A commit that failed verification and is not served."""

    commit: str
    reason: str
    at: float


@dataclasses.dataclass
class SyncState:
    """What the follower last saw; written by the follower, read by /health and /metrics."""

    role: str = "primary"
    started_at: float = dataclasses.field(default_factory=time.time)
    #: hub URL with any credentials stripped; empty for a primary
    upstream: str = ""
    last_attempt: float | None = None
    last_success: float | None = None
    #: "ok", "updated", "refused", "diverged", "error" or None before the first attempt
    last_result: str | None = None
    last_error: str | None = None
    failures_in_row: int = 0
    sync_failures: int = 0
    upstream_head: str | None = None
    lag_commits: int = 0
    #: commit time of the oldest upstream commit not yet served (None when caught up)
    behind_since: float | None = None
    refused: list[Refusal] = dataclasses.field(default_factory=list)
    refused_total: int = 0
    diverged: bool = False
    #: a primary fenced by a promotion: why (None while it holds the writer role)
    fenced: str | None = None
    #: the hub's writer record (refs/kbgit/writer) as a primary last saw it
    writer: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the ``sync`` section of /health."""
        return {
            "upstream": self.upstream or None,
            "last_attempt": _iso(self.last_attempt),
            "last_success": _iso(self.last_success),
            "last_result": self.last_result,
            "last_error": self.last_error,
            "failures_in_row": self.failures_in_row,
            "upstream_head": self.upstream_head,
            "diverged": self.diverged,
            "fenced": self.fenced,
            "writer": self.writer,
        }


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a snapshot loads (its 100k+ new objects trigger rescans)."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


#: seconds between full collections of everything frozen (frees cycles frozen by chance)
FULL_GC_EVERY = 3600.0
_last_full_gc = time.monotonic()


def freeze_long_lived() -> None:
    """Move what is alive now (the served snapshots) out of the cyclic GC's reach.

    Snapshots hold no reference cycles, so reference counting still frees an old one
    when its last query returns; frozen objects are only skipped by collections, which
    otherwise rescan every row of every snapshot and stall queries for ~0.25 s. Cyclic
    garbage that happened to be alive at a freeze is reclaimed by one full collection
    an hour at most.
    """
    global _last_full_gc
    with _gc_lock:
        if time.monotonic() - _last_full_gc > FULL_GC_EVERY:
            gc.unfreeze()
            gc.collect()
            _last_full_gc = time.monotonic()
        else:
            gc.collect(1)
        gc.freeze()


class EmbedderPool:
    """Embedders shared by every store of a process, one per model id, preloaded.

    A commit's model id is only a name: ``models`` (from local settings) says what it
    may load, and nothing outside that list is ever loaded (kbgit/models.py).
    """

    def __init__(self, threads: int | None = 1, models: ModelAllowList | None = None) -> None:
        self.threads = threads
        self.models = models or ModelAllowList()
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def has(self, model_id: str) -> bool:
        """Tell whether the embedder for ``model_id`` was created already."""
        return model_id in self._embedders

    def warm(self, model_id: str) -> None:
        """Load ``model_id`` in the background; errors surface on the next :meth:`get`."""
        try:
            self.get(model_id)
        except Exception as exc:  # noqa: BLE001 - reported by the get() that needs it
            logger.debug("warming %s failed: %s", model_id, exc)

    def get(self, model_id: str) -> Embedder:
        """Return the embedder for ``model_id``, loading its weights now if needed."""
        setting = self.models.resolve(model_id)  # refuses a model not allowed here
        try:
            with self._lock:
                emb = self._embedders.get(model_id)
                if emb is None:
                    emb = load_embedder(setting, threads=self.threads)
                    self._embedders[model_id] = emb
            load = getattr(emb, "load", None)
            if callable(load):
                load()  # hot, not warm: the weights are in memory before the swap
                emb.embed(["warm up"])
        except KbgitError:
            raise
        except Exception as exc:  # a broken model directory: any library error
            raise ConfigError(f"cannot load model {model_id}: {type(exc).__name__}: {exc}") from exc
        return emb


class KnowledgeService:
    """One store as served: current snapshot, its embedder, reload and sync status."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        embedders: EmbedderPool | None = None,
        role: str = "primary",
        upstream: str = "",
        manage_gc: bool = False,
        limits: Limits | None = None,
        allowed_signers: str = "",
        ann: AnnSettings | None = None,
    ) -> None:
        self.name = name
        #: size limits on what a commit may make this server read (docs, index files)
        self.limits = limits or Limits()
        #: allowed-signers file; when set, only commits signed by its keys are served
        self.allowed_signers = allowed_signers
        self.path = Path(path)
        #: one long-lived ``git cat-file`` reads its objects (kbgit/catfile.py)
        self.repo = GitRepo(self.path, keep_reader=True)
        self.cache = SegmentCache()
        #: commits verified on this machine: a restart does not verify them again
        self.record = VerifiedRecord.open(self.repo)
        #: per-segment BM25 terms cached by content; one lexical index per loaded commit
        self.lexical = LexicalIndexes.for_store(self.path)
        #: ANN indexes of large segments, built here from verified vectors (before a swap)
        self.ann = AnnCache.for_store(self.path, ann or AnnSettings())
        #: how queries that name no mode retrieve
        self.options = HybridOptions()
        #: (commit, score) of the last served commit's own evals/ (None: it has none)
        self.eval_score: tuple[str, Score] | None = None
        #: the one scorer thread, and the newest served commit it has yet to score
        self._eval_thread: threading.Thread | None = None
        self._eval_next: Loaded | None = None
        self._eval_lock = threading.Lock()
        self.embedders = embedders or EmbedderPool()
        self.sync = SyncState(role=role, upstream=upstream)
        #: a server process sets this: freeze served snapshots out of the cyclic GC
        self.manage_gc = manage_gc
        self.reloads = 0
        self.reload_seconds = 0.0
        self.last_reload_seconds: float | None = None
        self._current: Loaded | None = None
        #: serializes reloads and sync attempts (the follower takes it too)
        self.lock = threading.RLock()

    # -- state ------------------------------------------------------------------------
    @property
    def current(self) -> Loaded | None:
        """Return the snapshot being served with its embedder, or None before the first load."""
        return self._current

    @property
    def ready(self) -> bool:
        """Tell whether queries can be answered (index and model in memory, not fenced)."""
        return self._current is not None and self.sync.fenced is None

    @property
    def commit(self) -> str | None:
        """Return the commit being served."""
        cur = self._current
        return cur.snapshot.commit if cur else None

    # -- loading ----------------------------------------------------------------------
    def prepare(self, rev: str, *, verified: Callable[[], None] | None = None) -> Loaded:
        """Verify ``rev`` fully and load it with its embedder, without serving it yet.

        ``verified`` runs once the commit has passed verification, while the model may
        still be loading (the follower fast-forwards the replica there).
        """
        signer = self._check_signed(rev)
        self._warm_model(rev)
        clock = [time.monotonic()]
        with gc_paused():
            snap = load_snapshot(
                self.repo, rev, cache=self.cache, limits=self.limits, record=self.record
            )
        took = {"load": _lap(clock)}
        snap = with_ann(snap, self.ann)  # minutes for a new 1M segment: GC stays on
        took["ann"] = _lap(clock)
        if verified is not None:
            verified()
        lexical = self.lexical.get(snap)
        took["lexical"] = _lap(clock)
        embedder = self.embedders.get(snap.ledger.model_id)
        took["model"] = _lap(clock)
        logger.info(
            "%s: prepared %s: %s",
            self.name,
            snap.commit[:12],
            ", ".join(f"{k} {v:.3f}s" for k, v in took.items()),
        )
        if embedder.dim != snap.ledger.dim:
            raise IntegrityError(
                f"model {snap.ledger.model_id} makes {embedder.dim}-d vectors, "
                f"the commit holds {snap.ledger.dim}-d ones"
            )
        return Loaded(snap, embedder, time.time(), signer=signer, lexical=lexical)

    def _check_signed(self, rev: str) -> str | None:
        """Require an allowed signature on every commit ``rev`` adds to the served one."""
        if not self.allowed_signers:
            return None
        commit = self.repo.rev_parse(rev) or rev
        added = [c for c in new_commits(self.repo, commit, self.commit) if c != commit]
        return require_signed(self.repo, [commit, *added], self.allowed_signers)[0].signer

    def _warm_model(self, rev: str) -> None:
        """Start loading the commit's model while its index is verified, if it may load it.

        Only a model id that passes :func:`check_model_id` and this host's allow-list
        starts a load, so what loads is chosen by local settings, never by the commit.
        """
        raw = self.repo.read_file(rev, MANIFEST_PATH)
        try:
            manifest = Manifest.from_bytes(raw) if raw else None
            if manifest is None:
                return
            check_model_id(manifest.model_id, manifest.dim)
            self.embedders.models.resolve(manifest.model_id)
        except KbgitError:
            return  # verification (or get()) will report it
        model_id = manifest.model_id
        if not self.embedders.has(model_id):
            threading.Thread(
                target=self.embedders.warm, args=(model_id,), name="kbgit-model", daemon=True
            ).start()

    def install(self, loaded: Loaded, started: float | None = None) -> None:
        """Serve ``loaded`` from now on (one reference assignment), then free the old one."""
        old = self._current
        self._current = loaded
        snap = loaded.snapshot
        changed = old is None or old.snapshot.commit != snap.commit
        del old  # freed here by reference counting, or when its last query returns
        self.cache.retain(set(snap.cache_keys), set(snap.doc_blobs), set(snap.shard_keys))
        self.lexical.retain(snap)
        self.ann.retain(self.ann.keys(snap.manifest))
        if self.manage_gc:
            freeze_long_lived()
        if changed:
            self._score_evals(loaded)
            took = time.monotonic() - started if started is not None else 0.0
            self.reloads += 1
            self.reload_seconds += took
            self.last_reload_seconds = took
            logger.info(
                "%s: serving %s (%d vectors, %.3fs)",
                self.name,
                snap.commit[:12],
                snap.vectors,
                took,
            )

    def _score_evals(self, loaded: Loaded) -> None:
        """Score the served commit's own eval sets in the background (for /metrics).

        One scorer thread per service: commits served while it runs are folded into one
        more round, for the newest (an eval set embeds every question; a thread per
        commit stacked up when commits came faster than that).
        """
        with self._eval_lock:
            self._eval_next = loaded
            if self._eval_thread is None:
                self._eval_thread = threading.Thread(
                    target=self._eval_rounds, name="kbgit-eval", daemon=True
                )
                self._eval_thread.start()

    def _eval_rounds(self) -> None:
        while True:
            with self._eval_lock:
                loaded, self._eval_next = self._eval_next, None
                if loaded is None:
                    self._eval_thread = None
                    return
            try:
                self._eval_once(loaded)
            except Exception:  # noqa: BLE001 - a bug must not end scoring for good
                logger.exception("%s: eval of %s failed", self.name, loaded.snapshot.commit[:12])

    def _eval_once(self, loaded: Loaded) -> None:
        snap = loaded.snapshot
        try:
            score = served_score(
                self.repo,
                snap,
                self.options,
                embed=lambda t: loaded.embedder.embed([t])[0],
                lexical=lambda: loaded.lexical or self.lexical.get(snap),
            )
        except KbgitError as exc:
            logger.warning("%s: eval of %s failed: %s", self.name, snap.commit[:12], exc)
            return
        self.eval_score = (snap.commit, score) if score else None

    def reload(self, rev: str = "HEAD") -> Snapshot:
        """Verify and swap in ``rev``; on failure keep serving and raise the error."""
        with self.lock:
            started = time.monotonic()
            commit = self.repo.rev_parse(rev)
            cur = self._current
            if cur is not None and commit == cur.snapshot.commit:
                return cur.snapshot
            try:
                loaded = self.prepare(rev)
            except KbgitError:
                self.forget_unused()
                raise
            self.install(loaded, started)
            return loaded.snapshot

    def forget_unused(self) -> None:
        """Drop cached segments the served snapshot does not use (after a refused load)."""
        cur = self._current
        if cur is not None:
            snap = cur.snapshot
            self.cache.retain(set(snap.cache_keys), set(snap.doc_blobs), set(snap.shard_keys))
            self.lexical.retain(snap)
            self.ann.retain(self.ann.keys(snap.manifest))

    def refuse(self, commit: str, reason: str) -> None:
        """Record that ``commit`` failed verification and is not served."""
        st = self.sync
        if not any(r.commit == commit for r in st.refused):
            st.refused_total += 1
            st.refused.append(Refusal(commit, reason, time.time()))
            del st.refused[:-MAX_REFUSED]
            logger.error("%s: refused commit %s: %s", self.name, commit[:12], reason)

    # -- answering --------------------------------------------------------------------
    def query(
        self,
        text: str,
        k: int = 5,
        *,
        source: str | Sequence[str] | None = None,
        score_threshold: float | None = None,
        options: HybridOptions | None = None,
    ) -> QueryResult:
        """Answer from the current snapshot only (the whole answer names one commit)."""
        cur = self._current
        if cur is None:
            raise NotReadyError(f"store {self.name!r} is not loaded yet", hint="retry shortly")
        if self.sync.fenced is not None:  # its data may be stale: the writer moved elsewhere
            raise NotReadyError(
                f"store {self.name!r} is fenced: {self.sync.fenced}",
                hint="ask the new primary; rejoin this one as a standby: kbgit rejoin STORE",
            )
        if not 1 <= k <= MAX_K:
            raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
        snap = cur.snapshot
        hits = search(
            snap,
            text,
            k,
            options or self.options,
            embed=lambda t: cur.embedder.embed([t])[0],
            lexical=lambda: cur.lexical or self.lexical.get(snap),
            source=source,
            score_threshold=score_threshold,
        )
        return QueryResult(snap.commit, list(hits))

    def lag_seconds(self, now: float | None = None) -> float:
        """Return how stale the served data may be, in seconds (0 when caught up)."""
        now = time.time() if now is None else now
        st = self.sync
        lag = 0.0
        if st.behind_since is not None:
            lag = max(0.0, now - st.behind_since)
        if st.role == "standby" and st.failures_in_row and st.last_result == "error":
            # hub unreachable: the data is at least as old as our last contact with it
            lag = max(lag, now - (st.last_success or st.started_at))
        return round(lag, 3)

    def health(self) -> dict[str, Any]:
        """Return the truth about this store for /health."""
        cur, st = self._current, self.sync
        snap = cur.snapshot if cur else None
        return {
            "store": self.name,
            "role": st.role,
            "ready": self.ready,
            "index": {
                "loaded": snap is not None,
                "vectors": snap.vectors if snap else 0,
                "segments": len(snap.manifest.segments) if snap else 0,
                "documents": len(snap.ledger.documents) if snap else 0,
                "ann_segments": snap.index.approximate if snap else 0,
            },
            "model": {
                "id": snap.ledger.model_id if snap else None,
                "ready": cur is not None,
            },
            "head": {
                "commit": snap.commit if snap else None,
                "time": _iso(snap.commit_time) if snap else None,
                "loaded_at": _iso(cur.loaded_at) if cur else None,
                "signer": cur.signer if cur else None,
            },
            "sync": st.to_json(),
            "lag": {"seconds": self.lag_seconds(), "commits": st.lag_commits},
            "refused": [
                {"commit": r.commit, "reason": r.reason, "at": _iso(r.at)} for r in st.refused
            ],
            "refused_total": st.refused_total,
            "reloads": self.reloads,
            "last_reload_seconds": self.last_reload_seconds,
        }


class ServiceRegistry:
    """The named stores one server process hosts, sharing one embedder pool."""

    def __init__(self, embedders: EmbedderPool | None = None) -> None:
        self.embedders = embedders or EmbedderPool()
        self._services: dict[str, KnowledgeService] = {}

    def add(self, service: KnowledgeService) -> KnowledgeService:
        """Register a service under its name."""
        if service.name in self._services:
            raise KbgitError(f"store {service.name!r} is already registered")
        self._services[service.name] = service
        return service

    def get(self, name: str) -> KnowledgeService | None:
        """Return the service called ``name``, or None."""
        return self._services.get(name)

    def names(self) -> list[str]:
        """Return the store names, in registration order."""
        return list(self._services)

    def services(self) -> list[KnowledgeService]:
        """Return every service, in registration order."""
        return list(self._services.values())

    @property
    def single(self) -> KnowledgeService | None:
        """Return the only service when exactly one is hosted (the short paths use it)."""
        return next(iter(self._services.values())) if len(self._services) == 1 else None

    @property
    def ready(self) -> bool:
        """Tell whether every hosted store can answer."""
        return bool(self._services) and all(s.ready for s in self._services.values())

    def each(self, fn: Callable[[KnowledgeService], Any]) -> dict[str, Any]:
        """Apply fn to every service; return {name: result}."""
        return {name: fn(svc) for name, svc in self._services.items()}


def _lap(clock: list[float]) -> float:
    """Return seconds since ``clock[0]`` and restart it."""
    now = time.monotonic()
    took, clock[0] = now - clock[0], now
    return took


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

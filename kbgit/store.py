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
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import filelock

from .backends import split_model_id
from .config import CONFIG_NAME, HUB_REMOTE, StoreConfig
from .embeddings import FAKE_PREFIX, Embedder, default_backend, load_embedder
from .errors import ConfigError, EvalError, GitError, HubMovedError, KbgitError, QueryError
from .format.ann import AnnSettings
from .format.anncache import AnnCache
from .format.checks import SegmentCache
from .format.ledger import Ledger
from .format.limits import Limits
from .format.signatures import Signature, new_commits, require_signed
from .format.snapshot import Hit, Snapshot, load_snapshot
from .format.trailers import Trailers
from .format.verified import VerifiedRecord
from .fsio import write_atomic
from .gitrepo import GitRepo, absolute_remote, redact
from .ingest.commit import IngestResult, run_ingest
from .ingest.plan import (
    Plan,
    ProgressFn,
    plan_changes,
    scan_folder,
)
from .models import ModelAllowList
from .retrieval.evals import (
    EVALS_DIR,
    Outcome,
    Question,
    commit_questions,
    evaluate,
    parse_eval_set,
)
from .retrieval.fusion import HybridOptions
from .retrieval.search import LexicalIndexes, search
from .writer import Writer

logger = logging.getLogger(__name__)


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
    #: why the next ingest re-embeds every chunk (kb.toml's model, backend or chunking
    #: differ from the ledger's), or None
    reembed: str | None = None


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
            hub = absolute_remote(self.config.hub)
            if self.repo.remote_url(HUB_REMOTE) != hub:
                self.repo.set_remote(HUB_REMOTE, hub)
        self.writer = Writer(self.repo, self.config)
        self._embedder = embedder
        self._cache = SegmentCache()
        #: lexical indexes of the revisions queried (per-segment terms cached by content)
        self.lexical = LexicalIndexes.for_store(self.root)
        #: ANN indexes of large segments, built here and cached under .git/kbgit-ann
        self.ann = AnnCache.for_store(self.root, AnnSettings.of(self.config))

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
            config or StoreConfig(), hub=absolute_remote(hub or (config.hub if config else ""))
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
            self._embedder = load_embedder(
                self.config.model, backend=self.backend, batch_size=self.config.batch_size
            )
        return self._embedder

    @property
    def backend(self) -> str:
        """Return the embedding backend: kb.toml's, else HEAD's ledger's, else the model's default."""
        if self.config.backend:
            return self.config.backend
        ledger = self.writer.head_state().ledger
        if ledger is not None and not ledger.model_id.startswith(FAKE_PREFIX):
            return split_model_id(ledger.model_id)[1]
        return default_backend(self.config.model)

    # -- writer lock and repair (the writer owns them) ---------------------------------
    def lock(
        self, *, wait: bool = True, timeout: float = -1, on_wait: Callable[[], None] | None = None
    ) -> filelock.BaseFileLock:
        """Take the writer lock; raise LockedError if busy and ``wait`` is false."""
        return self.writer.lock(wait=wait, timeout=timeout, on_wait=on_wait)

    def needs_repair(self) -> bool:
        """Tell whether the working tree differs from HEAD (an interrupted write)."""
        return self.writer.needs_repair()

    def repair(self) -> bool:
        """Reset a half-written working tree to HEAD (writer lock held); say if it did."""
        return self.writer.repair()

    # -- reading ----------------------------------------------------------------------
    def snapshot(self, rev: str = "HEAD", *, ann: bool = True) -> Snapshot:
        """Verify and load the store at ``rev``.

        ``ann``: give segments of ``ann_min_vectors`` or more their ANN index (read from
        the local cache, or built now: minutes at a million vectors on a cold cache).
        """
        if self.repo.head() is None:
            raise QueryError(
                f"{self.root} has no commits yet",
                hint=f"ingest documents first: kbgit ingest {self.root} DOCS",
            )
        # a commit verified on this machine before (by this store or the serving daemon)
        # skips the sha256 pass and the ledger checks; any other is verified in full,
        # with the segments and documents this object already checked taken by blob id
        return load_snapshot(
            self.repo,
            rev,
            cache=self._cache,
            limits=Limits.of(self.config),
            ann=self.ann if ann else None,
            record=VerifiedRecord.open(self.repo),
        )

    def verify(self, rev: str = "HEAD") -> Snapshot:
        """Check every file of ``rev`` against its manifest and ledger; raise IntegrityError."""
        self.signature(rev)
        return load_snapshot(self.repo, rev, cache=SegmentCache(), limits=Limits.of(self.config))

    def signature(self, rev: str = "HEAD") -> Signature | None:
        """Return who signed ``rev`` (None without ``allowed_signers``); raise SignatureError."""
        if not self.config.allowed_signers:
            return None
        commit = self.repo.rev_parse(rev)
        if commit is None:
            raise QueryError(f"unknown revision {rev!r}")
        return require_signed(self.repo, [commit], self.config.allowed_signers)[0]

    def _query_embedder(self, snap: Snapshot) -> Embedder:
        if self.embedder.model_id == snap.ledger.model_id:
            return self.embedder
        return self.embedder_for(snap.ledger.model_id)

    def embedder_for(self, model_id: str) -> Embedder:
        """Return an embedder for a commit's model id (a name, resolved by local settings)."""
        setting = ModelAllowList.from_settings([self.config.model]).resolve(model_id)
        return load_embedder(setting, batch_size=self.config.batch_size)

    def query(
        self,
        text: str,
        k: int = 5,
        *,
        rev: str = "HEAD",
        source: str | Sequence[str] | None = None,
        score_threshold: float | None = None,
        options: HybridOptions | None = None,
    ) -> QueryResult:
        """Return the k best chunks for ``text`` at revision ``rev`` (mode per ``options``)."""
        if not text or not text.strip():
            raise QueryError("query text is empty")
        opts = options or HybridOptions()
        snap = self.snapshot(rev, ann=not opts.exact and opts.mode != "lexical")
        hits = search(
            snap,
            text,
            k,
            opts,
            embed=lambda t: self._query_embedder(snap).embed([t])[0],
            lexical=lambda: self.lexical.get(snap),
            source=source,
            score_threshold=score_threshold,
        )
        return QueryResult(snap.commit, list(hits))

    def evaluate(
        self,
        questions: Sequence[Question],
        modes: Sequence[HybridOptions],
        *,
        rev: str = "HEAD",
    ) -> tuple[str, dict[str, list[Outcome]]]:
        """Ask every question in every mode at ``rev``; return (commit, outcomes per mode)."""
        snap = self.snapshot(rev)
        out = {
            opts.mode: evaluate(
                snap,
                questions,
                opts,
                embed=lambda t: self._query_embedder(snap).embed([t])[0],
                lexical=lambda: self.lexical.get(snap),
            )
            for opts in modes
        }
        return snap.commit, out

    def save_eval_set(self, name: str, data: bytes) -> str:
        """Commit an eval set as ``evals/<name>.jsonl`` (versioned with the documents)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
            raise EvalError(f"eval set name {name!r}: use letters, digits, '.', '_' or '-'")
        questions = parse_eval_set(data, label=name)
        with self.writer.transaction() as txn:
            if txn.head is None:
                raise EvalError(f"{self.root} has no commits yet", hint="ingest documents first")
            txn.write(f"{EVALS_DIR}/{name}.jsonl", data)
            commit = txn.commit(
                f"kbgit eval: save {name} ({len(questions)} questions)",
                [],
                Trailers(operation="eval"),
            )
            txn.push()
        return commit

    def eval_sets(self, rev: str = "HEAD") -> list[Question]:
        """Return the questions of the eval sets committed under ``evals/`` at ``rev``."""
        commit = self.repo.rev_parse(rev)
        if commit is None:
            raise QueryError(f"no such revision: {rev}")
        out = commit_questions(self.repo, commit)
        if not out:
            raise EvalError(
                f"{rev} has no eval set under {EVALS_DIR}/",
                hint="name an eval file: kbgit eval STORE EVALS.jsonl",
            )
        return out

    def status(
        self, source: str | os.PathLike[str] | None = None, *, fetch: bool = True
    ) -> StoreStatus:
        """Describe HEAD, hub position and, given a source folder, what an ingest would do."""
        state = self.writer.head_state()
        head, ledger, manifest = state.commit, state.ledger, state.manifest
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
        reembed = self._settings_change(ledger) if ledger is not None else None
        plan = None
        if source is not None:
            files, _problems = scan_folder(source)
            base = ledger or Ledger.empty(self.config.model, 0, self.config.chunking)
            plan = plan_changes(base, files, keep_missing=False, reembed_all=reembed is not None)
        return StoreStatus(
            str(self.root),
            head,
            self.repo.commit_time(head) if head else None,
            len(ledger.documents) if ledger else 0,
            manifest.live_vectors if manifest else 0,
            len(manifest.segments) if manifest else 0,
            sum(len(s.tombstones) for s in manifest.segments) if manifest else 0,
            ledger.model_id if ledger else None,
            redact(self.config.hub) or None,
            hub_head,
            ahead,
            behind,
            self.needs_repair(),
            plan,
            reembed,
        )

    def _settings_change(self, ledger: Ledger) -> str | None:
        """Say why an ingest with this config would re-embed ``ledger``'s chunks, or None.

        The model is not loaded: its id and dimension are known from the config.
        """
        probe = self._embedder or load_embedder(self.config.model, backend=self.backend)
        if ledger.same_settings(probe.model_id, probe.dim, self.config.chunking):
            return None
        was = f"{ledger.model_id} ({ledger.dim}-d), chunking {ledger.chunking}"
        now = f"{probe.model_id} ({probe.dim}-d), chunking {self.config.chunking}"
        return f"kb.toml asks for {now}; the ledger has {was}"

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
    def pull(self) -> str | None:
        """Fast-forward this store to the hub's branch; return the new HEAD."""
        with self.lock(wait=False):
            self.repair()
            hub_head = self.repo.fetch(HUB_REMOTE, self.config.branch) if self.config.hub else None
            if hub_head is None:
                return self.repo.head()
            self.writer.settle(hub_head)  # a commit whose push the hub refused is undone
            head = self.repo.head()
            if head is not None and not self.repo.is_ancestor(head, hub_head):
                raise HubMovedError(
                    "cannot fast-forward: this store has commits the hub lacks",
                    hint="push them (kbgit ingest pushes) or re-clone the store",
                )
            if self.config.allowed_signers:  # refuse an unsigned commit
                require_signed(
                    self.repo, new_commits(self.repo, hub_head, head), self.config.allowed_signers
                )
            # refuse a bad commit
            load_snapshot(self.repo, hub_head, cache=self._cache, limits=Limits.of(self.config))
            self.repo.run("merge", "--ff-only", "--quiet", hub_head)
            return hub_head

    def push(self) -> bool:
        """Push HEAD to the hub if it is ahead; return whether anything was pushed."""
        return self.writer.push()

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
        with self.writer.transaction(wait=wait, on_wait=on_wait) as txn:
            result = run_ingest(
                txn, self.embedder, Path(source), keep_missing=keep_missing, progress=progress
            )
            pushed = txn.push() if push else False
            return dataclasses.replace(result, pushed=pushed)


def _hub_has_history(hub: str, branch: str) -> bool:
    try:
        out = GitRepo(".").run("ls-remote", "--heads", hub, branch)
    except GitError as exc:
        raise GitError(
            f"cannot reach the hub {redact(hub)}",
            stderr=exc.stderr,
            hint="create it first: kbgit hub create PATH",
        ) from exc
    return bool(out)


__all__ = ["IngestResult", "KbgitError", "KnowledgeStore", "QueryResult", "StoreStatus"]

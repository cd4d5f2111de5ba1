"""Rollback and tags: write history forward, verified, and push it.

A rollback is a new forward commit whose tree is REV's, so standbys only ever
fast-forward and rolling back a rollback works the same way. The one file it changes
is ``manifest.json``: it keeps HEAD's ``generation`` so segment names stay unique
across history (docs/history.md); everything else, the ledger included, is
byte-identical to REV's, so no index file is rewritten and the hub receives only a
commit, its trees and one small manifest blob.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import HUB_REMOTE
from ..errors import ConfigError, GitError, IntegrityError, QueryError
from ..format.checks import SegmentCache
from ..format.limits import Limits
from ..format.manifest import MANIFEST_PATH, Manifest
from ..format.snapshot import Snapshot, load_snapshot
from ..format.trailers import Trailers
from ..format.verify import Verified, verify_commit
from ..gitrepo import GitRepo
from ..ingest.commit import change_lines
from .log import LedgerDiff, check_rev, diff_ledgers, resolve

if TYPE_CHECKING:
    from ..store import KnowledgeStore

logger = logging.getLogger(__name__)


def fetch_tags(store: KnowledgeStore) -> None:
    """Fetch the hub's tags (plain fetches use --no-tags)."""
    if store.config.hub:
        store.repo.run("fetch", "--quiet", HUB_REMOTE, "refs/tags/*:refs/tags/*")


def target_commit(store: KnowledgeStore, rev: str) -> str:
    """Resolve ``rev`` to a commit id, fetching the hub's tags if it names none here."""
    check_rev(rev)
    if store.repo.rev_parse(rev) is None and store.config.hub:
        fetch_tags(store)
    return resolve(store.repo, rev)


def _refused(root: Path, rev: str, commit: str, action: str, exc: IntegrityError) -> IntegrityError:
    return type(exc)(
        f"cannot {action} {rev} ({commit[:12]}): it fails verification: {exc}",
        hint=f"inspect it with: kbgit verify {root} {commit[:12]}",
    )


def verified_target(store: KnowledgeStore, rev: str, action: str, cache: SegmentCache) -> Snapshot:
    """Resolve ``rev`` (fetching hub tags if needed) and verify it, or say why not."""
    commit = target_commit(store, rev)
    try:
        return load_snapshot(store.repo, commit, cache=cache)
    except IntegrityError as exc:
        raise _refused(store.root, rev, commit, action, exc) from exc


# -- rollback -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RollbackResult:
    """What a rollback did (or, with dry_run, would do)."""

    commit: str | None
    target: str
    rev: str
    change: LedgerDiff
    vectors: int
    generation: int
    dry_run: bool
    pushed: bool
    warnings: list[str]

    @property
    def noop(self) -> bool:
        """Tell whether HEAD already held REV's store."""
        return self.commit is None and not self.dry_run


def _describe(
    rev: str, target: Verified, when: int, change: LedgerDiff, generation: int
) -> tuple[str, list[str], Trailers]:
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
    subject = f"kbgit rollback: to {rev if rev != target.commit else target.commit[:12]}"
    body = [
        f"The store is restored to {target.commit} of {stamp:%Y-%m-%d %H:%M:%S} UTC.",
        "Changes relative to the previous HEAD:",
        "",
        *change_lines(change.added, change.modified, change.removed, change.renamed),
    ]
    trailers = Trailers(
        added=len(change.added),
        updated=len(change.modified),
        deleted=len(change.removed),
        renamed=len(change.renamed),
        vectors_added=change.chunks_added,
        vectors_deleted=change.chunks_removed,
        vectors=target.manifest.live_vectors,
        generation=generation,
        operation="rollback",
        extra=(("Rollback-To", target.commit),),
    )
    return subject, body, trailers


def _same_store(changes: dict[str, str | None], head: Manifest, target: Manifest) -> bool:
    """Tell whether two commits hold the same store, ignoring the manifest's generation."""
    return set(changes) <= {MANIFEST_PATH} and dataclasses.replace(
        head, generation=0
    ) == dataclasses.replace(target, generation=0)


def _check_restored(repo: GitRepo, target: Verified, generation: int) -> Callable[[str], None]:
    """Return a check that a commit holds ``target``'s tree with only the generation changed.

    ``target`` is verified, so this is the whole verification of the rollback commit, at
    the cost of a ``diff-tree`` of the two (the manifest is their only difference).
    """
    want = dataclasses.replace(target.manifest, generation=generation)

    def check(commit: str) -> None:
        changed = repo.changed_files(target.commit, commit)
        raw = repo.read_file(commit, MANIFEST_PATH)
        if set(changed) - {MANIFEST_PATH} or raw is None or Manifest.from_bytes(raw) != want:
            raise IntegrityError(
                f"rollback commit {commit[:12]} is not the tree of {target.commit}"
            )

    return check


def _warnings(
    store: KnowledgeStore, rev: str, target: Verified, head: str, head_model: str
) -> list[str]:
    out = []
    if target.ledger.model_id != head_model:
        try:
            store.embedder_for(target.ledger.model_id)  # lazy: resolves it, loads no weights
        except ConfigError as exc:
            raise ConfigError(
                f"cannot roll back to {rev}: it was embedded with {target.ledger.model_id}, "
                f"which this host cannot load ({exc})",
                hint=f"install that model here, or choose a revision embedded with {head_model}",
            ) from exc
        out.append(
            f"{rev} was embedded with {target.ledger.model_id}, HEAD with {head_model}: "
            "queries load the model each commit names"
        )
    if not store.repo.is_ancestor(target.commit, head):
        out.append(f"{rev} is not in the history of HEAD")
    return out


def rollback(
    store: KnowledgeStore,
    rev: str,
    *,
    dry_run: bool = False,
    push: bool = True,
    wait: bool = True,
    linear: bool = False,
) -> RollbackResult:
    """Commit REV's store as a new forward commit on HEAD, verified, and push it.

    The commit's first parent is HEAD; its second parent is REV (when REV is in HEAD's
    history and ``linear`` is false), so the push sends nothing REV already has. REV is
    verified against HEAD (what the two share is trusted as HEAD's; the difference is
    checked in full), and only the files that differ are written: the cost follows the
    difference between HEAD and REV, not the store.
    """
    with store.writer.transaction(wait=wait) as txn:
        head, head_ledger, head_manifest = txn.head, txn.ledger, txn.manifest
        if head is None or head_ledger is None or head_manifest is None:
            raise QueryError(f"{store.root} has no commits to roll back")
        commit = target_commit(store, rev)
        try:
            target = verify_commit(
                store.repo, commit, base=head, any_base=True, limits=Limits.of(store.config),
                shards=store.writer.shards,
            )  # fmt: skip
        except IntegrityError as exc:
            raise _refused(store.root, rev, commit, "roll back to", exc) from exc
        change = diff_ledgers(head_ledger, target.ledger)
        generation = max(head_manifest.generation, target.manifest.generation)
        warnings = _warnings(store, rev, target, head, head_ledger.model_id)
        result = RollbackResult(
            None, target.commit, rev, change, target.manifest.live_vectors, generation, False,
            False, warnings,
        )  # fmt: skip
        changes = store.repo.changed_files(head, target.commit)
        if _same_store(changes, head_manifest, target.manifest):
            return result
        if dry_run:
            return dataclasses.replace(result, dry_run=True)
        txn.restore_tree(target.commit)
        txn.write(
            MANIFEST_PATH, dataclasses.replace(target.manifest, generation=generation).to_bytes()
        )
        # REV as a second parent (when it is in HEAD's history) costs standbys nothing (HEAD
        # is the first parent: a fast-forward) and lets git's push and fetch skip every
        # object REV has; without it git sends again each blob of REV that HEAD's tree lacks
        second = None if linear or not store.repo.is_ancestor(target.commit, head) else commit
        new = txn.commit(
            *_describe(rev, target, store.repo.commit_time(commit), change, generation),
            second_parent=second,
            verify=_check_restored(store.repo, target, generation),
        )
        logger.info("rolled back to %s as %s", target.commit[:12], new[:12])
        pushed = txn.push() if push else False
        return dataclasses.replace(result, commit=new, pushed=pushed)


# -- tags ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TagResult:
    """A tag created on a verified commit."""

    name: str
    commit: str
    pushed: bool


#: tag names that git resolves as something else first: pseudo-refs, @, abbreviated ids
_AMBIGUOUS_TAG = re.compile(r"@|[A-Z_]*HEAD|[0-9a-fA-F]{4,64}")


def tag(
    store: KnowledgeStore,
    name: str,
    rev: str = "HEAD",
    *,
    message: str | None = None,
    push: bool = True,
) -> TagResult:
    """Create an annotated tag on a verified commit and push it to the hub."""
    try:
        store.repo.run("check-ref-format", f"refs/tags/{check_rev(name)}")
        if _AMBIGUOUS_TAG.fullmatch(name):  # git would read it as HEAD, @ or a commit id
            raise QueryError(name)
    except (GitError, QueryError) as exc:
        raise ConfigError(f"invalid tag name: {name!r}", hint="e.g. release-2024-06") from exc
    with store.lock():
        if store.repo.rev_parse(f"refs/tags/{name}") is not None:
            raise ConfigError(f"tag {name} already exists", hint="choose another name")
        ref = f"refs/tags/{name}"
        if store.config.hub and store.repo.run("ls-remote", "--tags", HUB_REMOTE, ref):
            raise ConfigError(f"the hub already has a tag {name}", hint="choose another name")
        snap = verified_target(store, rev, "tag", SegmentCache())
        text = message or (
            f"kbgit tag {name}: {len(snap.ledger.documents)} documents, {snap.vectors} vectors"
        )
        store.repo.run(
            *store.writer.author_args(), "tag", "--annotate", name, "-m", text, snap.commit
        )
        pushed = False
        if push and store.config.hub:
            try:
                store.repo.run("push", "--quiet", HUB_REMOTE, f"refs/tags/{name}")
            except GitError as exc:
                raise GitError(
                    f"tag {name} created locally but the hub refused it: {exc.stderr}",
                    stderr=exc.stderr,
                    hint=f"push it later: git -C {store.root} push hub refs/tags/{name}",
                ) from exc
            pushed = True
        return TagResult(name, snap.commit, pushed)

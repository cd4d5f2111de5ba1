"""Run one ingest inside the writer lock: plan, load, embed, write, commit.

Kept apart from :mod:`kbgit.store` so the facade stays small; called only by
:meth:`KnowledgeStore.ingest`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..embeddings import Embedder
from ..errors import ConfigError, DocumentError
from ..format.ledger import DOCS_DIR, Ledger
from ..format.trailers import Trailers
from .chunking import Chunk
from .jsondocs import LOADER, decode_doc
from .plan import (
    Build,
    FileReport,
    LoadedDoc,
    Plan,
    ProgressFn,
    build_ingest,
    embed_docs,
    hidden_path,
    load_bytes,
    load_changed,
    plan_changes,
    scan_folder,
)

if TYPE_CHECKING:
    from ..writer import Transaction

logger = logging.getLogger(__name__)


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


#: changed paths listed in a commit message before it says "and N more"
MESSAGE_PATHS = 200


def change_lines(
    added: Sequence[str],
    modified: Sequence[str],
    deleted: Sequence[str],
    renamed: Sequence[tuple[str, str]],
) -> list[str]:
    """List changed paths git-style (A/M/D/R), at most MESSAGE_PATHS of them."""
    changes = (
        [f"A  {p}" for p in added]
        + [f"M  {p}" for p in modified]
        + [f"D  {p}" for p in deleted]
        + [f"R  {a} -> {b}" for a, b in renamed]
    )
    if len(changes) > MESSAGE_PATHS:
        return [*changes[:MESSAGE_PATHS], f"... and {len(changes) - MESSAGE_PATHS} more"]
    return changes


def describe(plan: Plan, result: IngestResult, build: Build) -> tuple[str, list[str], Trailers]:
    """Describe an ingest as a commit subject, body lines and trailers."""
    subject = (
        f"kbgit ingest: {len(result.added)} added, {len(result.updated)} updated, "
        f"{result.skipped} skipped, {len(result.deleted)} deleted"
    )
    if result.renamed:
        subject += f", {len(result.renamed)} renamed"
    body: list[str] = []
    if plan.reembed_all:
        body += [
            f"Model or chunking changed: every document re-embedded "
            f"({build.ledger.model_id}, {build.ledger.chunking}).",
            "",
        ]
    body += change_lines(result.added, result.updated, result.deleted, result.renamed)
    if result.failed:
        body += ["", "Not ingested:"] + [f"!  {f.path}: {f.reason}" for f in result.failed]
    trailers = Trailers(
        added=len(result.added),
        updated=len(result.updated),
        deleted=len(result.deleted),
        renamed=len(result.renamed),
        skipped=result.skipped,
        vectors_added=build.chunks_added,
        vectors_deleted=build.chunks_deleted,
        vectors=build.manifest.live_vectors,
        generation=build.manifest.generation,
    )
    return subject, body, trailers


def _doc_writes(
    txn: Transaction, old: Ledger, build: Build, loaded: list[LoadedDoc], plan: Plan
) -> None:
    for doc in loaded:
        build.writes[f"{DOCS_DIR}/{doc.path}"] = doc.data
    for old_path, new_path in plan.renamed:
        data = txn.repo.read_file(txn.head or "HEAD", f"{DOCS_DIR}/{old_path}")
        if data is None:
            raise FileNotFoundError(f"{DOCS_DIR}/{old_path} missing from HEAD")
        build.writes[f"{DOCS_DIR}/{new_path}"] = data
    # only a deleted, renamed or reloaded document can leave the ledger (any one when all
    # are re-embedded): checking those alone keeps a one-document change O(1)
    gone = (
        old.documents.keys()
        if plan.reembed_all
        else {*plan.deleted, *(a for a, _ in plan.renamed), *(d.path for d in loaded)}
    )
    for path in sorted(p for p in gone if p in old.documents and p not in build.ledger.documents):
        build.deletes.append(f"{DOCS_DIR}/{path}")


def _reload_stored_docs(
    txn: Transaction, ledger: Ledger, embedder: Embedder
) -> tuple[list[LoadedDoc], list[FileReport]]:
    """Return the documents that live only in the store, to re-embed them under new settings.

    They sit in hidden folders no folder ingest reads (LangChain documents under
    ``docs/.langchain/``, uploads under ``docs/.uploads/``): a model or chunking change must
    carry them over (LangChain ones with their ids, text and metadata), never drop them.
    """
    cfg = txn.writer.config
    out: list[LoadedDoc] = []
    failed: list[FileReport] = []
    for path, entry in ledger.documents.items():
        if entry.loader != LOADER and not hidden_path(path):
            continue
        data = txn.repo.read_file(txn.head or "HEAD", f"{DOCS_DIR}/{path}")
        if data is None:
            raise FileNotFoundError(f"{DOCS_DIR}/{path} missing from HEAD")
        if entry.loader == LOADER:
            doc = decode_doc(data)
            out.append(LoadedDoc(path, data, LOADER, [Chunk(doc.text, doc.metadata)], [doc.id]))
            continue
        try:
            out.append(
                load_bytes(path, data, cfg.chunk_size, cfg.chunk_overlap, embedder.count_tokens)
            )
        except DocumentError as exc:
            failed.append(FileReport(path, str(exc)))
    return out, failed


def stage_build(txn: Transaction, build: Build) -> None:
    """Stage every file a build writes or deletes in the transaction."""
    for path, data in build.writes.items():
        txn.write(path, data)
    for path in build.deletes:
        txn.delete(path)


def run_ingest(
    txn: Transaction,
    embedder: Embedder,
    source: Path,
    *,
    keep_missing: bool,
    progress: ProgressFn | None,
) -> IngestResult:
    """Ingest ``source`` into ``store`` within the writer transaction ``txn``."""
    src, root = source.resolve(), txn.writer.root.resolve()
    if src == root or root in src.parents or src in root.parents:
        raise ConfigError(
            f"{source} overlaps the store {txn.writer.root}: it would ingest the store's own files",
            hint="keep the source folder outside the store and the store outside it",
        )
    ledger, manifest = txn.ledger, txn.manifest
    cfg = txn.writer.config
    reembed = ledger is not None and not ledger.same_settings(
        embedder.model_id, embedder.dim, cfg.chunking
    )
    old = ledger or Ledger.empty(embedder.model_id, embedder.dim, cfg.chunking)
    files, problems = scan_folder(source, progress)
    plan = plan_changes(old, files, keep_missing=keep_missing, reembed_all=reembed)
    if not reembed:
        # a file still there but unreadable keeps its stored version (like an undecodable one)
        unreadable = {p.path for p in problems}
        plan.deleted = [p for p in plan.deleted if p not in unreadable]
    loaded, failed = load_changed(
        plan,
        files,
        chunk_size=cfg.chunk_size,
        chunk_overlap=cfg.chunk_overlap,
        count_tokens=embedder.count_tokens,
        progress=progress,
        max_bytes=cfg.max_document_bytes,
    )
    failed = sorted(problems + failed, key=lambda f: f.path)
    if reembed and ledger is not None:
        stored, lost = _reload_stored_docs(txn, ledger, embedder)
        loaded += stored
        failed += lost
        plan.updated += [d.path for d in stored] + [f.path for f in lost]
    ok = {d.path for d in loaded}
    added = [p for p in plan.added if p in ok]
    updated = [p for p in plan.updated if p in ok]
    # a file that failed under a model change cannot keep vectors of the old model
    deleted = plan.deleted + ([p for p in plan.updated if p not in ok] if reembed else [])
    result = IngestResult(
        commit=None,
        added=added,
        updated=updated,
        skipped=len(plan.unchanged),
        deleted=deleted,
        renamed=plan.renamed,
        failed=failed,
        chunks_added=0,
        chunks_deleted=0,
        reembedded=reembed,
        pushed=False,
    )
    if not (added or updated or deleted or plan.renamed):
        return result
    vectors = (
        embed_docs(loaded, embedder, cfg.batch_size, progress)
        if loaded
        else np.zeros((0, embedder.dim), dtype=np.float32)
    )
    build = build_ingest(
        old,
        manifest,
        plan,
        loaded,
        vectors,
        model_id=embedder.model_id,
        dim=embedder.dim,
        chunking=cfg.chunking,
    )
    _doc_writes(txn, old, build, loaded, plan)
    stage_build(txn, build)
    commit = txn.commit(*describe(plan, result, build))
    logger.info("ingest committed %s", commit[:12])
    return dataclasses.replace(
        result,
        commit=commit,
        chunks_added=build.chunks_added,
        chunks_deleted=build.chunks_deleted,
    )

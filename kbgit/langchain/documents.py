"""LangChain documents in a kbgit store: their ledger paths, JSON form, and the write.

Each LangChain ``Document`` is one ledger document, ``docs/.langchain/<sha256(id)[:32]>.json``
(its id, text and metadata as JSON), with one chunk whose id IS the user's id. A write is
one ingest: ledger + manifest + segment + docs in one commit under the writer lock,
pushed to the hub if one is configured. The folder is hidden, so a ``kbgit ingest`` of
a source folder never deletes these documents.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from ..embeddings import Embedder
from ..errors import ConfigError, DocumentError
from ..format.ledger import DOCS_DIR, Ledger
from ..format.manifest import sha256
from ..format.trailers import Trailers
from ..ingest.chunking import Chunk
from ..ingest.jsondocs import LC_DIR, LOADER, LcDoc, doc_path, encode_doc, json_metadata, normalize
from ..ingest.plan import Build, LoadedDoc, Plan, ProgressFn, build_ingest, embed_docs
from ..store import KnowledgeStore
from ..writer import Transaction

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What one LangChain write committed (``commit`` is None when nothing changed)."""

    commit: str | None
    added: int
    updated: int
    unchanged: int
    deleted: int
    pushed: bool


def _plan(
    base: Ledger, upserts: Sequence[LcDoc], deletes: Iterable[str]
) -> tuple[Plan, list[LoadedDoc], list[int]]:
    plan = Plan()
    loaded: list[LoadedDoc] = []
    keep: list[int] = []
    owners = base.chunk_sources()
    for i, doc in enumerate(upserts):
        path = doc_path(doc.id)
        if owners.get(doc.id, path) != path:
            raise DocumentError(
                f"id {doc.id!r} is a chunk of {owners[doc.id]}, not a LangChain document",
                hint="ids of ingested files are managed by kbgit ingest; pick another id",
            )
        data = encode_doc(doc.id, doc.text, doc.metadata)
        old = base.documents.get(path)
        if old is not None and old.sha256 == sha256(data):
            plan.unchanged.append(path)
            continue
        (plan.updated if old is not None else plan.added).append(path)
        loaded.append(LoadedDoc(path, data, LOADER, [Chunk(doc.text, doc.metadata)], [doc.id]))
        keep.append(i)
    written = {doc_path(d.id) for d in upserts}
    for doc_id in dict.fromkeys(deletes):
        path = doc_path(doc_id)
        if path in base.documents and path not in written and owners.get(doc_id) == path:
            plan.deleted.append(path)
    return plan, loaded, keep


def _describe(
    plan: Plan, build: Build, subject: str, operation: str
) -> tuple[str, list[str], Trailers]:
    head = (
        f"{subject}: {len(plan.added)} added, {len(plan.updated)} updated, "
        f"{len(plan.unchanged)} unchanged, {len(plan.deleted)} deleted"
    )
    trailers = Trailers(
        added=len(plan.added),
        updated=len(plan.updated),
        deleted=len(plan.deleted),
        skipped=len(plan.unchanged),
        vectors_added=build.chunks_added,
        vectors_deleted=build.chunks_deleted,
        vectors=build.manifest.live_vectors,
        generation=build.manifest.generation,
        operation=operation,
    )
    return head, [], trailers


def _check_model(store: KnowledgeStore, ledger: Ledger | None, embedder: Embedder) -> None:
    if ledger is not None and (ledger.model_id, ledger.dim) != (embedder.model_id, embedder.dim):
        raise ConfigError(
            f"{store.root} holds vectors of {ledger.model_id} ({ledger.dim}-d); "
            f"this writer embeds with {embedder.model_id} ({embedder.dim}-d)",
            hint="open the store with the embedding model it was built with",
        )


def _stage(txn: Transaction, build: Build, loaded: list[LoadedDoc], plan: Plan) -> None:
    for doc in loaded:
        txn.write(f"{DOCS_DIR}/{doc.path}", doc.data)
    for path in plan.deleted:
        txn.delete(f"{DOCS_DIR}/{path}")
    for path in build.deletes:
        txn.delete(path)
    for path, data in build.writes.items():
        txn.write(path, data)


def commit_documents(
    store: KnowledgeStore,
    embedder: Embedder,
    upserts: Sequence[LcDoc] = (),
    deletes: Iterable[str] = (),
    *,
    vectors: np.ndarray | None = None,
    push: bool = True,
    subject: str = "kbgit langchain",
    operation: str = "langchain",
    progress: ProgressFn | None = None,
) -> WriteResult:
    """Upsert and delete LangChain documents in one commit (writer lock held), then push.

    ``vectors`` (one normalized row per upsert) skips embedding, e.g. on import.
    """
    with store.writer.transaction() as txn:
        ledger, manifest = txn.ledger, txn.manifest
        _check_model(store, ledger, embedder)
        chunking = ledger.chunking if ledger else store.config.chunking
        base = ledger or Ledger.empty(embedder.model_id, embedder.dim, chunking)
        plan, loaded, keep = _plan(base, upserts, deletes)
        if not plan.changed:
            return WriteResult(None, 0, 0, len(plan.unchanged), 0, False)
        if vectors is not None:
            vecs = normalize(vectors[keep]) if keep else np.zeros((0, embedder.dim), np.float32)
        else:
            vecs = embed_docs(loaded, embedder, store.config.batch_size, progress)
        build = build_ingest(
            base, manifest, plan, loaded, vecs,
            model_id=embedder.model_id, dim=embedder.dim, chunking=chunking,
        )  # fmt: skip
        _stage(txn, build, loaded, plan)
        commit = txn.commit(*_describe(plan, build, subject, operation))
        logger.info("langchain write committed %s", commit[:12])
        pushed = txn.push() if push else False
        return WriteResult(
            commit,
            len(plan.added),
            len(plan.updated),
            len(plan.unchanged),
            len(plan.deleted),
            pushed,
        )


__all__ = [
    "LC_DIR",
    "LcDoc",
    "WriteResult",
    "commit_documents",
    "doc_path",
    "encode_doc",
    "json_metadata",
    "normalize",
]

"""LangChain documents in a kbgit store: their ledger paths, JSON form, and the write.

Each LangChain ``Document`` is one ledger document, ``docs/.langchain/<sha256(id)[:32]>.json``
(its id, text and metadata as JSON), with one chunk whose id IS the user's id. A write is
one ingest: ledger + manifest + segment + docs in one commit under the writer lock,
pushed to the hub if one is configured. The folder is hidden, so a ``kbgit ingest`` of
a source folder never deletes these documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .chunking import Chunk
from .embeddings import Embedder
from .errors import ConfigError, DocumentError
from .ingest import Build, LoadedDoc, Plan, ProgressFn, build_ingest, embed_docs
from .ledger import DOCS_DIR, LEDGER_PATH, Ledger
from .manifest import MANIFEST_PATH
from .snapshot import sha256
from .store import KnowledgeStore

logger = logging.getLogger(__name__)

LC_DIR = ".langchain"
LOADER = "langchain"


def doc_path(doc_id: str) -> str:
    """Return the ledger path of the LangChain document with this id."""
    return f"{LC_DIR}/{hashlib.sha256(doc_id.encode('utf-8')).hexdigest()[:32]}.json"


def encode_doc(doc_id: str, text: str, metadata: dict[str, Any]) -> bytes:
    """Serialize one LangChain document as the JSON file kept under docs/."""
    data = {"id": doc_id, "metadata": metadata, "page_content": text}
    return (json.dumps(data, sort_keys=True, ensure_ascii=False, indent=1) + "\n").encode()


def decode_doc(data: bytes) -> LcDoc:
    """Parse a document file written by :func:`encode_doc`."""
    try:
        obj = json.loads(data)
        return LcDoc(str(obj["id"]), str(obj["page_content"]), dict(obj["metadata"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"malformed LangChain document file: {exc!r}") from exc


def normalize(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
    return np.ascontiguousarray(vecs / np.where(norms == 0, 1.0, norms), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class LcDoc:
    """One LangChain document to write: id, text, JSON metadata."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What one LangChain write committed (``commit`` is None when nothing changed)."""

    commit: str | None
    added: int
    updated: int
    unchanged: int
    deleted: int
    pushed: bool


def json_metadata(doc_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Return metadata as plain JSON values; raise DocumentError if it is not JSON."""
    try:
        meta = json.loads(json.dumps(dict(metadata or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DocumentError(
            f"metadata of document {doc_id!r} is not JSON-serializable: {exc}",
            hint="kbgit stores metadata as JSON (no pickle): use str/int/float/bool/list/dict",
        ) from exc
    return meta


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


def _message(plan: Plan, live: int, generation: int, subject: str, operation: str) -> str:
    return (
        f"{subject}: {len(plan.added)} added, {len(plan.updated)} updated, "
        f"{len(plan.unchanged)} unchanged, {len(plan.deleted)} deleted\n\n"
        f"Kbgit-Added: {len(plan.added)}\nKbgit-Updated: {len(plan.updated)}\n"
        f"Kbgit-Deleted: {len(plan.deleted)}\nKbgit-Renamed: 0\n"
        f"Kbgit-Skipped: {len(plan.unchanged)}\n"
        f"Kbgit-Vectors-Added: {len(plan.added) + len(plan.updated)}\n"
        f"Kbgit-Vectors-Deleted: {len(plan.updated) + len(plan.deleted)}\n"
        f"Kbgit-Vectors: {live}\nKbgit-Generation: {generation}\n"
        f"Kbgit-Operation: {operation}\n"
    )


def _check_model(store: KnowledgeStore, ledger: Ledger | None, embedder: Embedder) -> None:
    if ledger is not None and (ledger.model_id, ledger.dim) != (embedder.model_id, embedder.dim):
        raise ConfigError(
            f"{store.root} holds vectors of {ledger.model_id} ({ledger.dim}-d); "
            f"this writer embeds with {embedder.model_id} ({embedder.dim}-d)",
            hint="open the store with the embedding model it was built with",
        )


def _add_doc_files(build: Build, loaded: list[LoadedDoc], plan: Plan) -> None:
    for doc in loaded:
        build.writes[f"{DOCS_DIR}/{doc.path}"] = doc.data
    build.deletes.extend(f"{DOCS_DIR}/{p}" for p in plan.deleted)
    build.writes[LEDGER_PATH] = build.ledger.to_bytes()
    build.writes[MANIFEST_PATH] = build.manifest.to_bytes()


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
    with store.lock():
        store.repair()
        store._check_hub()
        head, ledger, manifest = store._head_state()
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
        _add_doc_files(build, loaded, plan)
        message = _message(
            plan, build.manifest.live_vectors, build.manifest.generation, subject, operation
        )
        commit = store.write_commit(build.writes, build.deletes, message)
        logger.info("langchain write committed %s", commit[:12])
        pushed = store.push() if push else False
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

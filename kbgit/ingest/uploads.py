"""Documents uploaded through the HTTP API or the console: namespace, path rules, the write.

An uploaded document named ``guides/intro.md`` is stored as ``docs/.uploads/guides/intro.md``
(ledger path ``.uploads/guides/intro.md``). The folder is hidden, and a folder ingest
neither reads hidden files nor deletes hidden ledger paths: ``kbgit ingest KB FOLDER``
never removes an upload, and no file of FOLDER can land in the uploads' namespace. The
two sources of documents live side by side in one store, each managed by its own path.

One call is one transaction of the writer: lock, repair, hub check, one commit, push.
An upload whose bytes equal the stored document's is unchanged (no commit when nothing
changed); a file that cannot be used is reported with its reason, and the rest are
committed, as ``kbgit ingest`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..embeddings import Embedder
from ..errors import ConfigError, DocumentError
from ..format.ledger import DOCS_DIR, Ledger
from ..format.manifest import sha256
from ..format.trailers import Trailers
from ..writer import Transaction, Writer
from .commit import change_lines, stage_build
from .documents import loader_for
from .plan import Build, FileReport, LoadedDoc, Plan, build_ingest, embed_docs, load_bytes

logger = logging.getLogger(__name__)

#: ledger folder of uploaded documents (hidden: folder ingests never touch it)
UPLOAD_DIR = ".uploads"
#: longest document name accepted, in characters
MAX_NAME = 512


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What one upload or delete request committed (``commit`` None: nothing changed)."""

    commit: str | None
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]
    failed: list[FileReport]
    chunks_added: int
    chunks_deleted: int
    vectors: int
    pushed: bool

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (document names as the client gave them)."""
        return dataclasses.asdict(self)


def check_name(name: str) -> str:
    """Return a document name made safe for the store; raise DocumentError if it is not.

    Refused: empty names, absolute paths, ``..`` or ``.`` segments, empty segments,
    backslashes, control characters, hidden segments (``.git``, ``.uploads``), and file
    types no loader reads.
    """
    if not isinstance(name, str) or not name:
        raise DocumentError("empty document name")
    if len(name) > MAX_NAME:
        raise DocumentError(f"document name longer than {MAX_NAME} characters")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise DocumentError("control character in the document name")
    if "\\" in name:
        raise DocumentError("backslash in the document name: use '/' between folders")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DocumentError("absolute path: give a path relative to the store")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise DocumentError(f"path segment {part!r} is not allowed (no '..', no '//')")
        if part.startswith("."):
            raise DocumentError(f"hidden path segment {part!r} is not allowed")
    loader_for(name)
    return unicodedata.normalize("NFC", name)


def upload_path(name: str) -> str:
    """Return the ledger path of the uploaded document ``name``."""
    return f"{UPLOAD_DIR}/{check_name(name)}"


def upload_name(path: str) -> str:
    """Return the document name of an upload's ledger path."""
    return path.removeprefix(UPLOAD_DIR + "/")


def _check_model(ledger: Ledger | None, embedder: Embedder) -> None:
    if ledger is not None and (ledger.model_id, ledger.dim) != (embedder.model_id, embedder.dim):
        raise ConfigError(
            f"the store holds vectors of {ledger.model_id} ({ledger.dim}-d); "
            f"this writer embeds with {embedder.model_id} ({embedder.dim}-d)",
            hint="upload with the embedding model the store was built with",
        )


def _plan(
    base: Ledger,
    files: Mapping[str, bytes],
    deletes: Sequence[str],
    embedder: Embedder,
    failed: list[FileReport],
    *,
    force: bool = False,
) -> tuple[Plan, list[LoadedDoc]]:
    """Sort uploads into added/updated/unchanged and deletions; load what must be embedded."""
    plan, loaded = Plan(), []
    size, overlap = int(base.chunking["size"]), int(base.chunking["overlap"])
    for name, data in files.items():
        try:
            path = upload_path(name)
            old = base.documents.get(path)
            if old is not None and old.sha256 == sha256(data) and not force:
                plan.unchanged.append(path)
                continue
            doc = load_bytes(path, data, size, overlap, embedder.count_tokens)
        except DocumentError as exc:
            failed.append(FileReport(name, str(exc)))
            continue
        (plan.updated if old is not None else plan.added).append(path)
        loaded.append(doc)
    written = {d.path for d in loaded} | set(plan.unchanged)
    for name in dict.fromkeys(deletes):
        try:
            path = upload_path(name)
        except DocumentError as exc:
            failed.append(FileReport(name, str(exc)))
            continue
        if path in written:
            failed.append(FileReport(name, "uploaded and deleted in one request"))
        elif path not in base.documents:
            failed.append(FileReport(name, "no such uploaded document"))
        else:
            plan.deleted.append(path)
    return plan, loaded


def write_uploads(
    writer: Writer,
    embedder: Embedder,
    files: Mapping[str, bytes],
    deletes: Sequence[str] = (),
    *,
    push: bool = True,
    wait: bool = True,
) -> UploadResult:
    """Add or replace ``files`` (name -> bytes) and delete ``deletes`` as one commit; push it."""
    failed: list[FileReport] = []
    with writer.transaction(wait=wait) as txn:
        _check_model(txn.ledger, embedder)
        base = txn.ledger or Ledger.empty(embedder.model_id, embedder.dim, writer.config.chunking)
        plan, loaded = _plan(base, files, deletes, embedder, failed)
        return _commit(txn, embedder, base, plan, loaded, failed, push=push)


def reingest_uploads(
    writer: Writer,
    embedder: Embedder,
    names: Sequence[str] | None = None,
    *,
    push: bool = True,
    wait: bool = True,
) -> UploadResult:
    """Re-read, re-chunk and re-embed uploads (all, or ``names``) from their stored bytes.

    The bytes in the commit are the source of truth: this re-applies the current loaders
    and splitter to them (e.g. after an upgrade that extracts PDF text better).
    """
    failed: list[FileReport] = []
    with writer.transaction(wait=wait) as txn:
        if txn.ledger is None:
            return _commit(txn, embedder, None, Plan(), [], failed, push=push)
        _check_model(txn.ledger, embedder)
        prefix = UPLOAD_DIR + "/"
        if names is None:
            wanted = [upload_name(p) for p in txn.ledger.documents if p.startswith(prefix)]
        else:
            wanted = list(dict.fromkeys(names))
        files: dict[str, bytes] = {}
        for name in wanted:
            path = f"{UPLOAD_DIR}/{name}"
            data = txn.repo.read_file(txn.head or "HEAD", f"{DOCS_DIR}/{path}")
            if path not in txn.ledger.documents or data is None:
                failed.append(FileReport(name, "no such uploaded document"))
            else:
                files[name] = data
        plan, loaded = _plan(txn.ledger, files, (), embedder, failed, force=True)
        return _commit(txn, embedder, txn.ledger, plan, loaded, failed, push=push)


def _commit(
    txn: Transaction,
    embedder: Embedder,
    base: Ledger | None,
    plan: Plan,
    loaded: list[LoadedDoc],
    failed: list[FileReport],
    *,
    push: bool,
) -> UploadResult:
    """Embed, build and commit a planned upload inside ``txn``; push it."""
    vectors = txn.manifest.live_vectors if txn.manifest else 0
    unchanged = [upload_name(p) for p in plan.unchanged]
    result = UploadResult(None, [], [], unchanged, [], failed, 0, 0, vectors, False)
    if base is None or not plan.changed:
        return result
    batch = txn.writer.config.batch_size
    vecs = (
        embed_docs(loaded, embedder, batch) if loaded else np.zeros((0, embedder.dim), np.float32)
    )
    build = build_ingest(
        base, txn.manifest, plan, loaded, vecs,
        model_id=embedder.model_id, dim=embedder.dim, chunking=base.chunking,
    )  # fmt: skip
    _stage_docs(txn, plan, loaded)
    stage_build(txn, build)
    commit = txn.commit(*_describe(plan, build, failed))
    logger.info("upload committed %s", commit[:12])
    pushed = txn.push() if push else False
    return dataclasses.replace(
        result,
        commit=commit,
        added=[upload_name(p) for p in plan.added],
        updated=[upload_name(p) for p in plan.updated],
        deleted=[upload_name(p) for p in plan.deleted],
        chunks_added=build.chunks_added,
        chunks_deleted=build.chunks_deleted,
        vectors=build.manifest.live_vectors,
        pushed=pushed,
    )


def _stage_docs(txn: Transaction, plan: Plan, loaded: list[LoadedDoc]) -> None:
    for doc in loaded:
        txn.write(f"{DOCS_DIR}/{doc.path}", doc.data)
    for path in plan.deleted:
        txn.delete(f"{DOCS_DIR}/{path}")


def _describe(
    plan: Plan, build: Build, failed: list[FileReport]
) -> tuple[str, list[str], Trailers]:
    subject = (
        f"kbgit upload: {len(plan.added)} added, {len(plan.updated)} updated, "
        f"{len(plan.unchanged)} unchanged, {len(plan.deleted)} deleted"
    )
    body = change_lines(plan.added, plan.updated, plan.deleted, [])
    if failed:
        body += ["", "Not written:"] + [f"!  {f.path}: {f.reason}" for f in failed]
    trailers = Trailers(
        added=len(plan.added), updated=len(plan.updated), deleted=len(plan.deleted),
        skipped=len(plan.unchanged), vectors_added=build.chunks_added,
        vectors_deleted=build.chunks_deleted, vectors=build.manifest.live_vectors,
        generation=build.manifest.generation, operation="upload",
    )  # fmt: skip
    return subject, body, trailers


__all__ = [
    "UPLOAD_DIR",
    "UploadResult",
    "check_name",
    "reingest_uploads",
    "upload_name",
    "upload_path",
    "write_uploads",
]

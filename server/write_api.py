"""The HTTP write API: upload, delete, re-ingest and list documents of a store.

Every write is one transaction of the store's writer (lock, repair, hub check, one
commit, push), so concurrent requests queue on the writer lock and each response names
its commit. Writes need the bearer token and happen only on a primary: a standby
answers 409 with the primary's address when it knows it. Uploaded documents live
under ``docs/.uploads/`` (see :mod:`kbgit.ingest.uploads`), which a folder ingest never
deletes.

    POST   /documents             multipart: files=@a.md files=@b.pdf [folder=guides]
    DELETE /documents             {"names": ["guides/a.md"]}
    DELETE /documents/<name>
    POST   /documents/reingest    {"names": [...]}  (all uploads when absent)
    GET    /documents             every document: path, sha256, size, chunks, last commit
    GET    /documents/<path>      one document with its chunks
(and the same under /kb/<name>/documents for each store)
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from kbgit.config import StoreConfig
from kbgit.errors import NotReadyError
from kbgit.format.ledger import DOCS_DIR
from kbgit.history.documents import last_changes
from kbgit.ingest.uploads import UPLOAD_DIR, UploadResult, reingest_uploads, write_uploads
from kbgit.serving.service import KnowledgeService
from kbgit.store import KnowledgeStore

from .auth import require_token
from .fleet import find_primary
from .state import ApiError, AppState, BadRequest, NotFound

bp = Blueprint("kbgit_write", __name__)

#: most files one upload request may carry
MAX_FILES = 1000
#: seconds a peer-discovered primary address is remembered
PRIMARY_TTL = 10.0


class Conflict(ApiError):
    """A write sent to a standby (409), with the primary's address when known."""

    status = 409


def _state() -> AppState:
    return current_app.extensions["kbgit"]


def _service(name: str | None) -> KnowledgeService:
    services = _state().services
    svc = services.single if name is None else services.get(name)
    if svc is None:
        raise NotFound(
            "no such store" if name else "this server hosts several stores: use /kb/<name>/...",
            stores=services.names(),
        )
    return svc


_primary_cache: dict[str, tuple[float, str | None]] = {}


def primary_url(svc: KnowledgeService) -> str | None:
    """Return the primary's base URL: from the config, else the peer whose /health says so."""
    config = _state().config
    if config.primary_url:
        return config.primary_url.rstrip("/")
    if not config.peers:
        return None
    at, url = _primary_cache.get(svc.name, (0.0, None))
    if time.monotonic() - at > PRIMARY_TTL:
        url = find_primary(config.peers)
        _primary_cache[svc.name] = (time.monotonic(), url)
    return url


def writable(name: str | None) -> KnowledgeService:
    """Return the store to write, after checking the token and that this is its primary."""
    require_token()
    svc = _service(name)
    if svc.sync.role != "primary":
        primary = primary_url(svc)
        raise Conflict(
            "this node is a standby: send writes to the primary",
            primary=primary,
            hint="POST to the primary's address" if primary else "primary unknown: set primary_url",
        )
    return svc


def open_store(svc: KnowledgeService) -> KnowledgeStore:
    """Open the primary's working store with the server's pooled embedder."""
    config = StoreConfig.load(svc.path)
    cur = svc.current
    model = cur.snapshot.ledger.model_id if cur else config.model
    return KnowledgeStore(svc.path, config, svc.embedders.get(model))


def sync_service(svc: KnowledgeService) -> None:
    """Serve the new HEAD now, so the answer's commit is what queries see next."""
    follower = _state().followers.get(svc.name)
    if follower is not None:
        follower.sync_once()


def write_documents(
    svc: KnowledgeService, files: dict[str, bytes], deletes: list[str] | None = None
) -> UploadResult:
    """Write uploads and deletions as one commit, push it, and serve it."""
    store = open_store(svc)
    result = write_uploads(store.writer, store.embedder, files, deletes or [])
    if result.commit:
        sync_service(svc)
    return result


def _answer(result: UploadResult) -> tuple[Response, int]:
    nothing_ok = not (result.commit or result.unchanged) and result.failed
    return jsonify(result.to_json()), 400 if nothing_ok else 200


def _names() -> list[str]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("names"), list):
        raise BadRequest('body must be a JSON object like {"names": ["guides/a.md"]}')
    names = body["names"]
    if not all(isinstance(n, str) for n in names) or len(names) > MAX_FILES:
        raise BadRequest(f"names must be at most {MAX_FILES} strings")
    return names


@bp.post("/documents")
@bp.post("/kb/<name>/documents")
def upload(name: str | None = None) -> tuple[Response, int]:
    """Upload files (multipart ``files``, optional ``folder``) as one commit."""
    svc = writable(name)
    request.max_content_length = _state().config.max_upload
    uploads = request.files.getlist("files")
    if not uploads:
        raise BadRequest("no files: send multipart/form-data with one or more 'files' parts")
    if len(uploads) > MAX_FILES:
        raise BadRequest(f"at most {MAX_FILES} files a request")
    folder = request.form.get("folder", "").strip("/")
    files = {}
    for f in uploads:
        filename = f"{folder}/{f.filename}" if folder else (f.filename or "")
        files[filename] = f.read()
    return _answer(write_documents(svc, files))


@bp.delete("/documents")
@bp.delete("/kb/<name>/documents")
def delete_many(name: str | None = None) -> tuple[Response, int]:
    """Delete uploaded documents by name as one commit."""
    svc = writable(name)
    return _answer(write_documents(svc, {}, _names()))


@bp.delete("/documents/<path:doc>")
@bp.delete("/kb/<name>/documents/<path:doc>")
def delete_one(doc: str, name: str | None = None) -> tuple[Response, int]:
    """Delete one uploaded document as one commit."""
    svc = writable(name)
    return _answer(write_documents(svc, {}, [doc.removeprefix(UPLOAD_DIR + "/")]))


@bp.post("/documents/reingest")
@bp.post("/kb/<name>/documents/reingest")
def reingest(name: str | None = None) -> tuple[Response, int]:
    """Re-read, re-chunk and re-embed uploaded documents from their stored bytes."""
    svc = writable(name)
    body = request.get_json(force=True, silent=True) if request.data else {}
    names = _names() if body and "names" in body else None
    store = open_store(svc)
    result = reingest_uploads(store.writer, store.embedder, names)
    if result.commit:
        sync_service(svc)
    return _answer(result)


def _listing(svc: KnowledgeService) -> dict[str, Any]:
    cur = svc.current
    if cur is None:
        raise NotReadyError(f"store {svc.name!r} is not loaded yet", hint="retry shortly")
    snap = cur.snapshot
    last = last_changes(svc.repo, snap.commit, list(snap.ledger.documents))
    docs = [
        {
            "path": path,
            "name": path.removeprefix(UPLOAD_DIR + "/")
            if path.startswith(UPLOAD_DIR + "/")
            else None,
            "sha256": d.sha256,
            "size": d.size,
            "loader": d.loader,
            "chunks": len(d.chunks),
            "last_commit": last.get(path),
        }
        for path, d in sorted(snap.ledger.documents.items())
    ]
    return {"store": svc.name, "commit": snap.commit, "documents": docs}


@bp.get("/documents")
@bp.get("/kb/<name>/documents")
def list_documents(name: str | None = None) -> Response:
    """List the served commit's documents with hash, size, chunks and last commit."""
    return jsonify(_listing(_service(name)))


@bp.get("/documents/<path:doc>")
@bp.get("/kb/<name>/documents/<path:doc>")
def get_document(doc: str, name: str | None = None) -> Response:
    """Return one document of the served commit with its chunks."""
    svc = _service(name)
    cur = svc.current
    if cur is None:
        raise NotReadyError(f"store {svc.name!r} is not loaded yet", hint="retry shortly")
    snap = cur.snapshot
    entry = snap.ledger.documents.get(doc)
    if entry is None:
        raise NotFound(f"no document {doc!r} at commit {snap.commit[:12]}")
    wanted = set(entry.chunks)
    rows = {row.id: row for _seg, row in snap.index.rows() if row.id in wanted}
    last = last_changes(svc.repo, snap.commit, [doc]).get(doc)
    return jsonify(
        path=doc, commit=snap.commit, sha256=entry.sha256, size=entry.size,
        loader=entry.loader, last_commit=last, stored=f"{DOCS_DIR}/{doc}",
        chunks=[{"id": c, "text": rows[c].text, "meta": rows[c].meta} for c in entry.chunks if c in rows],
    )  # fmt: skip

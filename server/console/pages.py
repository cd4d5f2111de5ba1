"""Console pages: search, documents (tree, one document, upload, delete) and status."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from flask import Response, abort, current_app, flash, redirect, request, url_for

from kbgit.config import MAX_K
from kbgit.errors import KbgitError, QueryError
from kbgit.format.snapshot import Snapshot
from kbgit.history.documents import last_changes
from kbgit.history.log import RevisionCache, check_rev
from kbgit.ingest.uploads import UPLOAD_DIR
from kbgit.retrieval.fusion import MODES
from kbgit.retrieval.search import search as search_snapshot
from kbgit.serving.service import KnowledgeService

from ..fleet import fleet_health
from ..write_api import primary_url, write_documents
from .core import bp, can_write, page, require_write, service, state

#: past revisions kept loaded per store for ?rev= pages
REVISIONS = 4


def snapshot_at(svc: KnowledgeService, rev: str) -> Snapshot:
    """Return the served snapshot, or the verified snapshot of ``rev`` if one is given."""
    if not rev:
        cur = svc.current
        if cur is None:
            abort(503, f"store {svc.name!r} is not loaded yet")
        return cur.snapshot
    caches = current_app.extensions.setdefault("kbgit-console-revisions", {})
    cache = caches.get(svc.name)
    if cache is None or cache.repo is not svc.repo:
        cache = caches[svc.name] = RevisionCache(svc.repo, REVISIONS)
    return cache.get(check_rev(rev))


def _k(raw: str | None) -> int:
    try:
        k = int(raw or 5)
    except ValueError:
        raise QueryError("k must be an integer") from None
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}")
    return k


def _min_score(raw: str) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        raise QueryError("min score must be a number") from None
    if not math.isfinite(value):
        raise QueryError("min score must be a finite number")
    return value


def _search(
    svc: KnowledgeService, q: str, k: int, source: str, rev: str, threshold: float | None,
    mode: str,
) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    prefix = source or None
    opts = dataclasses.replace(svc.options, mode=mode) if mode else svc.options
    if rev:
        snap = snapshot_at(svc, rev)
        embedder = svc.embedders.get(snap.ledger.model_id)
        commit = snap.commit
        hits = search_snapshot(
            snap, q, k, opts, embed=lambda t: embedder.embed([t])[0],
            lexical=lambda: svc.lexical.get(snap), source=prefix, score_threshold=threshold,
        )  # fmt: skip
    else:
        res = svc.query(q, k, source=prefix, score_threshold=threshold, options=opts)
        commit, hits = res.commit, res.hits
    took = round((time.perf_counter() - started) * 1000, 1)
    return {"commit": commit, "hits": hits, "took_ms": took}


@bp.get("/")
def index() -> Response:
    """Start at the search page."""
    return redirect(url_for("console.search", **request.args))


@bp.get("/search")
def search() -> str:
    """Search the served commit, or any revision with ?rev=."""
    svc = service()
    args = request.args
    q, source, rev = args.get("q", "").strip(), args.get("source", ""), args.get("rev", "")
    min_score, mode = args.get("min_score", ""), args.get("mode", "")
    result, error, k = None, None, 5
    try:
        k = _k(args.get("k"))
        if len(q) > state().config.max_query_chars:
            raise QueryError(f"query is longer than {state().config.max_query_chars} characters")
        threshold = _min_score(min_score)
        if mode and mode not in MODES:
            raise QueryError(f"mode must be one of {', '.join(MODES)}")
        if q:
            result = _search(svc, q, k, source.strip(), rev.strip(), threshold, mode)
    except KbgitError as exc:
        error = str(exc)
    status = 400 if error else 200
    body = page(
        "search.html", svc, q=q, k=k, source=source, rev=rev, min_score=min_score,
        result=result, error=error,
        max_k=MAX_K, modes=MODES, mode=mode or svc.options.mode,
    )  # fmt: skip
    return body, status  # type: ignore[return-value]


def _tree(documents: dict[str, Any]) -> list[dict[str, Any]]:
    """Nest document paths into folders for the tree view."""
    root: dict[str, Any] = {"children": {}}
    for path, doc in sorted(documents.items()):
        node = root
        *dirs, name = path.split("/")
        for d in dirs:
            node = node["children"].setdefault(d, {"name": d, "children": {}, "count": 0})
            node["count"] += 1
        node["children"][name] = {"name": name, "path": path, "doc": doc, "children": None}

    def listify(node: dict[str, Any]) -> list[dict[str, Any]]:
        items = sorted(node["children"].values(), key=lambda n: (n["children"] is None, n["name"]))
        for item in items:
            if item["children"] is not None:
                item["children"] = listify(item)
        return items

    return listify(root)


@bp.get("/documents")
def documents() -> str:
    """Show the tree of documents (served commit or ?rev=)."""
    svc = service()
    rev = request.args.get("rev", "").strip()
    snap = snapshot_at(svc, rev)
    docs = {
        p: {"chunks": len(d.chunks), "size": d.size, "loader": d.loader}
        for p, d in snap.ledger.documents.items()
    }
    return page(
        "documents.html", svc, docs=docs, tree=_tree(docs), commit=snap.commit, rev=rev,
        can_write=can_write(svc), upload_dir=UPLOAD_DIR, primary=primary_url(svc),
        max_upload_mb=state().config.max_upload // (1024 * 1024),
    )  # fmt: skip


@bp.get("/documents/<path:path>")
def document(path: str) -> str:
    """Show one document: its facts and every chunk's text."""
    svc = service()
    rev = request.args.get("rev", "").strip()
    snap = snapshot_at(svc, rev)
    doc = snap.ledger.documents.get(path)
    if doc is None:
        abort(404, f"no document {path!r} at commit {snap.commit[:12]}")
    wanted = set(doc.chunks)
    rows = {row.id: row for _seg, row in snap.index.rows() if row.id in wanted}
    chunks = [
        {"id": cid, "text": rows[cid].text, "meta": rows[cid].meta}
        for cid in doc.chunks
        if cid in rows
    ]
    last = last_changes(svc.repo, snap.commit, [path]).get(path)
    return page(
        "document.html", svc, path=path, doc=doc, chunks=chunks, commit=snap.commit, rev=rev,
        last=last, can_delete=can_write(svc) and path.startswith(UPLOAD_DIR + "/"),
    )  # fmt: skip


@bp.post("/documents/upload")
def upload() -> Response:
    """Upload files as one commit (primary, logged in)."""
    svc = service()
    require_write(svc)
    folder = request.form.get("folder", "").strip().strip("/")
    files = {}
    for f in request.files.getlist("files"):
        name = f"{folder}/{f.filename}" if folder else (f.filename or "")
        files[name] = f.read()
    if not files:
        abort(400, "choose at least one file")
    result = write_documents(svc, files)
    _flash(result)
    return redirect(url_for("console.documents", store=svc.name))


@bp.post("/documents/delete")
def delete() -> Response:
    """Delete one uploaded document as one commit (primary, logged in)."""
    svc = service()
    require_write(svc)
    if request.form.get("confirm") != "yes":
        abort(400, "tick the confirmation box to delete")
    path = request.form.get("path", "")
    if not path.startswith(UPLOAD_DIR + "/"):
        abort(400, f"only documents under {UPLOAD_DIR}/ can be deleted here")
    result = write_documents(svc, {}, [path.removeprefix(UPLOAD_DIR + "/")])
    _flash(result)
    return redirect(url_for("console.documents", store=svc.name))


def _flash(result: Any) -> None:
    if result.commit:
        flash(
            f"commit {result.commit[:12]}: {len(result.added)} added, {len(result.updated)} "
            f"updated, {len(result.deleted)} deleted, {len(result.unchanged)} unchanged"
            + (", pushed" if result.pushed else ""),
            "ok",
        )
    else:
        flash(f"nothing changed ({len(result.unchanged)} unchanged): no commit", "ok")
    for f in result.failed:
        flash(f"failed: {f.path}: {f.reason}", "error")


@bp.get("/status")
def status() -> str:
    """Show this node's stores and every configured peer's /health."""
    svc = service()
    local = [s.health() for s in state().services.services()]
    served = {h["store"]: h["head"]["commit"] for h in local}
    return page(
        "status.html", svc, local=local, fleet=fleet_health(state().config.peers), served=served
    )

"""The HTTP API: query, health, readiness, metrics and the admin endpoints.

Every store is reachable under ``/kb/<name>/...``; when the server hosts a single store
the short paths (``/query``, ``/health``, ``/ready``, ``/admin/sync``) serve it too.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any

import faiss
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kbgit.config import MAX_K
from kbgit.errors import FormatError, IntegrityError, QueryError
from kbgit.format import jsonio
from kbgit.retrieval.fusion import HybridOptions
from kbgit.serving.service import KnowledgeService

from .auth import require_token
from .health_view import public_health
from .state import AppState, BadRequest, NotFound, Unauthorized

bp = Blueprint("kbgit", __name__)

_MODE_KEYS = {"mode", "alpha", "fusion", "rrf_k", "depth", "exact"}
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_QUERY_KEYS = {"query", "k", "filter", "score_threshold"} | _MODE_KEYS
_FILTER_KEYS = {"source"}
_pinned = threading.local()


def _state() -> AppState:
    return current_app.extensions["kbgit"]


def _pin_threads() -> None:
    """Give faiss one OpenMP thread in this worker thread (OpenMP settings are per thread)."""
    if not getattr(_pinned, "done", False):
        faiss.omp_set_num_threads(1)
        _pinned.done = True


def _service(name: str | None) -> KnowledgeService:
    services = _state().services
    if name is None:
        svc = services.single
        if svc is None:
            raise NotFound(
                "this server hosts several stores: use /kb/<name>/...",
                stores=services.names(),
            )
        return svc
    svc = services.get(name)
    if svc is None:
        raise NotFound(f"no store named {name!r}", stores=services.names())
    return svc


# -- query ------------------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{what} must be a finite number")
    return float(value)


def _k(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise BadRequest(f"k must be an integer between 1 and {MAX_K}")
    return value


def _source(value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and all(isinstance(v, str) for v in value)
        and 1 <= len(value) <= 100
    ):
        return value
    raise BadRequest("filter.source must be a path prefix or a list of 1 to 100 prefixes")


def _text(value: Any) -> str:
    limit = _state().config.max_query_chars
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("query must be a non-empty string")
    if len(value) > limit:
        raise BadRequest(f"query is longer than {limit} characters")
    return value


def _json_body() -> Any:
    """Return the parsed body; 400 for bad or too deeply nested JSON (never a 500)."""
    try:
        return jsonio.loads(request.get_data(cache=True), "request body")
    except FormatError as exc:
        raise BadRequest(f'{exc}; send a JSON object like {{"query": "...", "k": 5}}') from None


def _parse_post() -> dict[str, Any]:
    body = _json_body()
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object like {"query": "...", "k": 5}')
    unknown = sorted(set(body) - _QUERY_KEYS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", allowed=sorted(_QUERY_KEYS))
    # null or {} means no filter; anything else must be an object ([] and "" are refused)
    filt = body.get("filter")
    filt = {} if filt is None else filt
    if not isinstance(filt, dict):
        raise BadRequest('filter must be an object like {"source": "guides/"}')
    bad = sorted(set(filt) - _FILTER_KEYS)
    if bad:
        raise BadRequest(f"unknown filter key(s): {', '.join(bad)}", allowed=sorted(_FILTER_KEYS))
    threshold = body.get("score_threshold")
    return {
        "text": _text(body.get("query")),
        "k": _k(body.get("k", 5)),
        "source": _source(filt.get("source")),
        "score_threshold": None if threshold is None else _number(threshold, "score_threshold"),
        "options": {key: body[key] for key in _MODE_KEYS if key in body},
    }


def _options(given: dict[str, Any], default: HybridOptions) -> HybridOptions:
    """Return the query's retrieval options (QueryError, hence 400, names a bad value)."""
    return dataclasses.replace(default, **given)


def _get_options(args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: args[k] for k in ("mode", "fusion") if k in args}
    try:
        if "alpha" in args:
            out["alpha"] = float(args["alpha"])
        for key in ("rrf_k", "depth"):
            if key in args:
                out[key] = int(args[key])
    except ValueError as exc:
        raise BadRequest("alpha must be a number, rrf_k and depth integers") from exc
    if "exact" in args:
        if args["exact"].lower() not in _BOOLS:
            raise BadRequest(f"exact must be true or false, got {args['exact']!r}")
        out["exact"] = _BOOLS[args["exact"].lower()]
    return out


def _parse_get() -> dict[str, Any]:
    args = request.args
    unknown = sorted(set(args) - {"q", "query", "k", "source", "score_threshold"} - _MODE_KEYS)
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    try:
        k = int(args.get("k", "5"))
        threshold = args.get("score_threshold")
        threshold_f = None if threshold is None else float(threshold)
    except ValueError as exc:
        raise BadRequest("k must be an integer and score_threshold a number") from exc
    sources = args.getlist("source")
    return {
        "text": _text(args.get("q", args.get("query"))),
        "k": _k(k),
        "source": sources or None,
        "score_threshold": None if threshold_f is None else _number(threshold_f, "score_threshold"),
        "options": _get_options(args),
    }


@bp.route("/query", methods=["GET", "POST"])
@bp.route("/kb/<name>/query", methods=["GET", "POST"])
def query(name: str | None = None) -> Response:
    """Answer a query from the one commit currently served."""
    started = time.perf_counter()
    svc = _service(name)
    args = _parse_post() if request.method == "POST" else _parse_get()
    opts = _options(args["options"], svc.options)
    _pin_threads()
    res = svc.query(
        args["text"],
        args["k"],
        source=args["source"],
        score_threshold=args["score_threshold"],
        options=opts,
    )
    took = time.perf_counter() - started
    _state().metrics.query_seconds.labels(svc.name).observe(took)
    return jsonify(
        store=svc.name,
        commit=res.commit,
        took_ms=round(took * 1000, 3),
        mode=opts.to_json(),
        hits=[h.to_json() for h in res.hits],
    )


# -- health -----------------------------------------------------------------------------
@bp.get("/health")
@bp.get("/kb/<name>/health")
def health(name: str | None = None) -> tuple[Response, int]:
    """Report the truth about the served stores; 200 only when they can answer.

    Paths and raw error text only with the admin token (server/health_view.py).
    """
    services = _state().services
    if name is None and services.single is None:
        ok = services.ready
        body = {
            "status": "ok" if ok else "unavailable",
            "stores": services.each(lambda s: s.health()),
        }
    else:
        svc = _service(name)
        ok = svc.ready
        body = {"status": "ok" if ok else "unavailable", **svc.health()}
    return jsonify(body if _token_given() else public_health(body)), 200 if ok else 503


def _token_given() -> bool:
    """Tell whether the request carries the admin token (details of /health are shown)."""
    try:
        require_token()
    except Unauthorized:
        return False
    return True


@bp.get("/ready")
@bp.get("/kb/<name>/ready")
def ready(name: str | None = None) -> tuple[Response, int]:
    """Tell a load balancer whether model and index are loaded (503 until they are)."""
    services = _state().services
    ok = services.ready if name is None else _service(name).ready
    return jsonify(ready=ok), 200 if ok else 503


@bp.get("/kb")
def stores() -> Response:
    """List the hosted stores and whether each is ready."""
    return jsonify(stores=_state().services.each(lambda s: {"ready": s.ready, "commit": s.commit}))


@bp.get("/metrics")
def metrics() -> Response:
    """Export Prometheus metrics."""
    return Response(generate_latest(_state().metrics.registry), mimetype=CONTENT_TYPE_LATEST)


# -- admin ------------------------------------------------------------------------------
def _targets(name: str | None) -> list[KnowledgeService]:
    return _state().services.services() if name is None else [_service(name)]


@bp.post("/admin/sync")
@bp.post("/kb/<name>/admin/sync")
def admin_sync(name: str | None = None) -> tuple[Response, int]:
    """Wake the follower now (202); with ?wait=1 run one sync and return its result."""
    require_token()
    state, wait = _state(), request.args.get("wait", "0") not in ("0", "", "false")
    results: dict[str, Any] = {}
    for svc in _targets(name):
        follower = state.followers.get(svc.name)
        if follower is None:
            results[svc.name] = {"status": "no follower"}
        elif wait:
            results[svc.name] = dataclasses.asdict(follower.sync_once())
        else:
            follower.wake()
            results[svc.name] = {"status": "queued"}
    return jsonify(results=results), 200 if wait else 202


@bp.post("/admin/reload")
@bp.post("/kb/<name>/admin/reload")
def admin_reload(name: str | None = None) -> tuple[Response, int]:
    """Verify and swap in the local HEAD now; 409 if it fails verification."""
    require_token()
    results: dict[str, Any] = {}
    status = 200
    for svc in _targets(name):
        before = svc.commit
        try:
            snap = svc.reload("HEAD")
            results[svc.name] = {"commit": snap.commit, "changed": snap.commit != before}
        except IntegrityError as exc:
            head = svc.repo.head()
            if head:
                svc.refuse(head, str(exc))
            results[svc.name] = {"error": str(exc), "commit": svc.commit}
            status = 409
        except QueryError as exc:  # no commits yet
            results[svc.name] = {"error": str(exc), "commit": svc.commit}
            status = 409
    return jsonify(results=results), status

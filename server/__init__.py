"""The kbgit query server: a Flask app factory over named knowledge services.

Run it with waitress (``kbgit serve`` / ``kbgit standby`` do): one process with worker
threads, so every thread shares the one in-memory snapshot per store and a swap is a
single reference assignment. A pre-fork server (gunicorn workers) would hold a copy of
every index per worker and swap them at different moments.

>>> app = create_app(services, config=ServeConfig(token="s3cret"))     # doctest: +SKIP
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from kbgit.config import ServeConfig
from kbgit.errors import KbgitError, NotReadyError, QueryError
from kbgit.gitrepo import redact
from kbgit.serving.follower import Follower
from kbgit.serving.service import ServiceRegistry

from . import console, write_api
from .api import bp
from .metrics import AppMetrics
from .state import ApiError, AppState
from .webhooks import bp as webhooks_bp

logger = logging.getLogger(__name__)

__all__ = ["AppState", "create_app"]


def create_app(
    services: ServiceRegistry,
    config: ServeConfig | None = None,
    followers: dict[str, Follower] | None = None,
) -> Flask:
    """Create the app serving ``services``; followers (if any) are woken by /admin/sync."""
    config = config or ServeConfig()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = AppState(services, config, AppMetrics(services), dict(followers or {}))
    app.extensions["kbgit"] = state
    app.register_blueprint(bp)
    app.register_blueprint(write_api.bp)
    app.register_blueprint(webhooks_bp)
    console.init_app(app, state)
    # behind a proxy that strips a path prefix and names it in X-Forwarded-Prefix, every
    # console link carries the prefix (the header only shapes the links sent back)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=0, x_host=0, x_prefix=1)  # type: ignore[method-assign]
    _register_errors(app, state)
    return app


def _error(status: int, message: str, **extra: object) -> tuple[Response, int]:
    return jsonify(error=message, **extra), status


def _register_errors(app: Flask, state: AppState) -> None:
    @app.after_request
    def count(resp: Response) -> Response:
        endpoint = (request.url_rule.endpoint if request.url_rule else "unknown").split(".")[-1]
        state.metrics.requests.labels(endpoint, str(resp.status_code)).inc()
        return resp

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        resp, status = jsonify(exc.to_json()), exc.status
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="kbgit admin"'
        return resp, status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        limit = request.max_content_length or state.config.max_body
        return _error(400, f"request body larger than {limit} bytes")

    @app.errorhandler(QueryError)
    def query_error(exc: QueryError) -> tuple[Response, int]:
        return _error(400, str(exc))

    @app.errorhandler(NotReadyError)
    def not_ready(exc: NotReadyError) -> tuple[Response, int]:
        return _error(503, str(exc), hint=exc.hint)

    @app.errorhandler(KbgitError)
    def kbgit_error(exc: KbgitError) -> tuple[Response, int]:
        logger.error("request failed: %s", redact(str(exc)))
        return _error(500, redact(str(exc)), hint=exc.hint and redact(exc.hint))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        return _error(code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error")
        return _error(500, "internal error (logged on the server)")

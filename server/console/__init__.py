"""The web console at ``/ui/``: search, documents, history, status, on every server.

Server-rendered with Jinja and no script at all, so every page works without
JavaScript. Reading is public unless ``ui_public = false``; writing (upload, delete,
rollback) needs a login with the admin token. See :mod:`server.console.core`.

>>> console.init_app(app, state)          # doctest: +SKIP  (create_app does this)
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets

from flask import Flask

from ..state import AppState
from . import pages, text, timeline  # noqa: F401  (importing registers their routes on bp)
from .core import SESSION_HOURS, Sessions, bp, csrf

__all__ = ["init_app"]


def init_app(app: Flask, state: AppState) -> None:
    """Register the console on ``app``: session key, CSRF, template filters, blueprint."""
    token = state.config.token
    # derived from the token: every node sharing the token accepts the session, and a
    # new token logs everyone out; without a token there is no login at all
    app.secret_key = (
        hmac.new(token.encode(), b"kbgit-console-session", hashlib.sha256).digest()
        if token
        else secrets.token_bytes(32)
    )
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="kbgit_session",
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(hours=SESSION_HOURS),
        # the JSON API authenticates with a bearer token, not a cookie: only the
        # console's forms need CSRF tokens (checked in the blueprint's before_request)
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
    )
    app.session_interface = Sessions()
    csrf.init_app(app)
    app.jinja_env.filters.update(highlight=text.highlight, when=text.when, filesize=text.filesize)
    app.register_blueprint(bp)

"""The admin token check shared by the admin endpoints and the write API."""

from __future__ import annotations

import hmac

from flask import current_app, request

from .state import Unauthorized


def token_matches(given: str, token: str) -> bool:
    """Compare a presented token with the configured one in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def require_token() -> None:
    """Raise Unauthorized unless the request carries ``Authorization: Bearer <token>``."""
    token = current_app.extensions["kbgit"].config.token
    if not token:
        raise Unauthorized("admin endpoints are disabled: no token configured (KBGIT_TOKEN)")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(value.strip(), token):
        raise Unauthorized("missing or wrong bearer token")

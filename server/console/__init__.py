"""The web console at ``/ui/``: search, documents, history, status, on every server.

Server-rendered with Jinja and no script at all, so every page works without
JavaScript. Reading is public unless ``ui_public = false``; writing (upload, delete,
rollback) needs a login with the admin token, which opens a signed session cookie
(HttpOnly, SameSite=Strict). Every form carries a CSRF token (Flask-WTF), and every
page is sent with a strict Content-Security-Policy and anti-framing headers.

>>> app.register_blueprint(console.bp)          # doctest: +SKIP  (create_app does this)
"""

from . import pages, timeline  # noqa: F401  (their routes register on the blueprint)
from .base import bp, init_app

__all__ = ["bp", "init_app"]

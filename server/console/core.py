"""The console's blueprint: session, CSRF, security headers, login, shared page helpers.

The web console at ``/ui/``: search, documents, history, status, on every server.

Server-rendered with Jinja and no script at all, so every page works without
JavaScript. Reading is public unless ``ui_public = false``; writing (upload, delete,
rollback) needs a login with the admin token, which opens a signed session cookie
(HttpOnly, SameSite=Strict). Every form carries a CSRF token (Flask-WTF), and every
page is sent with a strict Content-Security-Policy and anti-framing headers.

(:func:`server.console.init_app` registers it; the pages live in ``pages`` and ``timeline``.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from kbgit.errors import KbgitError, QueryError
from kbgit.serving.service import KnowledgeService

from ..auth import token_matches
from ..state import AppState

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
)
csrf = CSRFProtect()

#: how long a console login lasts
SESSION_HOURS = 8
#: sent with every console page: no script, no framing, forms post only to this server
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Sessions(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie is Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Mark the cookie Secure on HTTPS requests (behind a TLS proxy too)."""
        return request.is_secure or super().get_cookie_secure(app)


def state() -> AppState:
    """Return the app's state."""
    return current_app.extensions["kbgit"]


def is_admin() -> bool:
    """Tell whether this browser session logged in with the current admin token."""
    return bool(state().config.token) and session.get("admin") is True


def service() -> KnowledgeService:
    """Return the store chosen by ``?store=`` (the only or first store by default)."""
    services = state().services
    name = request.values.get("store") or (services.names() or [""])[0]
    svc = services.get(name)
    if svc is None:
        abort(404, f"no store named {name!r}")
    return svc


def role(svc: KnowledgeService) -> str:
    """Return 'primary' or 'standby' for a hosted store."""
    return svc.sync.role


def can_write(svc: KnowledgeService) -> bool:
    """Tell whether this session may write to ``svc`` here (logged in, on the primary)."""
    return is_admin() and role(svc) == "primary"


def require_write(svc: KnowledgeService) -> None:
    """Refuse a write from a session that is not logged in, or on a standby."""
    if not is_admin():
        abort(403, "log in with the admin token first")
    if role(svc) != "primary":
        abort(409, "this node is a standby: write on the primary")


def page(template: str, svc: KnowledgeService | None = None, **context: Any) -> str:
    """Render a console page with the header's context."""
    svc = svc or service()
    return render_template(
        template,
        store=svc.name,
        stores=state().services.names(),
        role=role(svc),
        admin=is_admin(),
        **context,
    )


def safe_next(target: str | None) -> str:
    """Return a same-site path to go to after login (never another host)."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return url_for("console.search")
    return target or url_for("console.search")


@bp.before_request
def guard() -> Response | None:
    """Check CSRF on every form post; send anonymous readers to login if reading is private."""
    if request.endpoint == "console.upload":
        # set before anything reads the body (the CSRF check does): uploads may be large
        request.max_content_length = state().config.max_upload
    if request.method == "POST":
        csrf.protect()
    public = request.endpoint in ("console.login", "console.static")
    if not state().config.ui_public and not public and not is_admin():
        return redirect(url_for("console.login", next=request.full_path))
    return None


@bp.after_request
def headers(resp: Response) -> Response:
    """Add the security headers to every console response."""
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    return resp


@bp.errorhandler(CSRFError)
def csrf_error(exc: CSRFError) -> tuple[str, int]:
    """Refuse a form without a valid CSRF token."""
    return _error_page(400, f"form refused: {exc.description}", "reload the page and retry")


@bp.errorhandler(KbgitError)
def kbgit_error(exc: KbgitError) -> tuple[str, int]:
    """Show a library error as a page (400 for bad input, else 500)."""
    return _error_page(400 if isinstance(exc, QueryError) else 500, str(exc), exc.hint)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> tuple[str, int]:
    """Show an HTTP error as a page, not JSON."""
    return _error_page(exc.code or 500, exc.description or exc.name, None)


def _error_page(code: int, message: str, hint: str | None) -> tuple[str, int]:
    try:
        body = page("error.html", code=code, message=message, hint=hint)
    except HTTPException:  # no such store: render without the header's store
        body = render_template(
            "error.html", code=code, message=message, hint=hint, store="", stores=[],
            role="", admin=False,
        )  # fmt: skip
    return body, code


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """Log in with the admin token (opens a session for write and admin actions)."""
    enabled = bool(state().config.token)
    nxt = safe_next(request.values.get("next"))
    if request.method == "POST" and enabled:
        if token_matches(request.form.get("token", ""), state().config.token):
            session.clear()  # a fresh session and CSRF token after login
            session["admin"] = True
            session.permanent = True
            return redirect(nxt)
        flash("wrong token", "error")
        return page("login.html", enabled=enabled, next=nxt), 401  # type: ignore[return-value]
    return page("login.html", enabled=enabled, next=nxt)


@bp.post("/logout")
def logout() -> Response:
    """Close the session."""
    session.clear()
    return redirect(url_for("console.search"))

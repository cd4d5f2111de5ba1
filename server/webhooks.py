"""Push webhooks from git hosts: ``POST /hooks/push`` wakes the follower of a standby.

The checks live in :mod:`kbgit.hub.webhooks`; this blueprint only hands it the raw body
and headers and answers what it decides: 202 (follower woken), 204 (verified but not a
push to the followed branch), 401 (unsigned, wrong signature, or no secret configured:
KBGIT_WEBHOOK_SECRET), 409 (a delivery id seen before), 400 (not a webhook).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from kbgit.hub.webhooks import DeliveryLog, decide

from .state import AppState, NotFound

bp = Blueprint("kbgit_webhooks", __name__)


def _deliveries() -> DeliveryLog:
    """Return this app's log of accepted delivery ids (made on first use)."""
    return current_app.extensions.setdefault("kbgit-webhook-deliveries", DeliveryLog())


@bp.post("/hooks/push")
@bp.post("/kb/<name>/hooks/push")
def push(name: str | None = None) -> tuple[Response, int] | Response:
    """Wake the follower when a verified push event names its branch."""
    state: AppState = current_app.extensions["kbgit"]
    svc = state.services.single if name is None else state.services.get(name)
    if svc is None:
        raise NotFound("no such store (a server with several stores: /kb/<name>/hooks/push)")
    follower = state.followers.get(svc.name)
    if follower is None or not follower.hub:
        raise NotFound(f"store {svc.name!r} follows no hub: webhooks wake standbys only")
    if not state.config.webhook_secret:
        return jsonify(error="webhooks are disabled: no secret (KBGIT_WEBHOOK_SECRET)"), 401
    decision = decide(
        request.headers,
        request.get_data(cache=False),
        secret=state.config.webhook_secret,
        branch=follower.branch,
        seen=_deliveries(),
    )
    if decision.wake:
        follower.wake()
    if decision.status == 204:
        return Response(status=204)
    key = "error" if decision.status >= 400 else "status"
    return jsonify({key: decision.reason, "delivery": decision.delivery}), decision.status

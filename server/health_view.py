"""What /health shows without the admin token: the truth, without paths or raw errors.

Status, readiness, served commit and signer, lag, failure counts and refused commit ids
stay public (a load balancer or a dashboard needs them). The hub's path or URL, git's
raw error text and the reasons commits were refused name files and hosts of the serving
machine: they are shown only to a request that carries the admin bearer token.
"""

from __future__ import annotations

from typing import Any

#: what replaces a detail in the public view
WITHHELD = "withheld: send the admin token (Authorization: Bearer) to see it"


def public_store_health(health: dict[str, Any]) -> dict[str, Any]:
    """Return one store's /health section with its details withheld."""
    out = dict(health)
    sync = dict(out.get("sync") or {})
    for key in ("upstream", "last_error"):
        if sync.get(key):
            sync[key] = WITHHELD
    out["sync"] = sync
    out["refused"] = [{**r, "reason": WITHHELD} for r in out.get("refused", [])]
    return out


def public_health(body: dict[str, Any]) -> dict[str, Any]:
    """Return a whole /health body (one store or ``stores``) with details withheld."""
    if "stores" in body:
        stores = {name: public_store_health(h) for name, h in body["stores"].items()}
        return {**body, "stores": stores}
    return public_store_health(body)

"""The fleet view: every peer named in the config, as its own /health tells it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

#: seconds to wait for a peer's /health (a hung peer must not hang the status page)
PEER_TIMEOUT = 2.0


def _store_rows(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a /health body (one store, or several under "stores") into rows."""
    stores = body.get("stores") if isinstance(body.get("stores"), dict) else {None: body}
    rows = []
    for name, h in stores.items():
        if not isinstance(h, dict):
            continue
        head, sync, lag = h.get("head") or {}, h.get("sync") or {}, h.get("lag") or {}
        rows.append(
            {
                "store": h.get("store") or name,
                "role": h.get("role"),
                "commit": head.get("commit"),
                "lag": lag.get("seconds"),
                "last_sync": sync.get("last_success"),
                "refused": h.get("refused_total", 0),
            }
        )
    return rows


def peer_health(url: str) -> dict[str, Any]:
    """Ask one peer for /health; report it as down with the reason if it does not answer."""
    base = url.rstrip("/")
    try:
        resp = requests.get(f"{base}/health", timeout=PEER_TIMEOUT)
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        return {"url": base, "status": "down", "error": str(exc)[:200], "stores": []}
    if not isinstance(body, dict):
        return {"url": base, "status": "bad answer", "error": "not a JSON object", "stores": []}
    return {
        "url": base,
        "status": body.get("status", f"HTTP {resp.status_code}"),
        "error": "",
        "stores": _store_rows(body),
    }


def fleet_health(peers: tuple[str, ...]) -> list[dict[str, Any]]:
    """Ask every peer at once; return their answers in config order."""
    if not peers:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(peers))) as pool:
        return list(pool.map(peer_health, peers))


def find_primary(peers: tuple[str, ...]) -> str | None:
    """Return the first peer whose /health says it is a primary."""
    for peer in fleet_health(peers):
        if any(s["role"] == "primary" for s in peer["stores"]):
            return peer["url"]
    return None

"""Push webhooks from git hosts: check who sent them, then tell whether to wake the follower.

A hosted hub (GitHub, Gitea, GitLab) runs no kbgit hook, but it can POST a push event
to each standby, which then fetches at once instead of at its next poll:

- GitHub and Gitea sign the raw body with HMAC-SHA256 of the shared secret:
  ``X-Hub-Signature-256: sha256=<hex>`` (Gitea also sends ``X-Gitea-Signature: <hex>``);
- GitLab sends the secret itself in ``X-Gitlab-Token``.

Both are compared in constant time (:func:`hmac.compare_digest`). An unsigned or badly
signed request is refused (401), as is a delivery id seen before (409: a replay). A
verified event that is not a push to the followed branch is acknowledged and ignored
(204); a push to it wakes the follower (202). A replayed request could at worst wake a
follower early, which only fetches: a sync is idempotent and verifies what it fetches.

>>> decide(headers, body, secret="s3cret", branch="main", seen=DeliveryLog())  # doctest: +SKIP
Decision(status=202, reason='push to main', wake=True, ...)
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import threading
from collections.abc import Mapping

from ..errors import FormatError
from ..format.jsonio import loads

#: delivery ids remembered to refuse replays (oldest forgotten first)
MAX_DELIVERIES = 10_000
ZERO = "0" * 40

GITHUB, GITEA, GITLAB = "github", "gitea", "gitlab"
ACCEPTED, IGNORED, UNAUTHORIZED, REPLAYED, BAD_REQUEST = 202, 204, 401, 409, 400


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to answer a webhook request, and whether to wake the follower."""

    status: int
    reason: str
    wake: bool = False
    host: str | None = None
    delivery: str | None = None
    #: the pushed commit (``after``) of an accepted push
    commit: str | None = None


class DeliveryLog:
    """A bounded, thread-safe set of delivery ids already accepted."""

    def __init__(self, limit: int = MAX_DELIVERIES) -> None:
        self.limit = limit
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, delivery: str) -> bool:
        """Record ``delivery``; return False if it was seen before."""
        with self._lock:
            if delivery in self._ids:
                return False
            self._ids[delivery] = None
            while len(self._ids) > self.limit:
                self._ids.popitem(last=False)
            return True


def sign(secret: str, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub and Gitea send for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict in tests; Flask's headers are case-insensitive already
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def _host(headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """Return (host, event, delivery id) from the headers each host sends."""
    if _header(headers, "X-Gitlab-Event") is not None:
        delivery = _header(headers, "X-Gitlab-Event-UUID") or _header(
            headers, "X-Gitlab-Webhook-UUID"
        )
        return GITLAB, _header(headers, "X-Gitlab-Event"), delivery
    if _header(headers, "X-Gitea-Event") is not None:
        return GITEA, _header(headers, "X-Gitea-Event"), _header(headers, "X-Gitea-Delivery")
    if _header(headers, "X-GitHub-Event") is not None:
        return GITHUB, _header(headers, "X-GitHub-Event"), _header(headers, "X-GitHub-Delivery")
    return None, None, None


def authentic(headers: Mapping[str, str], body: bytes, secret: str, host: str) -> bool:
    """Tell whether the request carries the right signature (GitHub/Gitea) or token (GitLab)."""
    if host == GITLAB:
        token = _header(headers, "X-Gitlab-Token")
        return token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), secret.encode()
        )
    given = _header(headers, "X-Hub-Signature-256")
    expected = sign(secret, body)
    if given is None and host == GITEA:
        given = _header(headers, "X-Gitea-Signature")
        expected = expected.removeprefix("sha256=")
    return given is not None and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), expected.encode()
    )


def _is_push(host: str, event: str | None) -> bool:
    return (event or "").lower() == ("push hook" if host == GITLAB else "push")


def decide(
    headers: Mapping[str, str], body: bytes, *, secret: str, branch: str, seen: DeliveryLog
) -> Decision:
    """Check a webhook request and decide the answer; never raise for bad input."""
    host, event, delivery = _host(headers)
    if host is None:
        return Decision(BAD_REQUEST, "not a GitHub, Gitea or GitLab webhook (no event header)")
    if not secret or not authentic(headers, body, secret, host):
        return Decision(UNAUTHORIZED, f"missing or wrong {host} signature", host=host)
    if not delivery:
        return Decision(UNAUTHORIZED, f"no {host} delivery id: cannot refuse replays", host=host)
    if not seen.add(delivery):
        return Decision(REPLAYED, f"delivery {delivery} was seen before", host=host)
    if not _is_push(host, event):
        return Decision(IGNORED, f"{event} events are ignored", host=host, delivery=delivery)
    try:
        payload = loads(body, "push payload")
        ref, after = payload["ref"], payload.get("after") or ""
    except (FormatError, KeyError, TypeError, AttributeError):
        return Decision(BAD_REQUEST, "push payload is not JSON with a ref", host=host)
    if not isinstance(ref, str) or ref != f"refs/heads/{branch}":
        return Decision(
            IGNORED, f"push to {ref} (following {branch})", host=host, delivery=delivery
        )
    if not isinstance(after, str) or after == ZERO:
        return Decision(IGNORED, f"{ref} was deleted", host=host, delivery=delivery)
    return Decision(ACCEPTED, f"push to {branch}", True, host, delivery, after or None)


__all__ = ["Decision", "DeliveryLog", "authentic", "decide", "sign"]

"""Push webhooks from GitHub, Gitea and GitLab: signed as those hosts sign them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.config import ServeConfig
from kbgit.hub.webhooks import DeliveryLog, decide, sign
from kbgit.serving.follower import Follower
from kbgit.serving.service import KnowledgeService, ServiceRegistry
from server import create_app

from .conftest import write_docs

SECRET = "It's a Secret to Everybody"
AFTER = "a" * 40


def test_signature_matches_githubs_documented_example() -> None:
    # from GitHub's "Validating webhook deliveries"
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(SECRET, b"Hello, World!") == f"sha256={expected}"


def _body(ref: str = "refs/heads/main", after: str = AFTER, **extra: object) -> bytes:
    return json.dumps({"ref": ref, "before": "0" * 40, "after": after, **extra}).encode()


def github(body: bytes, event: str = "push", secret: str = SECRET, delivery: str = "") -> dict:
    """Headers GitHub sends: HMAC-SHA256 of the raw body, hex, prefixed sha256=."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def gitea(body: bytes, event: str = "push") -> dict:
    """Headers Gitea sends (X-Gitea-Signature: the bare hex HMAC)."""
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Gitea-Event": event, "X-Gitea-Delivery": str(uuid.uuid4()),
            "X-Gitea-Signature": digest}  # fmt: skip


def gitlab(token: str = SECRET, event: str = "Push Hook") -> dict:
    """Headers GitLab sends: the secret token itself, and an event UUID."""
    return {"X-Gitlab-Event": event, "X-Gitlab-Token": token,
            "X-Gitlab-Event-UUID": str(uuid.uuid4())}  # fmt: skip


def _decide(headers: dict, body: bytes, branch: str = "main", seen: DeliveryLog | None = None):
    return decide(headers, body, secret=SECRET, branch=branch, seen=seen or DeliveryLog())


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (github(_body()), _body()),
        (gitea(_body()), _body()),
        (gitlab(), _body(object_kind="push")),
    ],
    ids=["github", "gitea", "gitlab"],
)
def test_a_signed_push_to_the_branch_wakes(headers: dict, body: bytes) -> None:
    decision = _decide(headers, body)
    assert (decision.status, decision.wake, decision.commit) == (202, True, AFTER)


def test_refusals_and_ignored_events() -> None:
    body = _body()
    unsigned = {k: v for k, v in github(body).items() if k != "X-Hub-Signature-256"}
    assert _decide(unsigned, body).status == 401
    assert _decide(github(body, secret="wrong"), body).status == 401
    tampered = github(body)
    assert _decide(tampered, body.replace(b"main", b"mainx")).status == 401
    assert _decide(gitlab(token="wrong"), body).status == 401
    no_id = {k: v for k, v in github(body).items() if k != "X-GitHub-Delivery"}
    assert _decide(no_id, body).status == 401
    assert _decide({"Content-Type": "application/json"}, body).status == 400
    assert _decide(github(b"not json"), b"not json").status == 400
    nested = b"[" * 60_000  # under max_body; json.loads raised RecursionError: a 500
    assert _decide(github(nested), nested).status == 400
    deep = json.dumps({"ref": "refs/heads/main", "after": AFTER, "x": [[[[]]]] * 1}).encode()
    assert _decide(github(deep), deep).status == 202
    other = _body("refs/heads/dev")
    assert _decide(github(other), other).status == 204
    assert _decide(github(body, event="ping"), body).status == 204
    assert _decide(gitlab(event="Tag Push Hook"), body).status == 204
    deleted = _body(after="0" * 40)
    assert _decide(github(deleted), deleted).status == 204
    assert not any(
        _decide(h, b).wake for h, b in ((github(other), other), (github(deleted), deleted))
    )


def test_a_replayed_delivery_is_refused() -> None:
    seen, body = DeliveryLog(), _body()
    headers = github(body)
    assert _decide(headers, body, seen=seen).status == 202
    again = _decide(headers, body, seen=seen)
    assert again.status == 409 and not again.wake
    bounded = DeliveryLog(limit=2)
    assert all(bounded.add(d) for d in ("a", "b", "c")) and bounded.add("a")  # oldest forgotten


@pytest.fixture
def standby_app(tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path):
    """A standby following ``hub`` (polling every 5 minutes) behind the Flask app."""
    store.ingest(docs)
    registry = ServiceRegistry()
    service = registry.add(KnowledgeService("default", tmp_path / "replica"))
    follower = Follower(service, hub=str(hub), interval=300)
    follower.open()
    follower.start()
    config = ServeConfig(webhook_secret=SECRET)
    app = create_app(registry, config=config, followers={"default": follower})
    yield app.test_client(), service, store, docs
    follower.stop()


def test_a_github_push_webhook_makes_the_standby_serve_the_push(standby_app) -> None:
    client, service, store, docs = standby_app
    deadline = time.monotonic() + 30
    while service.commit != store.repo.head() and time.monotonic() < deadline:
        time.sleep(0.05)  # the first sync
    write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
    new = store.ingest(docs).commit
    body = _body(after=new)
    resp = client.post("/hooks/push", data=body, headers=github(body))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    deadline = time.monotonic() + 30
    while service.commit != new and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.commit == new  # far sooner than the 300 s poll
    replay = client.post("/hooks/push", data=body, headers=github(body, delivery="fixed"))
    assert replay.status_code == 202
    replay = client.post("/hooks/push", data=body, headers=github(body, delivery="fixed"))
    assert replay.status_code == 409 and "seen before" in replay.get_json()["error"]
    unsigned = client.post("/hooks/push", data=body, headers={"X-GitHub-Event": "push"})
    assert unsigned.status_code == 401 and unsigned.is_json
    assert client.post("/kb/default/hooks/push", data=body, headers=gitlab()).status_code == 202


def test_webhooks_are_refused_without_a_secret(tmp_path: Path, hub: Path) -> None:
    registry = ServiceRegistry()
    service = registry.add(KnowledgeService("default", tmp_path / "replica"))
    follower = Follower(service, hub=str(hub))
    app = create_app(registry, followers={"default": follower})
    body = _body()
    resp = app.test_client().post("/hooks/push", data=body, headers=github(body))
    assert resp.status_code == 401 and "KBGIT_WEBHOOK_SECRET" in resp.get_json()["error"]

"""Deeply nested JSON in a commit or a request (issue 15, item 5): one-line refusals.

``"[" * 100000 + "]" * 100000`` made json.loads raise RecursionError: a 30-line
traceback for the pusher, a standby crashing every 2 s while /health said "updated",
exit 1 with a traceback from verify/query/show/diff, and a 500 from /query.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main as cli
from kbgit.config import StoreSpec
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.follower import REFUSED, UPDATED

from . import hostile
from .serve_helpers import post, start_server, wait_until

DEEP = b"[" * 100_000 + b"]" * 100_000
#: deep enough to break a later json.dumps or jsonify, shallow enough to parse
NESTED = b'{"a": ' * 900 + b"1" + b"}" * 900


def _deep_rows(repo: Path) -> dict[str, Any]:
    """forge() arguments replacing the first row of the first segment with deep JSON."""
    man = hostile.head_json(repo, "manifest.json")
    rows_path = man["segments"][0]["rows"]["path"]
    lines = hostile.git(repo, "cat-file", "blob", f"HEAD:{rows_path}").encode().splitlines()
    raw = b"\n".join([NESTED, *lines[1:]]) + b"\n"

    def reseal(m: dict[str, Any]) -> None:
        m["segments"][0]["rows"].update(sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))

    return {"entries": {rows_path: ("100644", raw)}, "manifest": reseal}


def _forge(repo: Path, where: str) -> str:
    if where == "rows":
        args = _deep_rows(repo)
        return hostile.forge(repo, args.pop("entries"), **args)
    return hostile.forge(repo, {}, raw={where: DEEP})


@pytest.mark.parametrize("where", ["ledger.json", "manifest.json", "rows"])
def test_deep_json_in_a_commit_is_a_one_line_refusal_everywhere(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path, where: str
) -> None:
    good = store.ingest(docs).commit
    follower = hostile.standby(tmp_path / "replica", hub)
    assert follower.sync_once().status == UPDATED
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    hub_hooks.install(hub)
    _forge(attacker, where)

    code, err = hostile.push(attacker)
    assert code != 0 and "nested deeper than" in err
    assert "Traceback" not in err and err.count("REFUSED") == 1
    assert GitRepo(hub).rev_parse("main") == good

    for args in (
        ["verify", str(attacker)],
        ["query", str(attacker), "keys", "--rev", "HEAD"],
        ["show", str(attacker), "HEAD", "--verify"],
        ["diff", str(attacker), "HEAD~1", "HEAD"],
    ):
        if where == "rows" and args[0] == "diff":
            continue  # diff reads ledgers only: a deep row is not its business
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 4, (args, res.output, res.exception)
        assert "nested deeper than" in res.output and "Traceback" not in res.output

    hostile.unhook(hub)
    assert hostile.push(attacker)[0] == 0
    result = follower.sync_once()
    assert result.status == REFUSED and "nested deeper than" in (result.error or "")
    health = follower.service.health()
    assert health["sync"]["last_result"] == REFUSED and health["head"]["commit"] == good


def test_deep_json_request_bodies_get_400(tmp_path: Path, store: KnowledgeStore, docs) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), max_body=1 << 20)
    try:
        wait_until(lambda: srv.services.ready)
        for body in (b"[" * 50_000 + b"]" * 50_000, b'{"query": "keys", "k": ' + NESTED + b"}"):
            resp = post(f"{srv.url}/query", data=body, headers={"Content-Type": "application/json"})
            assert resp.status_code == 400 and "nested deeper than" in resp.json()["error"]
    finally:
        srv.stop()

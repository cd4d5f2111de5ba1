"""Promote a standby's replica to the writer; rejoin an old primary as a standby."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main
from kbgit.config import ServeConfig
from kbgit.embeddings import BUNDLED_MODEL_ID
from kbgit.errors import ConfigError, HubMovedError, LockedError
from kbgit.format.ledger import Ledger
from kbgit.gitrepo import GitRepo
from kbgit.serving.failover import ORPHAN_PREFIX, promote, rejoin, settings_from_ledger
from kbgit.serving.follower import OK, UPDATED, Follower
from kbgit.serving.nginx import render_site, shipped_site, standalone_conf
from kbgit.serving.service import KnowledgeService

from .conftest import REPO_ROOT, write_docs


def _replica(tmp_path: Path, hub: Path, name: str = "replica") -> Follower:
    """A standby replica as `kbgit standby` makes it, synced once."""
    follower = Follower(KnowledgeService("default", tmp_path / name), hub=str(hub))
    follower.open()
    assert follower.sync_once().status in (OK, UPDATED)
    return follower


def test_promoted_replica_ingests_and_pushes_without_reembedding(
    tmp_path, hub, store: KnowledgeStore, docs
) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    res = promote(tmp_path / "replica")
    assert res.commit == store.repo.head() and res.model == "fake:64" and res.changed
    cfg = tomllib.loads((tmp_path / "replica" / "kb.toml").read_text())["store"]
    assert (cfg["hub"], cfg["chunk_size"], cfg["chunk_overlap"]) == (str(hub), 40, 5)
    new = KnowledgeStore(tmp_path / "replica")
    write_docs(docs, {"tides.md": "Tides follow the moon twice a day."})
    result = new.ingest(docs)
    assert result.added == ["tides.md"] and not result.updated and result.skipped == 4
    assert not result.reembedded and result.pushed
    assert GitRepo(hub).rev_parse("main") == result.commit
    assert new.query("moon tides", k=1).hits[0].source == "tides.md"
    assert new.status(fetch=False).dirty is False  # kb.toml is ignored by git
    again = promote(tmp_path / "replica")  # idempotent
    assert not again.changed and again.commit == result.commit


def test_promote_catches_up_with_the_hub_first(tmp_path, hub, store, docs) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    write_docs(docs, {"late.md": "A late page the standby has not fetched yet."})
    late = store.ingest(docs).commit
    res = promote(tmp_path / "replica")
    assert res.caught_up == 1 and res.commit == late and res.hub_reachable


def test_promote_refuses_while_a_standby_follows(tmp_path, hub, store, docs) -> None:
    store.ingest(docs)
    follower = _replica(tmp_path, hub)
    follower.interval = 30
    follower.start()
    try:
        with pytest.raises(LockedError, match="kbgit server"):
            promote(tmp_path / "replica")
        assert not (tmp_path / "replica" / "kb.toml").exists()
    finally:
        follower.stop()
    assert promote(tmp_path / "replica").changed  # free once the follower stopped


def test_promote_refuses_a_directory_that_is_no_replica(tmp_path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="not a replica"):
        promote(tmp_path / "plain")
    GitRepo.init(tmp_path / "bare-clone", "main")
    with pytest.raises(ConfigError, match="no remote named 'hub'"):
        promote(tmp_path / "bare-clone")


def test_promote_with_the_hub_down_uses_the_local_clone(tmp_path, hub, store, docs) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    hub.rename(hub.with_name("away.git"))
    res = promote(tmp_path / "replica")
    assert not res.hub_reachable and res.commit == store.repo.head()


def _split_brain(tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path) -> tuple[str, str]:
    """Old primary commits without pushing; the promoted standby writes to the hub."""
    store.ingest(docs)
    _replica(tmp_path, hub)
    write_docs(docs, {"unpushed.md": "Written while the hub was unreachable."})
    unpushed = store.ingest(docs, push=False).commit
    promote(tmp_path / "replica")
    new_docs = write_docs(tmp_path / "new-docs", {"tides.md": "Tides follow the moon."})
    new_head = KnowledgeStore(tmp_path / "replica").ingest(new_docs).commit
    return unpushed, new_head


def test_old_primary_refuses_to_write_and_names_rejoin(tmp_path, hub, store, docs) -> None:
    _unpushed, new_head = _split_brain(tmp_path, hub, store, docs)
    with pytest.raises(HubMovedError) as info:
        store.ingest(docs)
    assert f"kbgit rejoin {store.root}" in info.value.hint
    # the hub itself refuses a non-fast-forward push
    push = subprocess.run(
        ["git", "-C", str(store.root), "push", "hub", "HEAD:main"], capture_output=True
    )
    assert push.returncode != 0 and GitRepo(hub).rev_parse("main") == new_head


def test_rejoin_keeps_unpushed_commits_and_follows_the_hub(tmp_path, hub, store, docs) -> None:
    unpushed, new_head = _split_brain(tmp_path, hub, store, docs)
    res = rejoin(store.root)
    assert res.commit == new_head and res.previous_head == unpushed
    assert res.orphaned_branch.startswith(ORPHAN_PREFIX) and res.orphaned_commits == 1
    assert store.repo.rev_parse(res.orphaned_branch) == unpushed
    assert store.repo.head() == new_head and not (store.root / "kb.toml").exists()
    follower = Follower(KnowledgeService("default", store.root), hub=str(hub))
    follower.open()
    assert follower.sync_once().status == OK and follower.service.commit == new_head


def test_rejoin_without_unpushed_commits_makes_no_branch(tmp_path, hub, store, docs) -> None:
    store.ingest(docs)
    _replica(tmp_path, hub)
    promote(tmp_path / "replica")
    res = rejoin(store.root)
    assert res.orphaned_branch is None and res.orphaned_commits == 0
    assert "orphaned" not in store.repo.run("branch", "--list")


def test_cli_promote_and_rejoin(tmp_path, hub, store, docs) -> None:
    store.ingest(docs)
    write_docs(docs, {"local.md": "only on the old primary"})
    store.ingest(docs, push=False)  # a commit the hub never gets
    _replica(tmp_path, hub)
    runner = CliRunner()
    out = runner.invoke(main, ["promote", str(tmp_path / "replica")])
    assert out.exit_code == 0, out.output
    assert "kbgit serve" in out.output and "nginx" in out.output
    assert "writer epoch 2" in out.output
    new_docs = write_docs(tmp_path / "new-docs", {"tides.md": "Tides follow the moon."})
    ingest = runner.invoke(main, ["ingest", str(tmp_path / "replica"), str(new_docs)])
    assert ingest.exit_code == 0, ingest.output
    refused = runner.invoke(main, ["ingest", str(store.root), str(docs)])
    assert refused.exit_code == 1 and "kbgit rejoin" in refused.output
    out = runner.invoke(main, ["rejoin", str(store.root)])
    assert out.exit_code == 0, out.output
    assert "kbgit/orphaned-" in out.output and f"kbgit standby {hub}" in out.output


# -- deploy/ ------------------------------------------------------------------------------
def test_shipped_nginx_config_has_the_measured_settings() -> None:
    text = shipped_site()
    assert "health_check" not in text.replace("`health_check`", "")  # NGINX Plus only
    for setting in (
        "zone kbgit",
        "max_fails=1 fail_timeout=10s",
        "backup;",
        "proxy_connect_timeout 1s;",
        "proxy_read_timeout 2s;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "keepalive 16;",
        "location /admin/ { deny all; }",
    ):
        assert setting in text, setting
    # non_idempotent only where the request is a read-only query
    assert text.count("non_idempotent;") == 2
    blocks = text.split("location")
    assert all("query" in b.split("{")[0] for b in blocks if "non_idempotent;" in b)


def test_render_site_and_standalone(tmp_path) -> None:
    site = render_site(
        shipped_site(), primary="127.0.0.1:1", standby="127.0.0.1:2", listen="127.0.0.1:3"
    )
    assert "server 127.0.0.1:1 max_fails" in site and "server 127.0.0.1:2 backup" in site
    assert "listen 127.0.0.1:3;" in site and "8001" not in site
    solo = render_site(shipped_site(), primary="127.0.0.1:1", standby=None, listen="127.0.0.1:3")
    assert "backup" not in solo.split("upstream kbgit")[1].split("}")[0]
    conf = standalone_conf(tmp_path, site)
    assert f"pid {tmp_path.resolve()}/nginx.pid;" in conf and "/var/" not in conf
    with pytest.raises(ConfigError):
        render_site(shipped_site(), primary="not an address", standby=None)


def test_systemd_example_config_documents_every_setting() -> None:
    path = REPO_ROOT / "deploy" / "systemd" / "kbgit.toml"
    cfg = ServeConfig.load(path, env={})
    assert cfg.bind and cfg.interval > 0
    text = path.read_text()
    for field in ServeConfig.__dataclass_fields__:
        assert f"{field} =" in text or f"[serve.{field}" in text, field
    for unit in ("kbgit-primary.service", "kbgit-standby.service"):
        body = (REPO_ROOT / "deploy" / "systemd" / unit).read_text()
        assert "ExecStart=" in body and "--config /etc/kbgit/kbgit.toml" in body


def test_settings_from_ledger_maps_model_ids_back_to_settings() -> None:
    chunking = {"splitter": "recursive", "unit": "tokens", "size": 200, "overlap": 30}
    real = Ledger(BUNDLED_MODEL_ID, 384, chunking, {})
    cfg = settings_from_ledger(real, "/srv/hub.git", "main", None)
    assert (cfg.model, cfg.chunk_size, cfg.chunk_overlap) == ("all-MiniLM-L6-v2", 200, 30)
    local = Ledger("local:my-model", 768, chunking, {})
    with pytest.raises(ConfigError, match="local:my-model") as info:
        settings_from_ledger(local, "/srv/hub.git", "main", None)
    assert "--model" in info.value.hint
    assert settings_from_ledger(local, "h", "main", "/models/my-model").model == "/models/my-model"

"""Limits on pushed document and index sizes (issue 15, item 8): refused before any read.

A 50 MB document with a matching ledger entry used to be accepted and read whole into
every standby's memory. Now ledger and manifest claims are checked against
``max_document_bytes`` / ``max_index_file_bytes``, and every blob's real size (from
``git cat-file --batch-check``) against its claim, before the blob is read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main as cli
from kbgit.config import DEFAULT_MAX_DOCUMENT_BYTES, ServeConfig, StoreSpec
from kbgit.format.limits import Limits
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.serving.follower import REFUSED, UPDATED
from kbgit.serving.service import KnowledgeService

from . import hostile
from .conftest import FAKE_CONFIG, write_docs

BIG = b"tides " * (DEFAULT_MAX_DOCUMENT_BYTES // 6 + 1)  # just over 32 MiB, packs small


def test_a_document_over_the_default_limit_is_refused_everywhere(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    good = store.ingest(docs).commit
    follower = hostile.standby(tmp_path / "replica", hub)
    assert follower.sync_once().status == UPDATED
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    hub_hooks.install(hub)
    hostile.forge(
        attacker, {"docs/big.txt": ("100644", BIG)}, ledger=hostile.add_doc("big.txt", BIG)
    )

    code, err = hostile.push(attacker)
    assert code != 0 and "max_document_bytes" in err and "Traceback" not in err
    assert GitRepo(hub).rev_parse("main") == good
    res = CliRunner().invoke(cli, ["verify", str(attacker)])
    assert res.exit_code == 4 and "over the limit" in res.output

    hostile.unhook(hub)
    assert hostile.push(attacker)[0] == 0
    result = follower.sync_once()
    assert result.status == REFUSED and "max_document_bytes" in (result.error or "")
    assert follower.service.commit == good


def test_a_blob_bigger_than_its_claim_is_refused_before_it_is_read(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    attacker = hostile.attacker(hub, tmp_path / "attacker")
    small = b"a small claim\n"

    def lie(led: dict) -> None:
        hostile.add_doc("big.txt", small)(led)

    hostile.forge(attacker, {"docs/big.txt": ("100644", BIG)}, ledger=lie)
    res = CliRunner().invoke(cli, ["verify", str(attacker)])
    assert res.exit_code == 4
    assert f"docs/big.txt: {len(BIG)} bytes, the commit says {len(small)}" in res.output


def test_limits_are_settings_of_the_hub_the_server_and_the_store(
    tmp_path: Path, hub: Path, docs: Path
) -> None:
    cfg = dataclasses.replace(FAKE_CONFIG, max_document_bytes=1000)
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=cfg)
    write_docs(docs, {"long.txt": "words about tides and moons " * 100})
    result = store.ingest(docs)
    failed = {f.path: f.reason for f in result.failed}
    assert "max_document_bytes" in failed["long.txt"] and "keys.md" in result.added
    assert KnowledgeStore(store.root).config.max_document_bytes == 1000  # kept in kb.toml

    attacker = hostile.attacker(hub, tmp_path / "attacker")
    doc = b"x" * 2000
    hostile.forge(
        attacker, {"docs/two-k.txt": ("100644", doc)}, ledger=hostile.add_doc("two-k.txt", doc)
    )
    hub_hooks.install(hub)
    GitRepo(hub).run("config", "kbgit.maxDocumentBytes", "1k")
    code, err = hostile.push(attacker)
    assert code != 0 and "over the limit of 1024" in err
    GitRepo(hub).run("config", "kbgit.maxDocumentBytes", "4k")
    assert hostile.push(attacker)[0] == 0

    limits = Limits.of(ServeConfig(max_document_bytes=1500, stores=(StoreSpec("s", "x"),)))
    svc = KnowledgeService("default", tmp_path / "replica", limits=limits)
    follower = hostile.Follower(svc, hub=str(hub))
    follower.open()
    assert follower.sync_once().status == REFUSED  # the newest commit decides the status
    assert svc.commit == store.repo.head()  # while the older good one is served
    assert "over the limit of 1500" in svc.health()["refused"][0]["reason"]

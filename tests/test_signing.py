"""Signed commits: only allowed writers are served (issue 15, "Beyond").

Verification proves a commit is consistent, not who wrote it. With signing on, the
writer signs each commit with its SSH key; the hub's pre-receive hook and every standby
accept only commits signed by a key in an allowed-signers file they hold locally.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import HubMovedError, KnowledgeStore, StoreConfig
from kbgit.config import StoreSpec
from kbgit.errors import SignatureError
from kbgit.fencing import WRITER_REF
from kbgit.gitrepo import GitRepo
from kbgit.history.rollback import rollback
from kbgit.hub.hooks import install
from kbgit.serving.failover import promote
from server.run import Server

from .conftest import FAKE_CONFIG, write_docs
from .serve_helpers import auth, get, post, push_raw, start_server, wait_until


def _keygen(path: Path, comment: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Three SSH signing keys: writer1 and writer2 (allowed), intruder (never allowed)."""
    (tmp_path / "keys").mkdir()
    return {n: _keygen(tmp_path / "keys" / n, n) for n in ("writer1", "writer2", "intruder")}


def allow(path: Path, keys: dict[str, Path], *names: str) -> Path:
    """Write an allowed-signers file listing ``names``; return its path."""
    lines = []
    for name in names:
        kind, blob = keys[name].with_suffix(".pub").read_text().split()[:2]
        lines.append(f'{name} namespaces="git" {kind} {blob}\n')
    path.write_text("".join(lines))
    return path


def signed_store(root: Path, hub: Path, key: Path | None, allowed: Path) -> KnowledgeStore:
    """A working store of ``hub`` that signs with ``key`` (unsigned when None)."""
    cfg = dataclasses.replace(FAKE_CONFIG, signing_key=str(key or ""), allowed_signers=str(allowed))
    return KnowledgeStore.init(root, hub=str(hub), config=cfg)


@pytest.fixture
def signed_hub(hub: Path, keys: dict[str, Path], tmp_path: Path) -> Path:
    """A hub whose pre-receive hook accepts only writer1's and writer2's signatures."""
    install(hub, allowed_signers=allow(tmp_path / "hub-signers", keys, "writer1", "writer2"))
    return hub


def test_signed_ingest_and_rollback_are_accepted_and_verify_names_the_signer(
    tmp_path: Path, signed_hub: Path, keys: dict[str, Path], docs: Path
) -> None:
    allowed = allow(tmp_path / "allowed", keys, "writer1")
    store = signed_store(tmp_path / "kb", signed_hub, keys["writer1"], allowed)
    first = store.ingest(docs)
    write_docs(docs, {"new.md": "a second commit"})
    assert store.ingest(docs).pushed
    back = rollback(store, first.commit)
    assert back.pushed and GitRepo(signed_hub).rev_parse("refs/heads/main") == back.commit
    sig = store.signature()
    assert sig is not None and sig.signer == "writer1"
    proc = subprocess.run(
        [sys.executable, "-m", "kbgit", "verify", str(store.root)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "signed by writer1" in proc.stdout


@pytest.mark.parametrize("key", [None, "intruder"])
def test_hook_refuses_unsigned_or_wrongly_signed_and_the_pusher_is_left_as_it_was(
    tmp_path: Path, signed_hub: Path, keys: dict[str, Path], docs: Path, key: str | None
) -> None:
    allowed = tmp_path / "allowed"
    allow(allowed, keys, "writer1")
    good = signed_store(tmp_path / "kb", signed_hub, keys["writer1"], allowed).ingest(docs)
    other = signed_store(tmp_path / "other", signed_hub, keys[key] if key else None, allowed)
    # it shares the writer's claim (refs/kbgit/writer): only the hook's signature rule stops it
    other.repo.fetch("hub", "main")
    kb = GitRepo(tmp_path / "kb")
    other.repo.run("update-ref", WRITER_REF, kb.rev_parse(WRITER_REF) or "")
    write_docs(docs, {"evil.md": "a forged document"})
    with pytest.raises(HubMovedError) as info:
        other.ingest(docs)
    assert "refused" in str(info.value) and "fix the cause" in (info.value.hint or "")
    assert GitRepo(signed_hub).rev_parse("refs/heads/main") == good.commit
    assert other.repo.head() == good.commit  # left as it was
    # a plain git push of such a commit is refused by the hook as well
    other.repo.run("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q",
                   "--allow-empty", "-m", "unsigned")  # fmt: skip
    with pytest.raises(Exception, match="not signed|pre-receive"):
        push_raw(other)


@pytest.fixture
def standby(tmp_path: Path, hub: Path, keys: dict[str, Path]) -> Iterator[Server]:
    """A standby of a hub WITHOUT the signing hook that serves only writer1's commits."""
    srv = start_server(
        StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)),
        allowed_signers=str(allow(tmp_path / "standby-signers", keys, "writer1")),
    )
    yield srv
    srv.stop()


def _health(srv: Server) -> dict:
    return get(f"{srv.url}/health", headers=auth()).json()


def test_standby_refuses_unsigned_and_wrongly_signed_commits_and_keeps_serving(
    tmp_path: Path, hub: Path, keys: dict[str, Path], docs: Path, standby: Server
) -> None:
    allowed = allow(tmp_path / "allowed", keys, "writer1", "intruder")  # the writer's own view
    good = signed_store(tmp_path / "kb", hub, keys["writer1"], allowed).ingest(docs).commit
    post(f"{standby.url}/admin/sync", headers=auth())
    wait_until(lambda: _health(standby)["head"]["commit"] == good)
    assert _health(standby)["head"]["signer"] == "writer1"
    for n, key in enumerate((None, keys["intruder"])):
        forger = signed_store(tmp_path / f"forger{n}", hub, key, allowed)
        write_docs(docs, {f"forged{n}.md": "a forged document"})
        bad = forger.ingest(docs).commit  # the hub has no signing hook: accepted there
        post(f"{standby.url}/admin/sync", headers=auth())
        health = wait_until(
            lambda bad=bad: (
                (h := _health(standby))["refused"] and h["refused"][-1]["commit"] == bad and h
            )
        )
        assert health["head"]["commit"] == good and health["head"]["signer"] == "writer1"
        assert health["status"] == "ok"
        assert (
            "not signed" in health["refused"][-1]["reason"]
            or "not in the allowed" in (health["refused"][-1]["reason"])
        )
        hits = post(f"{standby.url}/query", json={"query": "forged document", "k": 3}).json()
        assert hits["commit"] == good
        GitRepo(hub).run("update-ref", "refs/heads/main", good)  # the operator resets the hub


def test_key_rotation(tmp_path: Path, hub: Path, keys: dict[str, Path], docs: Path) -> None:
    hub_signers = allow(tmp_path / "hub-signers", keys, "writer1")
    install(hub, allowed_signers=hub_signers)
    allowed = allow(tmp_path / "allowed", keys, "writer1", "writer2")
    old = signed_store(tmp_path / "kb", hub, keys["writer1"], allowed)
    old.ingest(docs)
    # 1. the new key is allowed beside the old one; 2. the writer switches to it
    allow(hub_signers, keys, "writer1", "writer2")
    new = KnowledgeStore(
        old.root, dataclasses.replace(old.config, signing_key=str(keys["writer2"]))
    )
    write_docs(docs, {"after.md": "signed with the new key"})
    assert new.ingest(docs).pushed
    assert new.signature().signer == "writer2"
    # 3. the old key is removed: what it signs is refused from now on
    allow(hub_signers, keys, "writer2")
    write_docs(docs, {"late.md": "signed with the retired key"})
    before = old.repo.head()
    with pytest.raises(HubMovedError, match="not in the allowed signers"):
        old.ingest(docs)
    assert old.repo.head() == before
    assert new.ingest(docs).pushed


def test_promote_on_a_node_with_its_own_key(
    tmp_path: Path, signed_hub: Path, keys: dict[str, Path], docs: Path
) -> None:
    allowed = allow(tmp_path / "allowed", keys, "writer1", "writer2")
    signed_store(tmp_path / "kb", signed_hub, keys["writer1"], allowed).ingest(docs)
    other = start_server(
        StoreSpec("default", str(tmp_path / "other"), hub=str(signed_hub)),
        allowed_signers=str(allowed),
    )
    try:
        replica = tmp_path / "replica"
        GitRepo.clone(str(signed_hub), replica, "main", "hub")
        promote(replica, signing_key=keys["writer2"])
        promoted = KnowledgeStore(replica)
        assert promoted.config.signing_key == str(keys["writer2"].resolve())
        write_docs(docs, {"promoted.md": "written by the promoted node"})
        commit = promoted.ingest(docs).commit
        post(f"{other.url}/admin/sync", headers=auth())
        wait_until(lambda: _health(other)["head"]["commit"] == commit)
        assert _health(other)["head"]["signer"] == "writer2"
    finally:
        other.stop()


def test_a_missing_signing_key_is_a_clear_error(tmp_path: Path, hub: Path, docs: Path) -> None:
    cfg = StoreConfig(model="fake:64", chunk_size=40, chunk_overlap=5, signing_key="/nope/key")
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=cfg)
    with pytest.raises(Exception, match="signing key /nope/key not found"):
        store.ingest(docs)
    assert store.repo.head() is None


def test_verify_refuses_an_unsigned_commit_when_signers_are_set(
    tmp_path: Path, hub: Path, keys: dict[str, Path], docs: Path
) -> None:
    allowed = allow(tmp_path / "allowed", keys, "writer1")
    store = signed_store(tmp_path / "kb", hub, None, allowed)
    store.ingest(docs)
    with pytest.raises(SignatureError, match="not signed"):
        store.verify()
    proc = subprocess.run(
        [sys.executable, "-m", "kbgit", "verify", str(store.root)], capture_output=True, text=True
    )
    assert proc.returncode == 4 and "not signed" in proc.stderr

"""Failover by hand: promote a standby to the writer, rejoin an old primary as a standby.

A standby's replica (made by ``kbgit standby``) holds the whole history and a remote named
``hub``; :func:`promote` turns it into a working store that ``kbgit ingest`` accepts: it
catches up with the hub when it can, verifies HEAD, and writes ``kb.toml`` with the model
and chunking of the ledger at HEAD, so the first ingest re-embeds nothing.

An old primary that comes back finds the hub moved on: its ingest refuses (HubMovedError)
and the hub refuses non-fast-forward pushes. :func:`rejoin` keeps the commits the hub lacks
on a branch ``kbgit/orphaned-<time>``, resets the store to the hub's verified head and
leaves a replica that ``kbgit standby HUB PATH`` follows.

Both refuse while a server process serves the directory (it holds the follower lock)
or an ingest holds the writer lock.

>>> promote("./replica").hub                       # doctest: +SKIP
'/srv/kb-hub.git'
>>> rejoin("./old-primary").orphaned_branch        # doctest: +SKIP
'kbgit/orphaned-20261125T101500Z'
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from ..config import CONFIG_NAME, DEFAULT_BRANCH, HUB_REMOTE, StoreConfig
from ..embeddings import BUNDLED_MODEL, BUNDLED_MODEL_ID, FAKE_PREFIX
from ..errors import ConfigError, GitError, HubMovedError, LockedError
from ..fencing import check as fence_check
from ..fencing import claim, release
from ..format.checks import SegmentCache
from ..format.ledger import LEDGER_PATH, Ledger
from ..format.signatures import check_key
from ..format.snapshot import load_snapshot
from ..fsio import write_atomic
from ..gitrepo import GitRepo, redact
from ..store import KnowledgeStore
from ..writer import LOCK_NAME
from .follower import FOLLOWER_LOCK

logger = logging.getLogger(__name__)

#: prefix of the branch that keeps an old primary's commits the hub never received
ORPHAN_PREFIX = "kbgit/orphaned-"
#: where rejoin moves an old primary's kb.toml (a standby has none; promote writes a new one)
OLD_CONFIG = "kbgit-kb.toml.before-rejoin"


@dataclasses.dataclass(frozen=True)
class PromoteResult:
    """What promote did to a replica."""

    root: str
    hub: str
    branch: str
    #: the commit the new primary starts from (verified)
    commit: str
    model: str
    #: commits fetched from the hub and fast-forwarded before promoting
    caught_up: int
    #: False when the hub could not be reached (promoted from the local clone)
    hub_reachable: bool
    #: False when the directory was already a working store holding the writer role
    changed: bool = True
    #: the epoch of the writer record this store now holds (refs/kbgit/writer on the hub)
    epoch: int | None = None
    #: True when the hub was unreachable: the claim is pushed by the first write
    claim_pending: bool = False


@dataclasses.dataclass(frozen=True)
class RejoinResult:
    """What rejoin did to an old primary."""

    root: str
    hub: str
    branch: str
    #: the hub's commit the store now sits on (verified)
    commit: str
    previous_head: str | None
    #: branch holding the commits the hub lacked; None when there were none
    orphaned_branch: str | None
    orphaned_commits: int


def _branch(repo: GitRepo) -> str:
    name = repo.run_bytes("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return name.decode().strip() or DEFAULT_BRANCH


def _hub_url(repo: GitRepo, root: Path) -> str:
    url = repo.remote_url(HUB_REMOTE)
    if not url:
        raise ConfigError(
            f"{root} has no remote named {HUB_REMOTE!r}: it is not a replica of a hub",
            hint="promote a directory made by: kbgit standby HUB REPLICA",
        )
    return url


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold the follower and writer locks; refuse if a server or an ingest holds one."""
    git_dir = root / ".git"
    held: list[filelock.BaseFileLock] = []
    try:
        for name, who in ((FOLLOWER_LOCK, "a kbgit server"), (LOCK_NAME, "an ingest")):
            lock = filelock.FileLock(str(git_dir / name))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                raise LockedError(
                    f"{root} is in use by {who} (it holds .git/{name})",
                    hint="stop that process first (systemctl stop kbgit-standby, or kill its pid)",
                ) from None
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def settings_from_ledger(ledger: Ledger, hub: str, branch: str, model: str | None) -> StoreConfig:
    """Return store settings that match the ledger (so an ingest re-embeds nothing)."""
    if model is None:
        if ledger.model_id.startswith(FAKE_PREFIX):
            model = ledger.model_id
        elif ledger.model_id in (BUNDLED_MODEL, BUNDLED_MODEL_ID):
            model = BUNDLED_MODEL
        else:
            raise ConfigError(
                f"the store was embedded with {ledger.model_id!r}, which names no local path",
                hint="pass the model directory: kbgit promote REPLICA --model /path/to/model",
            )
    chunking = ledger.chunking
    if chunking.get("splitter") != "recursive" or chunking.get("unit") != "tokens":
        raise ConfigError(f"unsupported chunking in the ledger: {chunking}")
    return StoreConfig(
        model=model,
        chunk_size=int(chunking["size"]),
        chunk_overlap=int(chunking["overlap"]),
        hub=hub,
        branch=branch,
    )


def _catch_up(repo: GitRepo, branch: str) -> tuple[int, bool]:
    """Fast-forward to the hub's verified head when reachable; return (commits, reachable)."""
    try:
        upstream = repo.fetch(HUB_REMOTE, branch)
    except GitError as exc:
        logger.warning("hub unreachable, promoting the local clone: %s", exc)
        return 0, False
    head = repo.head()
    if upstream is None or upstream == head:
        return 0, True
    if head is not None and repo.is_ancestor(upstream, head):
        return 0, True  # the hub is behind us (a push we made never landed there)
    if head is not None and not repo.is_ancestor(head, upstream):
        raise HubMovedError(
            f"the replica ({head[:12]}) and the hub ({upstream[:12]}) have diverged",
            hint="promote a replica the hub can fast-forward, or rejoin this one: kbgit rejoin",
        )
    load_snapshot(repo, upstream, cache=SegmentCache())  # never promote onto a bad commit
    count = repo.count_commits(f"{head}..{upstream}" if head else upstream)
    repo.run("merge", "--ff-only", "--quiet", upstream)
    return count, True


def promote(
    replica: str | os.PathLike[str],
    *,
    model: str | None = None,
    author: str | None = None,
    signing_key: str | os.PathLike[str] | None = None,
) -> PromoteResult:
    """Turn a standby's replica into the writer: a store `kbgit ingest` accepts.

    With ``signing_key`` (this node's own SSH key) every commit it writes is signed.
    """
    root = Path(replica)
    if not (root / ".git").is_dir():
        raise ConfigError(f"{root} is not a replica", hint="promote a kbgit standby's directory")
    repo = GitRepo(root)
    hub, branch = _hub_url(repo, root), _branch(repo)
    with _exclusive(root):
        if (root / CONFIG_NAME).exists():
            store = KnowledgeStore(root)
            head = store.repo.head()
            if store.config.hub and head is not None:
                return _reclaim(store, head)
        caught_up, reachable = _catch_up(repo, branch)
        head = repo.head()
        if head is None:
            raise ConfigError(f"{root} has no commits yet", hint="let the standby sync first")
        if repo.read_file(head, LEDGER_PATH) is None:
            raise ConfigError(f"HEAD of {root} is not a kbgit commit")
        snap = load_snapshot(repo, head, cache=SegmentCache())  # full verification
        config = settings_from_ledger(snap.ledger, hub, branch, model)
        if author:
            config = dataclasses.replace(config, author=author)
        if signing_key:
            config = dataclasses.replace(config, signing_key=str(check_key(signing_key)))
        record = claim(repo, HUB_REMOTE, reachable=reachable)  # CAS: one winner
        _write_config(root, config)
        repo.run("reset", "--quiet", "--hard", head)  # a clean tree: ingest repairs nothing
    logger.info("promoted %s at %s (hub %s)", root, head[:12], redact(hub))
    return PromoteResult(
        str(root), redact(hub), branch, head, config.model, caught_up, reachable,
        epoch=record.epoch, claim_pending=not reachable,
    )  # fmt: skip


def _reclaim(store: KnowledgeStore, head: str) -> PromoteResult:
    """Promote a working store: take the writer role unless it holds it already."""
    config, hub = store.config, redact(store.config.hub)
    try:
        status = fence_check(store.repo, HUB_REMOTE)
    except GitError as exc:
        logger.warning("hub unreachable, the writer role is unchanged: %s", exc)
        return PromoteResult(str(store.root), hub, config.branch, head, config.model, 0, False,
                             changed=False)  # fmt: skip
    if status.held and not status.pending and status.local is not None:
        epoch, changed = status.local.epoch, False
    else:
        epoch, changed = claim(store.repo, HUB_REMOTE).epoch, True
    return PromoteResult(
        str(store.root), hub, config.branch, head, config.model, 0, True, changed, epoch
    )


def _write_config(root: Path, config: StoreConfig) -> None:
    exclude = root / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    if f"/{CONFIG_NAME}" not in text.split("\n"):
        exclude.write_text(text + f"/{CONFIG_NAME}\n", encoding="utf-8")
    write_atomic(root / CONFIG_NAME, config.to_toml().encode())


def rejoin(store: str | os.PathLike[str]) -> RejoinResult:
    """Make an old primary a replica of the hub; keep commits the hub lacks on a branch."""
    root = Path(store)
    if not (root / ".git").is_dir():
        raise ConfigError(f"{root} is not a kbgit store")
    repo = GitRepo(root)
    hub, branch = _hub_url(repo, root), _branch(repo)
    with _exclusive(root):
        try:
            upstream = repo.fetch(HUB_REMOTE, branch)
        except GitError as exc:
            raise GitError(
                f"cannot reach the hub {redact(hub)}: {redact(exc.stderr or str(exc))}",
                stderr=exc.stderr,
                hint="rejoin needs the hub; nothing was changed",
            ) from exc
        if upstream is None:
            raise ConfigError(f"the hub {redact(hub)} has no branch {branch!r}: nothing to rejoin")
        load_snapshot(repo, upstream, cache=SegmentCache())  # refuse to sit on a bad commit
        head = repo.head()
        orphan, count = None, 0
        if head is not None and not repo.is_ancestor(head, upstream):
            count = repo.count_commits(f"{upstream}..{head}")
            orphan = ORPHAN_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            repo.run("branch", orphan, head)
        (root / ".git" / "index.lock").unlink(missing_ok=True)
        repo.run("reset", "--quiet", "--hard", upstream)
        repo.run("clean", "-fdq", "--", "docs", "index")
        release(repo)  # a standby holds no writer claim
        config = root / CONFIG_NAME
        if config.exists():  # a standby has no kb.toml: ingest on it must not look normal
            config.replace(root / ".git" / OLD_CONFIG)
    if orphan:
        logger.warning("%s: kept %d unpushed commit(s) on %s", root, count, orphan)
    return RejoinResult(str(root), redact(hub), branch, upstream, head, orphan, count)


__all__ = ["ORPHAN_PREFIX", "PromoteResult", "RejoinResult", "promote", "rejoin"]

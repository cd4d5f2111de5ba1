"""Hub hooks: refuse bad pushes (pre-receive) and wake the standbys (post-receive).

The hook files in the hub are short shims (``exec PYTHON -m kbgit hook <name>``) that
record, at install time, the Python that has kbgit installed. The logic lives here:

- pre-receive refuses deletions, non-fast-forward updates and any new commit whose
  store fails verification. Pushed objects sit in git's quarantine until the hook
  accepts them; git passes its object directories in the environment, so the same
  ``load_snapshot`` that standbys run reads them.
- post-receive POSTs ``/admin/sync`` (bearer token) to every configured standby, in
  parallel with a short timeout; it never fails a push and never blocks one for long.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ConfigError, GitError, IntegrityError, QueryError
from .gitrepo import GitRepo
from .snapshot import SegmentCache, load_snapshot

HOOK_NAMES = ("pre-receive", "post-receive")
#: marks hook files written by kbgit (others are never overwritten without --force)
MARKER = "kbgit hook shim"
ZERO = "0" * 40
#: seconds the post-receive hook waits for all standbys together
DEFAULT_NOTIFY_TIMEOUT = 2.0

SHIM = """#!/bin/sh
# {marker}: the logic lives in kbgit.hooks (python -m kbgit hook {name}).
# `kbgit hooks install` records the Python that has kbgit installed; KBGIT_PYTHON overrides it.
exec "${{KBGIT_PYTHON:-{python}}}" -m kbgit hook {name}
"""


@dataclasses.dataclass(frozen=True)
class RefUpdate:
    """One line of a receive hook's stdin."""

    old: str
    new: str
    ref: str


def render_shim(name: str, python: str) -> str:
    """Return the text of hook ``name`` running kbgit with ``python``."""
    if name not in HOOK_NAMES:
        raise ConfigError(f"unknown hook {name!r}", hint=f"one of: {', '.join(HOOK_NAMES)}")
    return SHIM.format(marker=MARKER, name=name, python=python)


def parse_updates(text: str) -> list[RefUpdate]:
    """Parse ``<old> <new> <ref>`` lines."""
    updates = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(*parts))
    return updates


def install(
    hub: str | os.PathLike[str],
    *,
    notify: Sequence[str] = (),
    token: str | None = None,
    python: str | None = None,
    force: bool = False,
) -> list[Path]:
    """Install the kbgit hooks in a bare hub and record the standbys to notify."""
    repo = GitRepo(hub)
    try:
        bare = repo.run("rev-parse", "--is-bare-repository") == "true"
    except GitError as exc:
        raise ConfigError(f"{hub} is not a git repository") from exc
    if not bare:
        raise ConfigError(f"{hub} is not a bare hub", hint="create one with: kbgit hub create")
    hooks_dir = Path(repo.run("rev-parse", "--absolute-git-dir")) / "hooks"
    hooks_dir.mkdir(exist_ok=True)
    written = []
    for name in HOOK_NAMES:
        path = hooks_dir / name
        if path.exists() and MARKER not in path.read_text(errors="replace") and not force:
            raise ConfigError(
                f"{path} exists and was not written by kbgit", hint="use --force to replace it"
            )
        path.write_text(render_shim(name, python or sys.executable), encoding="utf-8")
        path.chmod(0o755)
        written.append(path)
    repo.run_bytes("config", "--unset-all", "kbgit.notify", check=False)
    for url in notify:
        repo.run("config", "--add", "kbgit.notify", url.rstrip("/"))
    if token is not None:
        repo.run("config", "kbgit.token", token)
    return written


def pre_receive(repo: GitRepo, updates: Sequence[RefUpdate]) -> list[str]:
    """Return one refusal message per bad update (empty: accept the push)."""
    refusals: list[str] = []
    cache = SegmentCache()
    for up in updates:
        if not up.ref.startswith("refs/heads/"):
            continue
        if up.new == ZERO:
            refusals.append(f"{up.ref}: deleting a branch of a kbgit hub is refused")
            continue
        if up.old != ZERO and not repo.is_ancestor(up.old, up.new):
            refusals.append(
                f"{up.ref}: non-fast-forward update refused ({up.old[:12]} is not an ancestor "
                f"of {up.new[:12]}); fetch and rebuild on the hub's history (kbgit pull)"
            )
            continue
        refusals.extend(_verify_new(repo, up, cache))
    return refusals


def _verify_new(repo: GitRepo, up: RefUpdate, cache: SegmentCache) -> list[str]:
    """Verify every commit the update adds to the hub, newest first; stop at the first bad."""
    try:
        commits = repo.run("rev-list", up.new, "--not", "--all").split()
    except GitError as exc:
        return [f"{up.ref}: cannot read the pushed commit {up.new[:12]}: {exc.stderr}"]
    for commit in commits:
        try:
            load_snapshot(repo, commit, cache=cache)
        except (IntegrityError, QueryError, GitError) as exc:
            return [
                f"{up.ref}: commit {commit[:12]} fails verification: {exc}. "
                "Nothing was changed on the hub; fix the store (kbgit verify, kbgit repair) "
                "and push again"
            ]
    return []


def notify_targets(repo: GitRepo, env: Mapping[str, str]) -> tuple[list[str], str | None]:
    """Return the standby URLs and the token (KBGIT_TOKEN overrides the hub config)."""
    urls = repo.run_bytes("config", "--get-all", "kbgit.notify", check=False).decode().split()
    token = env.get("KBGIT_TOKEN") or (
        repo.run_bytes("config", "--get", "kbgit.token", check=False).decode().strip() or None
    )
    return urls, token


def post_receive(
    urls: Sequence[str], token: str | None, *, timeout: float = DEFAULT_NOTIFY_TIMEOUT
) -> list[str]:
    """POST /admin/sync to every standby in parallel; return one report line each."""
    reports: dict[str, str] = {u: f"{u}: no answer within {timeout:g}s" for u in urls}

    def send(url: str) -> None:
        req = urllib.request.Request(f"{url.rstrip('/')}/admin/sync", data=b"", method="POST")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                reports[url] = f"{url}: notified ({resp.status})"
        except urllib.error.HTTPError as exc:
            reports[url] = f"{url}: notify refused ({exc.code})"
        except (urllib.error.URLError, OSError) as exc:
            reports[url] = f"{url}: cannot notify ({getattr(exc, 'reason', exc)})"

    threads = [threading.Thread(target=send, args=(u,), daemon=True) for u in urls]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 0.5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [reports[u] for u in urls]

"""Hub hooks: refuse bad pushes (pre-receive) and wake the standbys (post-receive).

The hook files in the hub are short shims that record, at install time, the Python that
has kbgit installed. The logic lives here:

- pre-receive refuses deletions, non-fast-forward updates and any new commit whose
  store fails verification. Pushed objects sit in git's quarantine until the hook
  accepts them; git passes its object directories in the environment, so the same
  checks ``load_snapshot`` runs on standbys read them. Each new commit is verified
  incrementally against the commit the branch already points at (accepted by this
  hook earlier): unchanged files are trusted, so a push costs O(change), not O(store).
- post-receive POSTs ``/admin/sync`` (bearer token) to every configured standby, in
  parallel with a short timeout; it never fails a push and never blocks one for long.
  The installed shim exits at once when no standby is listed, and otherwise runs
  ``kbgit/hub/notify.py`` as a script (``PYTHON -I -S .../notify.py post-receive``):
  standard library only, so it starts in ~0.01 s of CPU instead of importing all of
  kbgit (~0.7 s), which every push would wait for.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

try:
    from .notify import DEFAULT_NOTIFY_TIMEOUT as DEFAULT_NOTIFY_TIMEOUT
    from .notify import notify_targets as notify_targets
    from .notify import post_receive as post_receive
    from .notify import run_post_receive as run_post_receive
    from .notify import valid_notify_url
except ImportError:  # run as a file by a shim of an older release: notify.py does the work
    if __name__ == "__main__" and sys.argv[1:] == ["post-receive"]:
        import runpy

        runpy.run_path(str(Path(__file__).with_name("notify.py")), run_name="__main__")
        sys.exit(0)
    raise

if TYPE_CHECKING:
    from ..format.limits import Limits
    from ..gitrepo import GitRepo


HOOK_NAMES = ("pre-receive", "post-receive")
#: marks hook files written by kbgit (others are never overwritten without --force)
MARKER = "kbgit hook shim"
ZERO = "0" * 40
#: hub config key naming the allowed-signers file (set: only signed commits are accepted)
SIGNERS_KEY = "kbgit.allowedSigners"
SHIM = """#!/bin/sh
# {marker}: the logic lives in kbgit/hub/hooks.py (also: kbgit hook {name}).
# `kbgit hooks install` records the Python that has kbgit installed; KBGIT_PYTHON overrides it.
{guard}exec "${{KBGIT_PYTHON:-{python}}}" {target} {name}
"""
#: post-receive with a notify script: no Python at all when no standby is listed
GUARD = "git config --get kbgit.notify >/dev/null || exit 0\n"


@dataclasses.dataclass(frozen=True)
class RefUpdate:
    """One line of a receive hook's stdin."""

    old: str
    new: str
    ref: str


def render_shim(name: str, python: str, *, script: str | None = None) -> str:
    """Return the text of hook ``name`` run by ``python`` (post-receive: as ``script``)."""
    if name not in HOOK_NAMES:
        from ..errors import ConfigError

        raise ConfigError(f"unknown hook {name!r}", hint=f"one of: {', '.join(HOOK_NAMES)}")
    # -I: isolated, so the script's own directory (kbgit/hub/) is not put on sys.path;
    # -S: no site-packages (notify.py needs none), ~0.01 s less per push
    fast = bool(script) and name == "post-receive"
    target = f'-I -S "{script}"' if fast else "-m kbgit.hub.hooks"
    guard = GUARD if fast else ""
    return SHIM.format(marker=MARKER, name=name, python=python, target=target, guard=guard)


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
    allowed_signers: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Install the kbgit hooks in a bare hub and record the standbys to notify.

    The hub's config, which holds the token, is made readable by its owner only (0600).
    With ``allowed_signers``, pre-receive accepts only commits signed by one of its keys.
    """
    from ..errors import ConfigError, GitError
    from ..format.signatures import check_allowed
    from ..gitrepo import GitRepo

    _check_notify(notify)
    signers = check_allowed(allowed_signers) if allowed_signers else None

    repo = GitRepo(hub)
    try:
        bare = repo.run("rev-parse", "--is-bare-repository") == "true"
    except GitError as exc:
        raise ConfigError(f"{hub} is not a git repository") from exc
    if not bare:
        raise ConfigError(f"{hub} is not a bare hub", hint="create one with: kbgit hub create")
    git_dir = Path(repo.run("rev-parse", "--absolute-git-dir"))
    hooks_dir = git_dir / "hooks"
    hooks_dir.mkdir(exist_ok=True)
    written = []
    for name in HOOK_NAMES:
        path = hooks_dir / name
        if path.exists() and MARKER not in path.read_text(errors="replace") and not force:
            raise ConfigError(
                f"{path} exists and was not written by kbgit", hint="use --force to replace it"
            )
        sender = str(Path(__file__).resolve().with_name("notify.py"))
        shim = render_shim(name, python or sys.executable, script=sender)
        path.write_text(shim, encoding="utf-8")
        path.chmod(0o755)
        written.append(path)
    _record_notify(repo, git_dir, notify, token)
    if signers is not None:
        repo.run("config", SIGNERS_KEY, str(signers))
    return written


def install_chain(
    replica: str | os.PathLike[str], *, notify: Sequence[str], token: str | None = None
) -> None:
    """Record the standbys that follow a standby's replica (chained replication).

    The same settings as a hub's (``kbgit.notify``, ``kbgit.token``, config made 0600);
    the standby serving ``replica`` POSTs ``/admin/sync`` to each after every new commit
    it serves, as a hub's post-receive hook does after a push. No hook file is written.
    """
    from ..errors import ConfigError, GitError
    from ..gitrepo import GitRepo

    _check_notify(notify)
    repo = GitRepo(replica)
    try:
        bare = repo.run("rev-parse", "--is-bare-repository") == "true"
    except GitError as exc:
        raise ConfigError(f"{replica} is not a git repository") from exc
    if bare:
        raise ConfigError(
            f"{replica} is a bare hub, not a standby's replica",
            hint=f"for a hub use: kbgit hooks install {replica} --notify URL",
        )
    _record_notify(repo, Path(repo.run("rev-parse", "--absolute-git-dir")), notify, token)


def _check_notify(notify: Sequence[str]) -> None:
    from ..errors import ConfigError

    bad = [u for u in notify if not valid_notify_url(u)]
    if bad:
        raise ConfigError(
            f"--notify {bad[0]!r} is not an http(s) URL",
            hint="give a standby's base URL like http://127.0.0.1:8002 (no spaces)",
        )


def _record_notify(repo: GitRepo, git_dir: Path, notify: Sequence[str], token: str | None) -> None:
    """Write the standbys to wake and the token into the repository's config (0600)."""
    (git_dir / "config").chmod(0o600)  # git keeps the mode when it rewrites the file
    repo.run_bytes("config", "--unset-all", "kbgit.notify", check=False)
    for url in notify:
        repo.run("config", "--add", "kbgit.notify", url.rstrip("/"))
    if token is not None:
        repo.run("config", "kbgit.token", token)


def pre_receive(repo: GitRepo, updates: Sequence[RefUpdate]) -> list[str]:
    """Return one refusal message per bad update (empty: accept the push)."""
    refusals: list[str] = []
    for up in updates:
        if up.ref.startswith("refs/kbgit/"):
            refusals.extend(_writer_refusal(repo, up))
            continue
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
        bad = _verify_new(repo, up)
        if not bad and up.old != ZERO:
            from ..retrieval.gate import gate_refusal

            gate = gate_refusal(repo, up.ref, up.old, up.new)
            bad = [gate] if gate else []
        refusals.extend(bad)
    return refusals


def _writer_refusal(repo: GitRepo, up: RefUpdate) -> list[str]:
    """Refuse a refs/kbgit/* update other than the next writer record (every store fetches
    refs/kbgit/*, and reads refs/kbgit/writer before it writes or promotes)."""
    from ..errors import GitError
    from ..fencing import WRITER_REF, update_problem

    if up.ref != WRITER_REF:
        return [f"{up.ref}: only {WRITER_REF} is accepted under refs/kbgit/"]
    try:
        problem = update_problem(
            repo, None if up.old == ZERO else up.old, None if up.new == ZERO else up.new
        )
    except GitError as exc:
        problem = f"cannot read it: {exc}"
    return [f"{up.ref}: {problem}. Nothing was changed on the hub"] if problem else []


def hub_limits(repo: GitRepo) -> Limits:
    """Return the size limits of a hub: git config kbgit.maxDocumentBytes, maxIndexFileBytes."""
    from ..format.limits import Limits

    def setting(name: str, default: int) -> int:
        out = repo.run_bytes("config", "--type=int", "--get", f"kbgit.{name}", check=False)
        return int(out) if out.strip() else default

    return Limits(
        setting("maxDocumentBytes", Limits.max_document_bytes),
        setting("maxIndexFileBytes", Limits.max_index_file_bytes),
    )


def _verify_new(repo: GitRepo, up: RefUpdate) -> list[str]:
    """Verify every commit the update adds to the hub, oldest first; stop at the first bad.

    Each is checked incrementally against a parent already accepted: the ref's old
    commit (verified by this hook when it was pushed) or one verified just before.
    """
    from ..errors import GitError, IntegrityError, QueryError
    from ..format.verify import verify_commit

    try:
        lines = repo.run(
            "rev-list", "--reverse", "--topo-order", "--parents", up.new, "--not", "--all"
        ).splitlines()
    except GitError as exc:
        return [f"{up.ref}: cannot read the pushed commit {up.new[:12]}: {exc.stderr}"]
    refused = _unsigned(repo, [line.split()[0] for line in lines])
    if refused:
        return [f"{up.ref}: {refused}. Nothing was changed on the hub"]
    verified = {up.old} if up.old != ZERO else set()
    limits = hub_limits(repo)
    for line in lines:
        commit, *parents = line.split()
        base = next((p for p in parents if p in verified), None)
        try:
            verify_commit(repo, commit, base=base, limits=limits)
        except (IntegrityError, QueryError, GitError) as exc:
            return [
                f"{up.ref}: commit {commit[:12]} fails verification: {exc}. "
                "Nothing was changed on the hub; fix the store (kbgit verify, kbgit repair) "
                "and push again"
            ]
        verified.add(commit)
    return []


def _unsigned(repo: GitRepo, commits: list[str]) -> str | None:
    """Return why a commit is refused for its signature (None: all signed, or signing off)."""
    from ..errors import KbgitError
    from ..format.signatures import require_signed

    allowed = repo.run_bytes("config", "--get", SIGNERS_KEY, check=False).decode().strip()
    if not allowed:
        return None
    try:
        require_signed(repo, commits, allowed)
    except KbgitError as exc:
        return str(exc)
    return None


def run_pre_receive(stdin_text: str) -> int:
    """Check a push in the hub (cwd); print refusals; return the hook's exit code."""
    from ..gitrepo import GitRepo

    refusals = pre_receive(GitRepo("."), parse_updates(stdin_text))
    for line in refusals:
        print(f"kbgit: REFUSED {line}", file=sys.stderr)
    return 1 if refusals else 0


def main(argv: Sequence[str]) -> int:
    """Run the hook named in ``argv`` on stdin; return its exit code."""
    if list(argv) == ["post-receive"]:
        run_post_receive(sys.stdin.read(), os.environ)
        return 0
    if list(argv) == ["pre-receive"]:
        return run_pre_receive(sys.stdin.read())
    print("usage: python -m kbgit.hub.hooks pre-receive|post-receive", file=sys.stderr)
    return 2


if __name__ == "__main__":  # the shims run `python -m kbgit.hub.hooks NAME` or this file directly
    sys.exit(main(sys.argv[1:]))

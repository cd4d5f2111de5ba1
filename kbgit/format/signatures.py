"""Commit signatures: git's own SSH signing, accepted only from an allowed-signers file.

Verification proves a commit is internally consistent, not who wrote it: anyone who can
push can reseal a forged commit. With signing on, the writer signs every commit
(``git commit -S`` with ``gpg.format=ssh`` and its private key), and the hub's
pre-receive hook and every standby accept a new commit only when git reports a good
signature (``%G?`` = ``G``) by a key listed in an allowed-signers file *they hold
locally* (``gpg.ssh.allowedSignersFile``, the format of ``ssh-keygen -Y verify``). Only
SSH signatures are checked: the OpenPGP and X.509 programs are disabled, so a keyring
on the serving machine is never consulted.

>>> sign_options("/etc/kbgit/writer-key")[:2]
['-c', 'gpg.format=ssh']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, SignatureError
from ..gitrepo import GitRepo

#: what git's %G? letters mean (only G is accepted)
STATUS_TEXT = {
    "G": "good signature",
    "B": "bad signature (the commit was changed after signing)",
    "U": "signed by a key not in the allowed signers",
    "X": "signature expired",
    "Y": "signed by an expired key",
    "R": "signed by a revoked key",
    "E": "signature cannot be checked",
    "N": "not signed",
}
_SEP = "\x1f"


@dataclasses.dataclass(frozen=True)
class Signature:
    """What git says about one commit's signature."""

    commit: str
    #: git's %G? letter: G good and allowed, U good but unknown key, N none, B bad, ...
    status: str
    #: the principal named in the allowed-signers file ("" when none matched)
    signer: str
    #: the signing key's fingerprint ("" when unsigned)
    key: str

    @property
    def ok(self) -> bool:
        """Tell whether the commit is signed by an allowed key."""
        return self.status == "G" and bool(self.signer)

    def describe(self) -> str:
        """Return a one-line account of the signature."""
        if self.ok:
            return f"signed by {self.signer} ({self.key})"
        text = STATUS_TEXT.get(self.status, f"signature status {self.status!r}")
        return f"{text} ({self.key})" if self.key else text


def sign_options(key: str | os.PathLike[str]) -> list[str]:
    """Return ``git -c`` options that make a commit signed with the SSH key file ``key``."""
    return [
        "-c", "gpg.format=ssh",
        "-c", f"user.signingkey={Path(key).resolve()}",
        "-c", "commit.gpgsign=true",
    ]  # fmt: skip


def check_key(key: str | os.PathLike[str]) -> Path:
    """Return the signing key's path; raise ConfigError if it is missing."""
    path = Path(key).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"signing key {path} not found",
            hint="create one with: ssh-keygen -t ed25519 -N '' -f PATH (and list PATH.pub "
            "in the allowed signers of the hub and every standby)",
        )
    return path.resolve()


def check_allowed(allowed: str | os.PathLike[str]) -> Path:
    """Return the allowed-signers file's path; raise ConfigError if it is missing."""
    path = Path(allowed).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"allowed signers file {path} not found",
            hint='one line per key: PRINCIPAL namespaces="git" ssh-ed25519 AAAA...',
        )
    return path.resolve()


def read_signatures(
    repo: GitRepo, commits: Sequence[str], allowed: str | os.PathLike[str]
) -> list[Signature]:
    """Return git's verdict on each commit's signature against ``allowed``."""
    if not commits:
        return []
    out = repo.run(
        "-c", f"gpg.ssh.allowedSignersFile={check_allowed(allowed)}",
        "-c", "gpg.openpgp.program=false",
        "-c", "gpg.x509.program=false",
        "log", "--no-walk=unsorted", f"--format=%H{_SEP}%G?{_SEP}%GS{_SEP}%GK",
        *commits, "--",
    )  # fmt: skip
    sigs = []
    for line in out.splitlines():
        commit, status, signer, key = (line.split(_SEP) + ["", "", ""])[:4]
        sigs.append(Signature(commit, status, signer, key))
    return sigs


def new_commits(repo: GitRepo, rev: str, since: str | None) -> list[str]:
    """Return the commits ``rev`` adds to ``since`` (just ``rev`` when nothing is served)."""
    if since is None:
        return [rev]
    return repo.run("rev-list", rev, "--not", since).split()


def require_signed(
    repo: GitRepo, commits: Sequence[str], allowed: str | os.PathLike[str]
) -> list[Signature]:
    """Return the signatures of ``commits``; raise SignatureError at the first not allowed."""
    sigs = read_signatures(repo, commits, allowed)
    for sig in sigs:
        if not sig.ok:
            raise SignatureError(f"commit {sig.commit[:12]} is refused: {sig.describe()}")
    return sigs

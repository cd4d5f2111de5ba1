"""What a commit's tree may hold: regular files with UTF-8 names, nothing else.

Git keeps a mode per entry: 100644 (file), 100755 (executable), 120000 (symbolic link:
the blob is the link's target), 160000 (gitlink: a submodule commit). kbgit only ever
writes 100644 files. Anything else in a pushed commit would reach a replica's working
tree (a link to ``/etc/passwd``, or a directory link a later ingest writes through), so
verification refuses it: in the hub's pre-receive hook, ``kbgit verify`` and on every
standby before it moves.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import IntegrityError
from ..gitrepo import TreeEntry

#: the one mode a store's files have
REGULAR = "100644"
_WHAT = {
    "120000": "a symbolic link",
    "160000": "a submodule (gitlink)",
    "100755": "an executable file",
}


def plain_files(entries: Iterable[TreeEntry]) -> dict[str, str]:
    """Map each path to its blob id; refuse non-regular entries and non-UTF-8 names."""
    tree: dict[str, str] = {}
    for entry in entries:
        try:
            entry.raw_path.decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError(f"{entry.path!r}: file name is not valid UTF-8") from None
        if entry.mode != REGULAR or entry.kind != "blob":
            what = _WHAT.get(entry.mode, f"a {entry.kind}")
            raise IntegrityError(
                f"{entry.path} is {what} (mode {entry.mode}): a store holds regular files only"
            )
        tree[entry.path] = entry.sha
    return tree

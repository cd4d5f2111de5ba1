"""Run the last release that reads only format 1, from this repository's own history.

The release is the tree of commit OLD_RELEASE (tag ``layout-v2``), extracted with
``git archive`` and run with the current virtualenv's dependencies; the editable install
of the working tree is taken off ``sys.meta_path`` so ``import kbgit`` finds the old code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

#: the last commit whose kbgit reads only store format 1 (tag layout-v2)
OLD_RELEASE = "a87e1b7e19c7e6a87d935cf7b59cf1fcef525072"

_BOOT = (
    "import sys, runpy; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path.insert(0, sys.argv.pop(1)); "
)


def extract(dest: Path) -> Path:
    """Extract the old release's kbgit package under ``dest``; fail (never skip) if absent."""
    probe = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.fail(f"commit {OLD_RELEASE} (the format-1 release) is not in this checkout")
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", OLD_RELEASE, "kbgit"],
        capture_output=True,
        check=True,
    )
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def cli(release: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kbgit ARGS`` of the old release."""
    code = _BOOT + "runpy.run_module('kbgit', run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", code, str(release), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def script(release: Path, source: str, *args: str) -> subprocess.Popen[str]:
    """Start ``source`` (Python) under the old release, with pipes for a line protocol."""
    code = _BOOT + "exec(compile(sys.argv.pop(1), 'old-release', 'exec'))"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(release), source, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

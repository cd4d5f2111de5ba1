"""The shipped CI gates (deploy/ci/): their verify script, run as the CI would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kbgit import KnowledgeStore

from .conftest import REPO_ROOT, write_docs

GITHUB = REPO_ROOT / "deploy" / "ci" / "kbgit-verify.yml"
GITLAB = REPO_ROOT / "deploy" / "ci" / "gitlab-ci.yml"


def _github_script() -> tuple[str, dict]:
    steps = yaml.safe_load(GITHUB.read_text())["jobs"]["verify"]["steps"]
    step = next(s for s in steps if "kbgit verify" in s.get("run", ""))
    return step["run"], step["env"]


def _gitlab_script() -> tuple[str, dict]:
    job = yaml.safe_load(GITLAB.read_text())["kbgit-verify"]
    return "\n".join(job["script"]), job["variables"]


def test_both_gates_run_on_push_with_the_whole_history() -> None:
    gh = yaml.safe_load(GITHUB.read_text())
    assert gh[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads `on` as True
    checkout = gh["jobs"]["verify"]["steps"][0]
    assert checkout["uses"].startswith("actions/checkout") and checkout["with"]["fetch-depth"] == 0
    assert _github_script()[1] == {"BEFORE": "${{ github.event.before }}",
                                   "AFTER": "${{ github.sha }}"}  # fmt: skip
    variables = _gitlab_script()[1]
    assert variables["GIT_DEPTH"] == "0" and variables["BEFORE"] == "$CI_COMMIT_BEFORE_SHA"
    assert _github_script()[0].strip() == _gitlab_script()[0].strip()  # one script, two hosts


def _run(script: str, checkout: Path, before: str, after: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)  # where the kbgit console script lives
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BEFORE": before,
           "AFTER": after}  # fmt: skip
    return subprocess.run(
        ["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("script", [_github_script()[0], _gitlab_script()[0]], ids=["gh", "gl"])
def test_the_gate_verifies_every_pushed_commit_and_fails_on_a_bad_one(
    script: str, tmp_path: Path, store: KnowledgeStore, docs: Path, hub: Path
) -> None:
    first = store.ingest(docs).commit
    write_docs(docs, {"more.md": "a second page about pager schedules"})
    second = store.ingest(docs).commit
    assert first and second
    checkout = tmp_path / "ci"
    subprocess.run(["git", "clone", "-q", str(hub), str(checkout)], check=True)
    ok = _run(script, checkout, first, second)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok ") == 1  # the one commit this push added
    new_branch = _run(script, checkout, "0" * 40, second)
    assert new_branch.returncode == 0 and new_branch.stdout.count("ok ") == 1
    # a push the hub could not refuse (hosted git): a corrupt index file
    seg = next(p for p in store.repo.ls_tree("HEAD") if p.startswith("index/"))
    (checkout / seg).write_bytes(b"not what the manifest says")
    bad = subprocess.run(
        ["git", "-C", str(checkout), "-c", "user.name=x", "-c", "user.email=x@y", "commit",
         "-qam", "corrupt", "--no-verify"], capture_output=True, text=True,
    ).returncode  # fmt: skip
    assert bad == 0
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    refused = _run(script, checkout, second, head)
    assert refused.returncode == 4, refused.stdout + refused.stderr

"""Hub hooks with real `git push`: verification in pre-receive, notification in post-receive."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.config import StoreSpec
from kbgit.errors import ConfigError, GitError
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks

from .conftest import REPO_ROOT, write_docs
from .serve_helpers import TOKEN, corrupt_commit, start_server, wait_until


def _push(store: KnowledgeStore, *extra: str) -> tuple[int, str]:
    proc = store.repo._exec(["push", *extra, "hub", "HEAD:refs/heads/main"])
    return proc.returncode, proc.stderr.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shims_in_the_repo_match_what_install_writes(hub: Path) -> None:
    for name in hub_hooks.HOOK_NAMES:
        shipped = (REPO_ROOT / "hooks" / name).read_text()
        assert shipped == hub_hooks.render_shim(name, "python3")
    paths = hub_hooks.install(hub, notify=["http://127.0.0.1:1/"], token="t")
    for path in paths:
        text = path.read_text()
        assert sys.executable in text and path.stat().st_mode & 0o111
    repo = GitRepo(hub)
    assert repo.run("config", "--get-all", "kbgit.notify") == "http://127.0.0.1:1"
    assert repo.run("config", "kbgit.token") == "t"


def test_install_refuses_foreign_hooks_and_non_hubs(hub: Path, store: KnowledgeStore) -> None:
    (hub / "hooks" / "pre-receive").write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(ConfigError, match="not written by kbgit"):
        hub_hooks.install(hub)
    assert hub_hooks.install(hub, force=True)
    with pytest.raises(ConfigError, match="not a bare hub"):
        hub_hooks.install(store.root)


def test_pre_receive_accepts_good_pushes_and_refuses_corrupt_ones(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    hub_hooks.install(hub)
    good = store.ingest(docs)
    assert good.pushed  # a good ingest passes the hook
    corrupt_commit(store)
    code, err = _push(store)
    assert code != 0
    assert "kbgit: REFUSED refs/heads/main: commit" in err and "fails verification" in err
    assert "sha256 mismatch" in err
    assert GitRepo(hub).rev_parse("main") == good.commit  # the hub did not move


def test_pre_receive_refuses_non_fast_forward_and_deletion(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    GitRepo(hub).run("config", "receive.denyNonFastForwards", "false")  # the hook must catch it
    GitRepo(hub).run("config", "receive.denyDeletes", "false")
    hub_hooks.install(hub)
    store.ingest(docs)
    write_docs(docs, {"more.md": "More words about gardening and soil."})
    second = store.ingest(docs).commit
    store.repo.run("reset", "-q", "--hard", "HEAD~1")
    code, err = _push(store, "--force")
    assert code != 0 and "non-fast-forward update refused" in err
    assert GitRepo(hub).rev_parse("main") == second
    proc = store.repo._exec(["push", "hub", ":refs/heads/main"])
    assert proc.returncode != 0 and "deleting a branch" in proc.stderr.decode()


def test_pre_receive_logic_reads_quarantined_objects_only_through_git(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    """The hook logic itself, called on an update whose commit the hub does not have."""
    commit = store.ingest(docs, push=False).commit
    refusals = hub_hooks.pre_receive(
        GitRepo(hub), [hub_hooks.RefUpdate(hub_hooks.ZERO, commit, "refs/heads/main")]
    )
    assert len(refusals) == 1 and commit[:12] in refusals[0]  # its objects are not there
    with pytest.raises(GitError):
        GitRepo(hub).ls_tree(commit)


def test_post_receive_wakes_the_standby(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)), interval=60)
    try:
        wait_until(lambda: srv.services.ready)
        hub_hooks.install(hub, notify=[srv.url], token=TOKEN)
        write_docs(docs, {"pelican.md": "Pelicans dive for fish along the harbour wall."})
        started = time.monotonic()
        result = store.ingest(docs)
        assert result.pushed
        # the sync interval is 60 s: only the hook's notification can explain a quick update
        wait_until(lambda: srv.services.single.commit == result.commit, timeout=10)
        assert time.monotonic() - started < 10
    finally:
        srv.stop()


def test_post_receive_never_fails_or_blocks_a_push(
    hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}"
        hub_hooks.install(hub, notify=[dead, hung], token="x")
        store.ingest(docs, push=False)
        started = time.monotonic()
        code, err = _push(store)
        took = time.monotonic() - started
    assert code == 0, err
    assert f"{dead}: cannot notify" in err
    assert f"{hung}: cannot notify (timed out)" in err or f"{hung}: no answer" in err
    assert took < hub_hooks.DEFAULT_NOTIFY_TIMEOUT + 5  # bounded, whatever the standbys do


def _old_shims(hub: Path) -> None:
    """Write the shims the release before the package layout moved installed in hubs."""
    import kbgit

    script = Path(kbgit.__file__).resolve().parent / "hooks.py"
    old = "#!/bin/sh\n# kbgit hook shim: the logic lives in kbgit/hooks.py\nexec {py} {target} {name}\n"
    for name, target in (("pre-receive", "-m kbgit.hooks"), ("post-receive", f'-I "{script}"')):
        path = hub / "hooks" / name
        path.write_text(old.format(py=sys.executable, target=target, name=name))
        path.chmod(0o755)


def test_hooks_installed_before_the_layout_moved_still_run(
    tmp_path: Path, hub: Path, store: KnowledgeStore, docs: Path
) -> None:
    """Old shims run `-m kbgit.hooks` and `-I .../kbgit/hooks.py`: both still work."""
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)), interval=60)
    try:
        wait_until(lambda: srv.services.ready)
        hub_hooks.install(hub, notify=[srv.url], token=TOKEN)  # the notify settings
        _old_shims(hub)
        write_docs(docs, {"heron.md": "Herons wait motionless in the shallows for fish."})
        result = store.ingest(docs)
        assert result.pushed
        wait_until(lambda: srv.services.single.commit == result.commit, timeout=10)
        corrupt_commit(store)
        code, err = _push(store)
        assert code != 0 and "kbgit: REFUSED refs/heads/main" in err  # old pre-receive shim
        assert GitRepo(hub).rev_parse("main") == result.commit
    finally:
        srv.stop()


def test_post_receive_starts_no_python_when_no_standby_is_listed(tmp_path: Path, hub: Path) -> None:
    marker = tmp_path / "python-ran"
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\ntouch {marker}\n")
    python.chmod(0o755)
    env = {**os.environ, "KBGIT_PYTHON": str(python)}

    def run_hook() -> int:
        update = f"{'0' * 40} {'1' * 40} refs/heads/main\n"
        hook = hub / "hooks" / "post-receive"
        return subprocess.run([str(hook)], input=update, text=True, cwd=hub, env=env).returncode

    hub_hooks.install(hub)  # no --notify: a webhook-only hub
    assert run_hook() == 0 and not marker.exists()
    hub_hooks.install(hub, notify=["http://127.0.0.1:9"], token="t")
    assert run_hook() == 0 and marker.exists()


def test_post_receive_reads_the_notify_list_and_token_in_one_git_call(hub: Path) -> None:
    hub_hooks.install(hub, notify=["http://127.0.0.1:9", "http://127.0.0.1:10/"], token="t1")
    GitRepo(hub).run("config", "kbgit.token", "t2")  # the last value wins, as in git config
    urls, token = hub_hooks.notify_targets(str(hub), {})
    assert urls == ["http://127.0.0.1:9", "http://127.0.0.1:10"] and token == "t2"
    assert hub_hooks.notify_targets(str(hub), {"KBGIT_TOKEN": "env"})[1] == "env"


def test_a_standby_that_trickles_its_answer_holds_a_notify_thread_no_longer_than_the_timeout() -> (
    None
):
    """The timeout is a deadline for the whole answer, not per read: a standby sending a
    byte at a time kept a hub hook's (or a chained standby's) thread alive for minutes."""
    import threading

    from kbgit.hub.notify import post_receive

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.is_set():
                try:
                    conn.sendall(b"H")
                except OSError:
                    return
                time.sleep(0.2)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    before = threading.active_count()
    started = time.monotonic()
    (line,) = post_receive([f"http://127.0.0.1:{listener.getsockname()[1]}"], None, timeout=1.0)
    assert "timed out" in line
    wait_until(lambda: threading.active_count() <= before, timeout=3)
    assert time.monotonic() - started < 3.5
    stop.set()
    listener.close()

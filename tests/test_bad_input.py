"""Bad input gets a clear error and loses nothing: real stores, the real CLI, a real server.

Every probe checks three things: the exit code (1 error, 2 usage, 3 partial ingest), a
one-line ``error:`` message without a Python traceback, and an unchanged store (HEAD
the same, verification passing).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from kbgit import KnowledgeStore, StoreConfig, create_hub
from kbgit.cli import main
from kbgit.format.shards import read_ledger_at
from server.run import Server

from .conftest import FAKE_CONFIG, write_docs
from .serve_helpers import TOKEN, auth, get, post, start_server

DOCS = {
    "keys.md": "# Rotating keys\n\nRotate API keys every ninety days.\n",
    "backup.txt": "Backups run nightly. Restore drills happen each quarter.\n",
}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI in-process; never let an unexpected exception pass silently."""
    return CliRunner().invoke(main, list(args), env=env)


def documents_of(store: KnowledgeStore) -> set[str]:
    """Return the document paths of the store's HEAD ledger."""
    ledger = read_ledger_at(store.repo, "HEAD")
    assert ledger is not None
    return set(ledger.documents)


def assert_clean_failure(result: Result, code: int = 1) -> None:
    """Exit ``code``, no traceback, and (for errors) a one-line ``error:`` message."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}\n{result.output}"
    )
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    if code == 1:
        assert result.output.lstrip().startswith("error: "), result.output


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeStore]:
    """A store with one ingest, shared by the probes that must leave it unchanged."""
    base = tmp_path_factory.mktemp("badinput")
    hub = create_hub(base / "hub.git")
    store = KnowledgeStore.init(base / "kb", hub=str(hub), config=FAKE_CONFIG)
    store.ingest(write_docs(base / "docs", DOCS))
    yield store


@pytest.fixture
def unchanged(kb: KnowledgeStore) -> Iterator[KnowledgeStore]:
    """Assert after the test that the shared store kept its HEAD and still verifies."""
    head = kb.repo.head()
    yield kb
    assert kb.repo.head() == head
    assert run("verify", str(kb.root)).exit_code == 0


# -- CLI: paths -----------------------------------------------------------------------------
READ_COMMANDS = [
    ("status",),
    ("log",),
    ("show",),
    ("verify",),
    ("pull",),
    ("repair",),
    ("compact",),
    ("query", "{store}", "x"),
    ("diff", "{store}", "HEAD"),
    ("rollback", "{store}", "HEAD", "--dry-run"),
    ("tag", "{store}", "t", "--no-push"),
]


def _args(cmd: tuple[str, ...], store: str) -> list[str]:
    if "{store}" not in cmd:
        return [*cmd, store]
    return [a.replace("{store}", store) for a in cmd]


@pytest.mark.parametrize("cmd", READ_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("where", ["missing", "plain-dir"])
def test_a_path_that_is_not_a_store_is_an_error(tmp_path: Path, cmd, where: str) -> None:
    path = tmp_path / "nope"
    if where == "plain-dir":
        path.mkdir()
    result = run(*_args(cmd, str(path)))
    assert_clean_failure(result)
    assert "is not a kbgit store" in result.output


@pytest.mark.parametrize("cmd", READ_COMMANDS, ids=lambda c: c[0])
def test_a_file_where_a_store_is_expected_is_a_usage_error(tmp_path: Path, cmd) -> None:
    path = tmp_path / "afile"
    path.write_text("x")
    assert_clean_failure(run(*_args(cmd, str(path))), code=2)


def test_hub_create_on_a_file_or_a_non_empty_dir_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    result = run("hub", "create", str(afile))
    assert_clean_failure(result)
    assert afile.read_text() == "keep me"
    full = write_docs(tmp_path / "full", {"f": "keep"})
    assert_clean_failure(run("hub", "create", str(full)))
    assert [p.name for p in full.iterdir()] == ["f"]


# -- CLI: revisions -------------------------------------------------------------------------
BAD_REVS = ["nope", "HEAD^{tree}", "a..b", "HEAD:../../etc", "HEAD~99", "HEAD:ledger.json"]
REV_COMMANDS = [
    ("query", "{store}", "x", "--rev", "{rev}"),
    ("verify", "{store}", "{rev}"),
    ("diff", "{store}", "{rev}", "HEAD"),
    ("diff", "{store}", "HEAD", "{rev}"),
    ("rollback", "{store}", "{rev}"),
    ("show", "{store}", "{rev}"),
    ("log", "{store}", "{rev}"),
    ("tag", "{store}", "t", "{rev}", "--no-push"),
]


@pytest.mark.parametrize("cmd", REV_COMMANDS, ids=lambda c: "-".join(c[:1] + c[2:3]))
@pytest.mark.parametrize("rev", [*BAD_REVS, "--help=x", "-x", "--upload-pack=x", ""])
def test_unknown_or_odd_revisions_are_errors(unchanged: KnowledgeStore, cmd, rev: str) -> None:
    args = [a.replace("{store}", str(unchanged.root)).replace("{rev}", rev) for a in cmd]
    result = run(*args)
    # an option-looking revision is either a click usage error or our "not a revision"
    assert_clean_failure(result, code=2 if result.exit_code == 2 else 1)
    if result.exit_code == 1:
        assert "revision" in result.output
    assert "t" not in unchanged.repo.run("tag", "--list").split()


# -- CLI: an empty store (no commits) -------------------------------------------------------
@pytest.mark.parametrize(
    "cmd",
    [("log",), ("show",), ("verify",), ("compact",), ("query", "x"), ("diff", "HEAD")]
    + [("rollback", "HEAD"), ("tag", "t"), ("export-langchain", "{tmp}/out")],
    ids=lambda c: c[0],
)
def test_read_commands_on_an_empty_store_say_it_has_no_commits(
    store: KnowledgeStore, tmp_path: Path, cmd
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in cmd[1:]]
    result = run(cmd[0], str(store.root), *args)
    assert_clean_failure(result)
    assert "no commits" in result.output
    assert store.repo.head() is None


@pytest.mark.parametrize("cmd", [("status",), ("pull",), ("repair",)], ids=lambda c: c[0])
def test_status_pull_repair_on_an_empty_store_succeed(store: KnowledgeStore, cmd) -> None:
    result = run(*cmd, str(store.root))
    assert result.exit_code == 0, result.output
    assert store.repo.head() is None


# -- CLI: settings --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["--chunk-size", "0"], "chunk_size"),
        (["--chunk-size", "-5"], "chunk_size"),
        (["--chunk-overlap", "-1"], "chunk_overlap"),
        (["--chunk-size", "10", "--chunk-overlap", "10"], "chunk_overlap"),
        (["--chunk-size", "10", "--chunk-overlap", "50"], "chunk_overlap"),
    ],
)
def test_init_with_bad_chunking_creates_nothing(tmp_path: Path, args, words: str) -> None:
    result = run("init", str(tmp_path / "kb"), "--model", "fake:64", *args)
    assert_clean_failure(result)
    assert words in result.output
    assert not (tmp_path / "kb").exists()


def test_init_with_an_unreachable_hub_creates_nothing(tmp_path: Path) -> None:
    result = run("init", str(tmp_path / "kb"), "--model", "fake:64", "--hub", "/nonexistent")
    assert_clean_failure(result)
    assert "hub" in result.output
    assert not (tmp_path / "kb").exists()


def test_init_over_an_existing_store_is_refused(unchanged: KnowledgeStore) -> None:
    assert_clean_failure(run("init", str(unchanged.root), "--model", "fake:64"))


@pytest.mark.parametrize(
    "text",
    [
        "garbage [[[",
        "\udcff\udcfebinary",
        "store = 3",
        'chunk_size = "abc"',
        'hub = "/elsewhere"\nmodel = "fake:8"',
        '[store]\nchunk_size = "abc"',
        "[store]\nchunk_size = -1",
        "[store]\nchunk_size = 3.7",
        "[store]\nchunk_size = true",
        '[store]\nhub = ["a"]',
        "[store]\nunknown_key = 1",
    ],
    ids=lambda t: t.encode("utf-8", "surrogateescape")[:24].decode("ascii", "replace"),
)
def test_a_garbage_kb_toml_is_refused_before_any_write(
    unchanged: KnowledgeStore, tmp_path: Path, text: str
) -> None:
    config = unchanged.root / "kb.toml"
    good = config.read_bytes()
    docs = write_docs(tmp_path / "docs", {**DOCS, "new.md": "A new document about tea.\n"})
    try:
        config.write_bytes(text.encode("utf-8", "surrogateescape"))
        for cmd in (["status", "--no-fetch"], ["query", "x"], ["ingest"]):
            args = [*cmd[:1], str(unchanged.root), *cmd[1:]]
            result = run(*args, *([str(docs)] if cmd == ["ingest"] else []))
            assert_clean_failure(result)
            assert any(w in result.output for w in ("kb.toml", "setting", "chunk_size"))
    finally:
        config.write_bytes(good)


@pytest.mark.parametrize("name, value", [("CHUNK_SIZE", "abc"), ("CHUNK_SIZE", "")])
def test_a_bad_environment_override_is_an_error(
    unchanged: KnowledgeStore, tmp_path: Path, name: str, value: str
) -> None:
    docs = write_docs(tmp_path / "docs", {**DOCS, "new.md": "A new document.\n"})
    result = run("ingest", str(unchanged.root), str(docs), env={f"KBGIT_{name}": value})
    assert_clean_failure(result)
    assert name.lower() in result.output


# -- CLI: query arguments -------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, code, words",
    [
        (["", "-k", "1"], 1, "empty"),
        (["   "], 1, "empty"),
        (["x", "-k", "0"], 1, "k must"),
        (["x", "-k", "-1"], 1, "k must"),
        (["x", "-k", "100000"], 1, "k must"),
        (["x", "--score-threshold", "nan"], 1, "score_threshold"),
        (["x", "--score-threshold", "inf"], 1, "score_threshold"),
        (["x", "--score-threshold", "abc"], 2, ""),
        (["x", "-k", "abc"], 2, ""),
    ],
)
def test_bad_query_arguments(unchanged: KnowledgeStore, args, code: int, words: str) -> None:
    result = run("query", str(unchanged.root), *args)
    assert_clean_failure(result, code=code)
    assert words in result.output


# -- CLI: awkward source folders ------------------------------------------------------------
def test_ingest_reports_unreadable_files_and_ingests_the_rest(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    src = write_docs(tmp_path / "src", {**DOCS, "dir with space/ünï/fïle näme.md": "Café.\n"})
    os.mkfifo(src / "fifo.md")
    (src / "dangling.md").symlink_to(tmp_path / "nowhere")
    (src / "loopa.md").symlink_to(src / "loopb.md")
    (src / "loopb.md").symlink_to(src / "loopa.md")
    (src / "sub").mkdir()
    (src / "sub" / "self").symlink_to(src / "sub")
    (src / "corrupt.pdf").write_bytes(b"%PDF-1.4 garbage")
    result = run("ingest", str(store.root), str(src), "--no-push")
    assert_clean_failure(result, code=3)
    for name in ("fifo.md", "dangling.md", "loopa.md", "loopb.md", "corrupt.pdf"):
        assert f"failed: {name}:" in result.output
    documents = documents_of(store)
    assert documents == {"keys.md", "backup.txt", "dir with space/ünï/fïle näme.md"}
    assert run("verify", str(store.root)).exit_code == 0


def test_a_file_that_becomes_unreadable_keeps_its_stored_version(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    src = write_docs(tmp_path / "src", DOCS)
    store.ingest(src)
    (src / "keys.md").unlink()
    (src / "keys.md").symlink_to(tmp_path / "nowhere")
    result = run("ingest", str(store.root), str(src), "--no-push")
    assert_clean_failure(result, code=3)
    assert "failed: keys.md:" in result.output
    assert documents_of(store) == set(DOCS)


@pytest.mark.parametrize("source", ["missing", "afile"])
def test_ingest_from_a_source_that_is_not_a_folder(
    unchanged: KnowledgeStore, tmp_path: Path, source: str
) -> None:
    path = tmp_path / source
    if source == "afile":
        path.write_text("x")
    assert_clean_failure(run("ingest", str(unchanged.root), str(path)), code=2)


def test_ingest_into_a_store_with_an_unreachable_hub_commits_nothing(
    tmp_path: Path,
) -> None:
    hub = create_hub(tmp_path / "hub.git")
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)
    store.ingest(write_docs(tmp_path / "docs", DOCS))
    head = store.repo.head()
    hub.rename(tmp_path / "moved.git")
    write_docs(tmp_path / "docs", {"new.md": "Something new.\n"})
    result = run("ingest", str(store.root), str(tmp_path / "docs"))
    assert_clean_failure(result)
    assert "hub" in result.output
    assert store.repo.head() == head
    assert_clean_failure(run("pull", str(store.root)))


def test_store_config_refuses_keys_outside_the_store_table(tmp_path: Path) -> None:
    (tmp_path / "kb.toml").write_text('model = "fake:8"\n')
    with pytest.raises(Exception, match="store"):
        StoreConfig.load(tmp_path, env={})


# -- HTTP -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(kb: KnowledgeStore) -> Iterator[str]:
    """A real server on a free 127.0.0.1 port over the shared store; stopped at the end."""
    from kbgit.config import StoreSpec

    srv: Server = start_server(StoreSpec(name="default", path=str(kb.root)))
    try:
        yield srv.url
    finally:
        srv.stop()


def _json_4xx(resp: requests.Response, status: int | None = None) -> dict:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:200])
    if status is not None:
        assert resp.status_code == status, resp.text[:200]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    return body


JSON = {"content-type": "application/json"}
BAD_POSTS = [
    ("not-json", b"not json"),
    ("array", b"[1, 2]"),
    ("string", b'"x"'),
    ("null", b"null"),
    ("truncated", b'{"query": "x"'),
    ("latin1", b"\xff\xfe"),
    ("huge-body", b'{"query": "' + b"x" * 200_000 + b'"}'),
    ("huge-query", b'{"query": "' + b"x" * 10_000 + b'"}'),
    ("empty-query", b'{"query": ""}'),
    ("blank-query", b'{"query": "   "}'),
    ("query-number", b'{"query": 5}'),
    ("no-query", b"{}"),
    *[(f"k-{k}", b'{"query": "x", "k": %s}' % k) for k in (b'"5"', b"2.5", b"true", b"0", b"101")],
    ("k-neg", b'{"query": "x", "k": -1}'),
    ("k-huge", b'{"query": "x", "k": 1e400}'),
    ("filter-unknown", b'{"query": "x", "filter": {"author": "a"}}'),
    ("filter-string", b'{"query": "x", "filter": "a"}'),
    ("source-number", b'{"query": "x", "filter": {"source": 5}}'),
    ("source-dict", b'{"query": "x", "filter": {"source": {}}}'),
    ("source-list-numbers", b'{"query": "x", "filter": {"source": [1]}}'),
    ("st-string", b'{"query": "x", "score_threshold": "0.5"}'),
    ("st-nan", b'{"query": "x", "score_threshold": NaN}'),
    ("st-inf", b'{"query": "x", "score_threshold": Infinity}'),
    ("st-neg-inf", b'{"query": "x", "score_threshold": -Infinity}'),
    ("unknown-field", b'{"query": "x", "foo": 1}'),
    ("rev-unknown", b'{"query": "x", "rev": "nope"}'),
    ("rev-option", b'{"query": "x", "rev": "--upload-pack=x"}'),
    ("rev-path", b'{"query": "x", "rev": "HEAD:../../etc"}'),
]


@pytest.mark.parametrize("label, body", BAD_POSTS, ids=[b[0] for b in BAD_POSTS])
def test_bad_post_query_is_a_json_4xx(server: str, label: str, body: bytes) -> None:
    _json_4xx(post(server + "/query", data=body, headers=JSON), 400)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?q=",
        "?q=x&k=abc",
        "?q=x&k=0",
        "?q=x&k=1.5",
        "?q=x&score_threshold=nan",
        "?q=x&score_threshold=inf",
        "?q=x&score_threshold=abc",
        "?q=x&rev=--upload-pack%3Dx",
        "?q=x&zzz=1",
        "?q=" + "x" * 20_000,
    ],
)
def test_bad_get_query_is_a_json_400(server: str, query: str) -> None:
    _json_4xx(get(server + "/query" + query), 400)


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/nope", 404),
        ("GET", "/kb/nope/health", 404),
        ("POST", "/kb/nope/query", 404),
        ("GET", "/kb/../../etc/passwd", 404),
        ("GET", "/" + "x" * 60_000, None),
        ("PUT", "/query", 405),
        ("DELETE", "/health", 405),
        ("POST", "/health", 405),
        ("PATCH", "/metrics", 405),
        ("GET", "/admin/sync", 405),
    ],
)
def test_unknown_paths_and_methods_are_json(server: str, method: str, path: str, status) -> None:
    resp = requests.request(method, server + path, json={"query": "x"}, timeout=10)
    _json_4xx(resp, status)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("wrong"),
        auth(""),
        {"Authorization": "Basic dG9rOnRvaw=="},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer t\u00f6k".encode()},
        {"Authorization": b"Bearer \xff\xfe"},
    ],
    ids=["none", "wrong", "empty", "basic", "no-scheme", "non-ascii", "latin1"],
)
@pytest.mark.parametrize("endpoint", ["/admin/sync", "/admin/reload"])
def test_admin_with_a_missing_or_wrong_token_is_401(server: str, headers, endpoint: str) -> None:
    _json_4xx(post(server + endpoint, headers=headers), 401)


def test_server_still_healthy_after_the_bad_requests(server: str, kb: KnowledgeStore) -> None:
    resp = get(server + "/health")
    assert resp.status_code == 200
    assert resp.json()["head"]["commit"] == kb.repo.head()
    hits = post(server + "/query", json={"query": "rotate keys", "k": 1}).json()["hits"]
    assert len(hits) == 1


def test_serve_on_a_busy_port_is_an_error(unchanged: KnowledgeStore) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", str(unchanged.root), "--bind", f"127.0.0.1:{port}")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: cannot listen" in result.output


@pytest.mark.parametrize(
    "rev, dest, code",
    [([], "afile", 1), (["HEAD"], "afile", 2), (["HEAD"], "afile/sub", 1), ([], "afile/x/y", 1)],
)
def test_export_to_a_file_or_an_unwritable_path_is_an_error(
    unchanged: KnowledgeStore, tmp_path: Path, rev: list[str], dest: str, code: int
) -> None:
    (tmp_path / "afile").write_text("keep me")
    result = run("export-langchain", str(unchanged.root), *rev, str(tmp_path / dest))
    assert_clean_failure(result, code=code)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize(
    "name", ["HEAD", "@", "ORIG_HEAD", "FETCH_HEAD", "deadbeef", "a b", "../x"]
)
def test_tag_names_git_would_read_as_something_else_are_refused(
    unchanged: KnowledgeStore, name: str
) -> None:
    result = run("tag", str(unchanged.root), name, "--no-push")
    assert_clean_failure(result)
    assert "invalid tag name" in result.output
    assert unchanged.repo.run("tag", "--list") == ""


@pytest.mark.parametrize("where", ["store", "inside-store", "around-store"])
def test_ingest_of_a_folder_overlapping_the_store_is_refused(
    unchanged: KnowledgeStore, where: str
) -> None:
    source = {
        "store": unchanged.root,
        "inside-store": unchanged.root / "docs",
        "around-store": unchanged.root.parent,
    }[where]
    result = run("ingest", str(unchanged.root), str(source), "--no-push")
    assert_clean_failure(result)
    assert "store" in result.output

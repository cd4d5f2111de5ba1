"""`kbgit eval`, eval sets versioned in the store, and the hub's opt-in eval gate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main
from kbgit.errors import EvalError, HubMovedError
from kbgit.format.trailers import Trailers
from kbgit.gitrepo import GitRepo
from kbgit.hub import hooks as hub_hooks
from kbgit.retrieval.evals import MAX_EVAL_BYTES, commit_questions, parse_eval_set

from . import hostile
from .conftest import write_docs

DOCS = {
    "pool.md": "Setting max_tasks_per_child replaces each worker after that many jobs.",
    "lock.md": "Use fcntl.flock to take an advisory lock on an open file.",
    "zip.md": "The zipapp module builds executable archives from a directory.",
}
QUESTIONS = [
    {"id": "q1", "question": "what does max_tasks_per_child do", "answers": ["pool.md"]},
    {"id": "q2", "question": "how to use flock", "answers": ["lock.md"], "class": "id"},
    {"id": "q3", "question": "executable archives zipapp", "answers": ["zip.md"]},
]


def jsonl(rows: list[dict]) -> str:
    """Return rows as JSON lines."""
    return "".join(json.dumps(r) + "\n" for r in rows)


def run(*args: str) -> tuple[int, str]:
    """Run the CLI; return (exit code, output)."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture
def evalfile(tmp_path: Path) -> Path:
    """The three questions as a JSONL file."""
    path = tmp_path / "docs-evals.jsonl"
    path.write_text(jsonl(QUESTIONS))
    return path


def test_eval_prints_recall_and_mrr_per_mode(store: KnowledgeStore, tmp_path, evalfile) -> None:
    store.ingest(write_docs(tmp_path / "d", DOCS))
    code, out = run("eval", store.root, evalfile, "--json")
    assert code == 0, out
    body = json.loads(out)
    assert body["commit"] == store.repo.head() and set(body["scores"]) == {
        "dense",
        "lexical",
        "hybrid",
    }
    lex = body["scores"]["lexical"]
    assert lex["all"]["recall"] == 1.0 and lex["all"]["mrr"] == 1.0 and lex["all"]["questions"] == 3
    assert lex["id"]["questions"] == 1
    code, out = run("eval", store.root, evalfile, "--mode", "lexical", "-k", "1")
    assert code == 0 and "lexical" in out and "recall@1" in out and "dense" not in out


def test_compare_names_the_questions_a_change_broke_and_fixed(
    store: KnowledgeStore, tmp_path, evalfile
) -> None:
    docs = write_docs(tmp_path / "d", {k: v for k, v in DOCS.items() if k != "zip.md"})
    first = store.ingest(docs).commit
    write_docs(docs, {"zip.md": DOCS["zip.md"], "lock.md": "Locks are not covered here."})
    store.ingest(docs)
    code, out = run(
        "eval", store.root, evalfile, "--mode", "lexical", "-k", "1", "--compare", first, "HEAD"
    )
    assert code == 0, out
    assert "broke q2" in out and "fixed q3" in out and "q1" not in out
    assert "0.667 -> 0.667" in out


def test_an_eval_set_committed_in_the_store_is_versioned(
    store: KnowledgeStore, hub: Path, tmp_path, evalfile
) -> None:
    hub_hooks.install(hub)  # the hub verifies the commit that carries it
    store.ingest(write_docs(tmp_path / "d", DOCS))
    code, out = run("eval", store.root, evalfile, "--save", "--mode", "lexical")
    assert code == 0, out
    head = store.repo.head()
    assert GitRepo(hub).rev_parse("main") == head
    assert store.repo.read_file(head, "evals/docs-evals.jsonl") == evalfile.read_bytes()
    store.verify(head)
    code, out = run("eval", store.root, "--mode", "lexical", "--json")
    assert code == 0 and json.loads(out)["scores"]["lexical"]["all"]["questions"] == 3
    code, out = run("eval", store.root, "--rev", "HEAD~1")
    assert code == 1 and "no eval set under evals/" in out


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no questions"),
        ("{not json\n", "not JSON"),
        ('{"question": "q"}\n', "answers must be"),
        ('{"question": "", "answers": ["a"]}\n', "question must be"),
        ('{"id": "a", "question": "q", "answers": ["x"]}\n' * 2, "duplicate question id"),
    ],
)
def test_a_malformed_eval_set_is_refused_with_the_line(text: str, why: str) -> None:
    with pytest.raises(EvalError, match=why):
        parse_eval_set(text.encode(), label="e.jsonl")


def _push(store: KnowledgeStore) -> tuple[int, str]:
    proc = store.repo._exec(["push", "hub", "HEAD:refs/heads/main"])
    return proc.returncode, proc.stderr.decode()


def test_the_eval_gate_refuses_a_push_that_breaks_a_question(
    store: KnowledgeStore, hub: Path, tmp_path, evalfile
) -> None:
    hub_hooks.install(hub)
    GitRepo(hub).run("config", "kbgit.evalGate.threshold", "0.0")
    GitRepo(hub).run("config", "kbgit.evalGate.k", "1")
    docs = write_docs(tmp_path / "d", DOCS)
    store.ingest(docs)
    store.save_eval_set("docs", evalfile.read_bytes())
    good = store.repo.head()
    # a change that keeps every question answered is accepted
    write_docs(docs, {"extra.md": "Unrelated notes about gardening."})
    store.ingest(docs, push=False)
    code, err = _push(store)
    assert code == 0, err
    accepted = store.repo.head()
    assert GitRepo(hub).rev_parse("main") == accepted != good
    # removing the identifier q1 asks about is refused, naming the question
    write_docs(docs, {"pool.md": "Workers are replaced now and then."})
    store.ingest(docs, push=False)
    code, err = _push(store)
    assert code != 0
    assert "eval gate" in err and "q1" in err and "1.000" in err and "0.667" in err
    assert GitRepo(hub).rev_parse("main") == accepted


def test_the_eval_gate_is_off_unless_configured(store, hub: Path, tmp_path, evalfile) -> None:
    hub_hooks.install(hub)
    docs = write_docs(tmp_path / "d", DOCS)
    store.ingest(docs)
    store.save_eval_set("docs", evalfile.read_bytes())
    write_docs(docs, {"pool.md": "Workers are replaced now and then."})
    store.ingest(docs, push=False)
    code, err = _push(store)
    assert code == 0, err


def test_query_cli_takes_a_mode_and_names_the_retrievers(store, tmp_path) -> None:
    first = store.ingest(write_docs(tmp_path / "d", DOCS)).commit
    code, out = run("query", store.root, "max_tasks_per_child", "--mode", "lexical", "--json")
    assert code == 0, out
    hits = json.loads(out)["hits"]
    assert hits[0]["source"] == "pool.md" and hits[0]["retrievers"] == {"lexical": 1}
    code, out = run("query", store.root, "flock", "--rev", first, "-k", "1")
    assert code == 0 and "lock.md" in out and "lexical#1" in out
    for bad in (["--mode", "fuzzy"], ["--alpha", "2"], ["--depth", "0"]):
        code, out = run("query", store.root, "flock", *bad)
        assert code == 2 and "Invalid value" in out, (bad, out)


def _gate(hub: Path, **settings: str) -> None:
    hub_hooks.install(hub)
    for key, value in {"threshold": "0.0", "k": "1", **settings}.items():
        GitRepo(hub).run("config", f"kbgit.evalGate.{key}", value)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_a_model_gate_refuses_a_break_and_accepts_a_harmless_change(
    store: KnowledgeStore, hub: Path, tmp_path, evalfile, mode: str
) -> None:
    _gate(hub, mode=mode, model="fake:64")  # the model the store's commits are built with
    docs = write_docs(tmp_path / "d", DOCS)
    store.ingest(docs)
    store.save_eval_set("docs", evalfile.read_bytes())
    write_docs(docs, {"extra.md": "Unrelated notes about gardening."})
    store.ingest(docs, push=False)
    code, err = _push(store)
    assert code == 0, err
    accepted = store.repo.head()
    assert GitRepo(hub).rev_parse("main") == accepted
    (docs / "pool.md").unlink()  # q1's answer is gone: no mode can find it
    store.ingest(docs, push=False)
    code, err = _push(store)
    assert code != 0
    assert f"recall@1 ({mode}, 3 questions)" in err and "q1" in err and "0.667" in err
    assert GitRepo(hub).rev_parse("main") == accepted


def test_a_model_gate_refuses_a_commit_built_with_another_model(
    store: KnowledgeStore, hub: Path, tmp_path, evalfile
) -> None:
    _gate(hub, mode="dense", model="fake:32")
    first = store.ingest(write_docs(tmp_path / "d", DOCS)).commit
    with pytest.raises(HubMovedError, match="eval gate could not run") as err:
        store.save_eval_set("docs", evalfile.read_bytes())
    assert "embeds with fake:32" in str(err.value) and "built with fake:64" in str(err.value)
    assert GitRepo(hub).rev_parse("main") == first


def test_the_gate_scores_both_commits_with_the_pushed_eval_set(
    store: KnowledgeStore, hub: Path, tmp_path, evalfile
) -> None:
    _gate(hub)
    docs = write_docs(tmp_path / "d", DOCS)
    store.ingest(docs)
    store.save_eval_set("docs", evalfile.read_bytes())
    # a harder eval set lowers recall, but for the hub's commit as much as for the pushed
    # one (both are scored with the pushed questions): accepted, and the hub carries it
    harder = [*QUESTIONS, {"id": "q4", "question": "kubernetes operators", "answers": ["k.md"]}]
    store.save_eval_set("docs", jsonl(harder).encode())
    head = store.repo.head()
    assert GitRepo(hub).rev_parse("main") == head
    assert b"q4" in (GitRepo(hub).read_file(head, "evals/docs.jsonl") or b"")
    # a push that deletes the eval set and breaks q1 is held to the parent's set: refused
    write_docs(docs, {"pool.md": "Workers are replaced now and then."})
    store.ingest(docs, push=False)
    with store.writer.transaction() as txn:
        txn.delete("evals/docs.jsonl")
        txn.commit("drop the eval set", [], Trailers(operation="eval"))
    assert store.repo.read_file(store.repo.head(), "evals/docs.jsonl") is None
    code, err = _push(store)
    assert code != 0
    assert "4 questions" in err and "q1" in err and "0.750" in err and "0.500" in err
    assert GitRepo(hub).rev_parse("main") == head


def _commit_evals(store: KnowledgeStore, files: dict[str, bytes]) -> str:
    """Commit eval files with plain git, as a pusher would; return the commit."""
    for name, data in files.items():
        path = store.root / "evals" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    hostile.git(store.root, "add", "evals")
    hostile.git(store.root, "commit", "-q", "-m", "eval set")
    return store.repo.head() or ""


def test_a_deeply_nested_eval_line_is_refused_as_not_json() -> None:
    # json.loads raises RecursionError (not ValueError) past ~1,000 levels
    with pytest.raises(EvalError, match=r"e.jsonl:2: not JSON"):
        parse_eval_set(jsonl(QUESTIONS[:1]).encode() + b"[" * 100_000, label="e.jsonl")


def test_a_hostile_eval_set_is_refused_by_the_gate_without_a_traceback(
    store: KnowledgeStore, hub: Path, tmp_path, evalfile
) -> None:
    _gate(hub)
    store.ingest(write_docs(tmp_path / "d", DOCS))
    store.save_eval_set("docs", evalfile.read_bytes())
    good = store.repo.head()
    _commit_evals(store, {"docs.jsonl": b"[" * 200_000 + b"\n"})
    code, err = _push(store)
    assert code != 0 and "Traceback" not in err
    assert "eval gate could not run" in err and "evals/docs.jsonl:1: not JSON" in err
    assert GitRepo(hub).rev_parse("main") == good
    code, out = run("eval", store.root)
    assert code != 0 and "not JSON" in out and "Traceback" not in out


def test_an_eval_set_over_the_size_limit_is_never_read(store: KnowledgeStore, tmp_path) -> None:
    store.ingest(write_docs(tmp_path / "d", DOCS))
    line = jsonl(QUESTIONS[:1]).encode()
    big = line * (MAX_EVAL_BYTES // len(line) + 1)
    commit = _commit_evals(store, {"big.jsonl": big})
    with pytest.raises(EvalError, match=r"evals/big.jsonl: \d+ bytes, over the limit"):
        commit_questions(store.repo, commit)
    with pytest.raises(EvalError, match="over the limit"):
        parse_eval_set(big, label="big.jsonl")


def test_a_server_scores_served_eval_sets_in_one_thread_and_ends_on_the_newest(
    store: KnowledgeStore, tmp_path
) -> None:
    # each served commit started its own scorer: a large eval set (every question embedded)
    # and commits arriving faster than it is scored stacked threads without bound
    import threading

    from kbgit.serving.service import KnowledgeService

    docs = write_docs(tmp_path / "d", DOCS)
    store.ingest(docs)
    many = [
        {"id": f"q{i}", "question": f"max_tasks_per_child {i}", "answers": ["pool.md"]}
        for i in range(3000)
    ]
    store.save_eval_set("docs", jsonl(many).encode())
    commits = []
    for i in range(4):
        write_docs(docs, {f"n{i}.md": f"note {i}"})
        commits.append(store.ingest(docs).commit)
    svc = KnowledgeService("t", store.root)
    peak = 0
    for commit in commits:
        svc.reload(commit)
        peak = max(peak, sum(t.name == "kbgit-eval" for t in threading.enumerate()))
    deadline = time.monotonic() + 120
    while any(t.name == "kbgit-eval" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert peak == 1
    assert svc.eval_score is not None and svc.eval_score[0] == commits[-1]
    assert svc.eval_score[1].questions == 3000

"""Retrieval evals: question sets with the source paths that answer them, scored per mode.

An eval set is JSON lines, one question per line::

    {"id": "q1", "question": "What does gc.freeze() do?", "answers": ["library/gc.html"],
     "class": "identifier"}

``answers`` are document paths as the store names them (``class`` is optional and groups
the report). A question counts as found at k when a chunk of one of its answer documents
is among the first k hits; its reciprocal rank is 1/rank of the first such chunk within
the first 10 hits (MRR@10).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import EvalError, FormatError
from ..format.checks import EVALS_DIR
from ..format.jsonio import loads
from ..format.snapshot import Snapshot
from ..gitrepo import GitRepo
from .fusion import HybridOptions
from .lexical import LexicalIndex
from .search import search

MRR_DEPTH = 10
MAX_QUESTIONS = 10_000
#: largest eval set read (a pusher decides its size; 10,000 questions fit in far less)
MAX_EVAL_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Question:
    """One eval question and the documents that answer it."""

    id: str
    question: str
    answers: tuple[str, ...]
    cls: str = "all"


def parse_eval_set(data: bytes, *, label: str) -> list[Question]:
    """Parse and check a JSONL eval set; raise EvalError naming the bad line."""
    _check_size(label, len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{label}: not UTF-8") from exc
    out: list[Question] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(out) == MAX_QUESTIONS:
            raise EvalError(f"{label}: more than {MAX_QUESTIONS} questions")
        out.append(_question(line, f"{label}:{lineno}", len(out) + 1))
    if not out:
        raise EvalError(f"{label}: no questions")
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{label}: duplicate question id")
    return out


def _question(line: str, where: str, n: int) -> Question:
    try:
        obj = loads(line, "line")
    except FormatError as exc:  # not JSON, or nested too deep (never a RecursionError)
        raise EvalError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise EvalError(f"{where}: expected an object with question and answers")
    q, answers = obj.get("question"), obj.get("answers")
    if not isinstance(q, str) or not q.strip():
        raise EvalError(f"{where}: question must be a non-empty string")
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a for a in answers)
    ):
        raise EvalError(f"{where}: answers must be a non-empty list of source paths")
    qid, cls = obj.get("id", f"q{n}"), obj.get("class", "all")
    if not isinstance(qid, str) or not isinstance(cls, str):
        raise EvalError(f"{where}: id and class must be strings")
    return Question(qid, q, tuple(answers), cls)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Where one question's first answer chunk ranked (0: not in the hits)."""

    question: Question
    rank: int
    top: tuple[str, ...]

    def found(self, k: int) -> bool:
        """Tell whether an answer document is among the first k hits."""
        return 0 < self.rank <= k


@dataclasses.dataclass(frozen=True)
class Score:
    """Recall@k and MRR@10 of one mode over a set of outcomes."""

    mode: str
    k: int
    questions: int
    recall: float
    mrr: float

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form printed by ``kbgit eval --json``."""
        return dataclasses.asdict(self)


def run_eval(
    questions: Sequence[Question], search: Callable[[str, int], Sequence[str]], depth: int
) -> list[Outcome]:
    """Ask every question; ``search(text, n)`` returns the sources of the first n hits."""
    out = []
    for q in questions:
        sources = tuple(search(q.question, depth))
        answers = set(q.answers)
        rank = next((i for i, s in enumerate(sources, start=1) if s in answers), 0)
        out.append(Outcome(q, rank, sources[:3]))
    return out


def evaluate(
    snap: Snapshot,
    questions: Sequence[Question],
    opts: HybridOptions,
    *,
    embed: Callable[[str], np.ndarray],
    lexical: Callable[[], LexicalIndex],
) -> list[Outcome]:
    """Ask every question of ``snap`` in mode ``opts`` (MRR depth: 10 hits)."""

    def ask(text: str, n: int) -> list[str]:
        return [h.source for h in search(snap, text, n, opts, embed=embed, lexical=lexical)]

    return run_eval(questions, ask, MRR_DEPTH)


def score(outcomes: Iterable[Outcome], mode: str, k: int) -> Score:
    """Return recall@k and MRR@10 over ``outcomes``."""
    items = list(outcomes)
    n = len(items)
    found = sum(o.found(k) for o in items)
    rr = sum(1.0 / o.rank for o in items if 0 < o.rank <= MRR_DEPTH)
    return Score(mode, k, n, round(found / n, 4) if n else 0.0, round(rr / n, 4) if n else 0.0)


def by_class(outcomes: Sequence[Outcome], mode: str, k: int) -> dict[str, Score]:
    """Return the score of every question class, plus ``all``."""
    classes = sorted({o.question.cls for o in outcomes})
    out = {c: score((o for o in outcomes if o.question.cls == c), mode, k) for c in classes}
    out["all"] = score(outcomes, mode, k)
    return out


@dataclasses.dataclass(frozen=True)
class Change:
    """A question whose recall@k differs between two revisions."""

    question: Question
    before: int
    after: int

    @property
    def fixed(self) -> bool:
        """Tell whether the change fixed (rather than broke) the question."""
        return self.after > 0 and (self.before == 0 or self.after < self.before)


def compare(before: Sequence[Outcome], after: Sequence[Outcome], k: int) -> list[Change]:
    """Return the questions found at k in one run and not the other (same question set)."""
    return [
        Change(a.question, a.rank, b.rank)
        for a, b in zip(before, after, strict=True)
        if a.found(k) != b.found(k)
    ]


def eval_paths(tree: Iterable[str]) -> list[str]:
    """Return the eval sets a commit carries (``evals/*.jsonl``), sorted."""
    return sorted(p for p in tree if p.startswith(EVALS_DIR + "/") and p.endswith(".jsonl"))


def commit_questions(repo: GitRepo, commit: str) -> list[Question]:
    """Return the questions of every eval set committed under ``evals/`` (may be none)."""
    if not repo.has_path(commit, EVALS_DIR):  # most commits: no git process on a server
        return []
    tree = repo.ls_tree(commit, [EVALS_DIR])  # not the whole tree: O(evals)
    paths = eval_paths(tree)
    sizes = repo.blob_sizes(tree[p] for p in paths)
    # before anything is read: a pusher chose the sizes (the limit holds for all sets together)
    _check_size(", ".join(paths), sum(sizes[tree[p]] for p in paths))
    data = repo.read_blobs(tree[p] for p in paths)
    out: list[Question] = []
    for path in paths:
        out += parse_eval_set(data[tree[path]], label=path)
    return out


def _check_size(label: str, size: int) -> None:
    if size > MAX_EVAL_BYTES:
        raise EvalError(
            f"{label}: {size} bytes, over the limit of {MAX_EVAL_BYTES} for an eval set"
        )


def served_score(
    repo: GitRepo,
    snap: Snapshot,
    opts: HybridOptions,
    *,
    embed: Callable[[str], np.ndarray],
    lexical: Callable[[], LexicalIndex],
    k: int = 5,
) -> Score | None:
    """Return the recall@k / MRR of ``snap``'s own eval sets in mode ``opts`` (None: none)."""
    questions = commit_questions(repo, snap.commit)
    if not questions:
        return None
    return score(evaluate(snap, questions, opts, embed=embed, lexical=lexical), opts.mode, k)

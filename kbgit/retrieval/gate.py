"""The hub's opt-in eval gate: refuse a push whose recall@k falls below its parent's.

Enabled per hub with git config (``git -C hub.git config kbgit.evalGate.threshold 0.05``):

- ``kbgit.evalGate.threshold``  largest allowed drop of recall@k (0 = no drop at all);
- ``kbgit.evalGate.k``          k of recall@k (default 5);
- ``kbgit.evalGate.mode``       lexical (default), dense or hybrid;
- ``kbgit.evalGate.model``      the model a dense or hybrid gate embeds with, by name
  (the bundled one or ``fake:<dim>``), never a path read from the pushed commit; a
  commit whose ledger names another model is refused with a message saying so;
- ``kbgit.evalGate.evals``      an eval set on the hub machine; without it, the pushed
  commit's ``evals/*.jsonl`` (or its parent's, if the push removed them).

The lexical default needs no model on the hub: BM25 is built from the verified rows,
deterministic and fast, and a document change that breaks a question by name usually
shows there. Both commits are scored with the same question set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..embeddings import load_embedder
from ..errors import EvalError, GitError, KbgitError
from ..format.snapshot import Snapshot, load_snapshot
from ..gitrepo import GitRepo
from .evals import Question, commit_questions, compare, evaluate, parse_eval_set, score
from .fusion import HybridOptions
from .search import LexicalIndexes


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """A hub's eval gate settings."""

    threshold: float
    k: int = 5
    mode: str = "lexical"
    model: str | None = None
    evals: str | None = None


def _config(repo: GitRepo, key: str) -> str | None:
    try:
        value = repo.run("config", "--get", f"kbgit.evalGate.{key}").strip()
    except GitError:
        return None
    return value or None


def gate_config(repo: GitRepo) -> GateConfig | None:
    """Return the hub's gate settings, or None when the gate is off."""
    raw = _config(repo, "threshold")
    if raw is None:
        return None
    try:
        cfg = GateConfig(
            threshold=float(raw),
            k=int(_config(repo, "k") or 5),
            mode=_config(repo, "mode") or "lexical",
            model=_config(repo, "model"),
            evals=_config(repo, "evals"),
        )
    except ValueError as exc:
        raise EvalError(f"hub eval gate: bad kbgit.evalGate setting: {exc}") from exc
    HybridOptions(mode=cfg.mode)  # refuses an unknown mode
    if cfg.mode != "lexical" and not cfg.model:
        raise EvalError(f"hub eval gate: mode {cfg.mode} needs kbgit.evalGate.model")
    return cfg


def _questions(repo: GitRepo, cfg: GateConfig, commits: list[str]) -> list[Question] | None:
    if cfg.evals:
        with open(cfg.evals, "rb") as fh:
            return parse_eval_set(fh.read(), label=cfg.evals)
    for commit in commits:
        questions = commit_questions(repo, commit)
        if questions:
            return questions
    return None


def _embed(cfg: GateConfig, snap: Snapshot) -> Callable[[str], np.ndarray]:
    if cfg.mode == "lexical":
        return _no_model
    if snap.ledger.model_id != cfg.model:
        raise EvalError(
            f"hub eval gate embeds with {cfg.model}; commit {snap.commit[:12]} was built "
            f"with {snap.ledger.model_id}"
        )
    emb = load_embedder(cfg.model, threads=1)
    return lambda text: emb.embed([text])[0]


def _no_model(_text: str) -> np.ndarray:
    raise EvalError("the lexical eval gate never embeds")


def check_push(repo: GitRepo, old: str, new: str, cfg: GateConfig) -> str | None:
    """Return why ``new`` is refused (recall@k dropped too far below ``old``), or None."""
    questions = _questions(repo, cfg, [new, old])
    if not questions:
        return None
    opts = HybridOptions(mode=cfg.mode)
    lexical = LexicalIndexes()
    outcomes = []
    for commit in (old, new):
        snap = load_snapshot(repo, commit)
        outcomes.append(
            evaluate(
                snap,
                questions,
                opts,
                embed=_embed(cfg, snap),
                lexical=lambda s=snap: lexical.get(s),
            )
        )
    before, after = (score(o, cfg.mode, cfg.k).recall for o in outcomes)
    if before - after <= cfg.threshold + 1e-9:
        return None
    broke = [c for c in compare(outcomes[0], outcomes[1], cfg.k) if not c.fixed]
    names = "; ".join(f"{c.question.id} {c.question.question!r}" for c in broke[:5])
    return (
        f"eval gate: recall@{cfg.k} ({cfg.mode}, {len(questions)} questions) falls from "
        f"{before:.3f} at {old[:12]} to {after:.3f} at {new[:12]}, more than the allowed "
        f"{cfg.threshold:.3f}. Broken: {names}. Nothing was changed on the hub; fix the "
        "documents (or the eval set) and push again"
    )


def gate_refusal(repo: GitRepo, ref: str, old: str, new: str) -> str | None:
    """Run the gate for one ref update if the hub enables it; return a refusal or None."""
    try:
        cfg = gate_config(repo)
        if cfg is None:
            return None
        reason = check_push(repo, old, new, cfg)
    except (KbgitError, OSError) as exc:
        return f"{ref}: eval gate could not run: {exc}"
    return f"{ref}: {reason}" if reason else None

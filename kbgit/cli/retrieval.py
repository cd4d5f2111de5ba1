"""Retrieval commands and options: query modes (shared with ``query``) and ``kbgit eval``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import EvalError
from ..retrieval.evals import Outcome, by_class, compare, parse_eval_set
from ..retrieval.fusion import FUSIONS, MAX_DEPTH, MODES, HybridOptions
from ..store import KnowledgeStore
from .app import emit_json, main

_DEFAULT = HybridOptions()


def mode_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --fusion, --alpha, --rrf-k, --depth (how hybrid mode fuses) and --exact."""
    for opt in reversed(
        [
            click.option(
                "--fusion",
                type=click.Choice(FUSIONS),
                default=_DEFAULT.fusion,
                show_default=True,
                help="Hybrid fusion: reciprocal rank, or min-max / z-score / DBSF scaled scores.",
            ),
            click.option(
                "--alpha",
                type=click.FloatRange(0.0, 1.0),
                default=_DEFAULT.alpha,
                show_default=True,
                help="Weight of dense in hybrid mode (lexical gets 1 - alpha).",
            ),
            click.option(
                "--rrf-k",
                type=click.IntRange(1, 10_000),
                default=_DEFAULT.rrf_k,
                show_default=True,
                help="RRF constant k.",
            ),
            click.option(
                "--depth",
                type=click.IntRange(1, MAX_DEPTH),
                default=_DEFAULT.depth,
                show_default=True,
                help="Candidates each retriever contributes to a hybrid query.",
            ),
            click.option(
                "--exact",
                is_flag=True,
                help="Score every vector, even in segments with an ANN index (ann_min_vectors).",
            ),
        ]
    ):
        f = opt(f)
    return f


def options(mode: str, **kw: Any) -> HybridOptions:
    """Return the HybridOptions for a command's --mode and fusion options."""
    return HybridOptions(mode=mode, **kw)


MODE_OPTION = click.option(
    "--mode",
    type=click.Choice(MODES),
    default=_DEFAULT.mode,
    show_default=True,
    help="dense (embeddings), lexical (BM25) or hybrid (both, fused).",
)


@main.command("eval")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("evals", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--rev", default="HEAD", show_default=True, help="Evaluate this revision.")
@click.option(
    "--mode", "modes", multiple=True, type=click.Choice(MODES), help="Mode(s); default all."
)
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--compare", nargs=2, metavar="REV1 REV2", help="Questions REV2 broke or fixed.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--save", is_flag=True, help="Commit EVALS into the store as evals/<name>.jsonl.")
@mode_options
def eval_cmd(
    store: Path,
    evals: str | None,
    rev: str,
    modes: tuple[str, ...],
    k: int,
    compare: tuple[str, str] | None,
    as_json: bool,
    save: bool,
    **kw: Any,
) -> None:
    """Print recall@k and MRR@10 per mode for an eval set (JSONL questions + answer paths).

    Without EVALS, the sets committed under evals/ at the revision are used.

    Example: kbgit eval ./kb evals/docs.jsonl -k 5 --compare HEAD~1 HEAD
    """
    kb = KnowledgeStore(store)
    if save:
        if not evals:
            raise EvalError("--save needs an EVALS file")
        commit = kb.save_eval_set(Path(evals).stem, Path(evals).read_bytes())
        click.echo(f"committed {Path(evals).stem} as {commit[:12]}")
    rev_for_set = compare[1] if compare else rev
    questions = (
        parse_eval_set(Path(evals).read_bytes(), label=evals)
        if evals
        else kb.eval_sets(rev_for_set)
    )
    opts = [options(m, **kw) for m in (modes or MODES)]
    if compare:
        _compare(kb, questions, opts, k, compare, as_json)
        return
    commit, outcomes = kb.evaluate(questions, opts, rev=rev)
    scores = {m: by_class(o, m, k) for m, o in outcomes.items()}
    if as_json:
        emit_json(
            {
                "commit": commit,
                "k": k,
                "scores": {m: {c: s.to_json() for c, s in sc.items()} for m, sc in scores.items()},
            }
        )
        return
    click.echo(f"commit {commit}, {len(questions)} questions")
    click.echo(f"{'mode':8s} {'class':14s} {'n':>4s} {f'recall@{k}':>9s} {'MRR@10':>7s}")
    for mode, sc in scores.items():
        for cls, s in sc.items():
            click.echo(f"{mode:8s} {cls:14s} {s.questions:4d} {s.recall:9.3f} {s.mrr:7.3f}")


def _compare(
    kb: KnowledgeStore,
    questions: list,
    opts: list[HybridOptions],
    k: int,
    revs: tuple[str, str],
    as_json: bool,
) -> None:
    c1, before = kb.evaluate(questions, opts, rev=revs[0])
    c2, after = kb.evaluate(questions, opts, rev=revs[1])
    report = {}
    for mode in before:
        changes = compare(before[mode], after[mode], k)
        report[mode] = {
            "recall_before": _recall(before[mode], k),
            "recall_after": _recall(after[mode], k),
            "fixed": [_change(c) for c in changes if c.fixed],
            "broke": [_change(c) for c in changes if not c.fixed],
        }
    if as_json:
        emit_json({"before": c1, "after": c2, "k": k, "modes": report})
        return
    click.echo(f"{revs[0]} ({c1[:12]}) -> {revs[1]} ({c2[:12]}), recall@{k}")
    for mode, r in report.items():
        click.echo(f"{mode}: {r['recall_before']:.3f} -> {r['recall_after']:.3f}")
        for what in ("broke", "fixed"):
            for c in r[what]:
                click.echo(
                    f"  {what} {c['id']}: {c['question']} (rank {c['before']} -> {c['after']})"
                )


def _recall(outcomes: list[Outcome], k: int) -> float:
    if not outcomes:
        raise EvalError("no questions")
    return round(sum(o.found(k) for o in outcomes) / len(outcomes), 4)


def _change(c: Any) -> dict[str, Any]:
    return {
        "id": c.question.id,
        "question": c.question.question,
        "before": c.before,
        "after": c.after,
    }

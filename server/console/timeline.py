"""Console pages over history: the timeline, one commit, a diff, and rollback."""

from __future__ import annotations

from flask import Response, abort, flash, redirect, request, url_for

from kbgit.history import log as hlog
from kbgit.history.documents import document_diff
from kbgit.history.rollback import rollback as run_rollback

from ..write_api import open_store, sync_service
from .core import bp, can_write, page, require_write, service
from .text import diff_kinds

#: commits shown on the timeline
TIMELINE = 200
#: changed documents whose text diff is shown inline on a diff page
MAX_TEXT_DIFFS = 20


@bp.get("/history")
def history() -> str:
    """Show the commit timeline with counts and tags; pick two versions to diff."""
    svc = service()
    entries = hlog.log(svc.repo, "HEAD", limit=TIMELINE + 1)
    return page(
        "history.html", svc, entries=entries[:TIMELINE], more=len(entries) > TIMELINE,
        served=svc.commit, can_write=can_write(svc),
    )  # fmt: skip


@bp.get("/commit/<rev>")
def commit(rev: str) -> Response:
    """Show one commit as the diff from its first parent."""
    svc = service()
    sha = hlog.resolve(svc.repo, rev)
    parent = svc.repo.rev_parse(f"{sha}^")
    if parent is None:  # the first commit: diff against nothing shows every document added
        return redirect(url_for("console.diff", store=svc.name, b=sha))
    return redirect(url_for("console.diff", store=svc.name, a=parent, b=sha))


@bp.get("/diff")
def diff() -> str:
    """Show documents added, changed and removed from ?a= to ?b=, with text diffs."""
    svc = service()
    b = hlog.resolve(svc.repo, request.args.get("b") or "HEAD")
    a_arg = request.args.get("a")
    if a_arg:
        a = hlog.resolve(svc.repo, a_arg)
        change = hlog.diff(svc.repo, a, b)
    else:
        state = hlog.read_state(svc.repo, b)
        if state is None:
            abort(400, f"{b[:12]} is not a kbgit commit")
        a, change = "0" * 40, hlog.diff_ledgers(None, state[0])
    only = request.args.get("path")
    shown = [only] if only in change.modified else change.modified[:MAX_TEXT_DIFFS]
    textdiffs = {p: diff_kinds(document_diff(svc.repo, a, b, p)) for p in shown}
    entry = next(iter(hlog.log(svc.repo, b, limit=1)), None)
    return page(
        "diff.html", svc, a=a, b=b, change=change, textdiffs=textdiffs, entry=entry,
        max_text_diffs=MAX_TEXT_DIFFS,
    )  # fmt: skip


@bp.route("/rollback/<rev>", methods=["GET", "POST"])
def rollback(rev: str) -> Response | str:
    """Preview a rollback (dry run); on confirmation, commit it and push."""
    svc = service()
    require_write(svc)
    store = open_store(svc)
    if request.method == "GET":
        preview = run_rollback(store, rev, dry_run=True, wait=False)
        return page("rollback.html", svc, preview=preview)
    if request.form.get("confirm") != "yes" or request.form.get("target") != hlog.resolve(
        svc.repo, rev
    ):
        abort(400, "confirm the rollback on its preview page")
    result = run_rollback(store, request.form["target"], wait=False)
    sync_service(svc)
    if result.commit:
        flash(
            f"rolled back to {result.target[:12]} as commit {result.commit[:12]}"
            + (", pushed" if result.pushed else ""),
            "ok",
        )
    else:
        flash("the store already held that content: nothing to do", "ok")
    return redirect(url_for("console.history", store=svc.name))

"""History commands: log, diff, show, rollback, tag, compact, gc."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import click

from ..history import compaction
from ..history import log as history
from ..history import migrate as migrate_mod
from ..history import rollback as rollback_mod
from ..store import KnowledgeStore
from .app import emit_json, main
from .core import STORE

JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _print_diff(change: history.LedgerDiff) -> None:
    for label, paths in (("A", change.added), ("M", change.modified), ("D", change.removed)):
        for path in paths:
            click.echo(f"  {label} {path}")
    for a, b in change.renamed:
        click.echo(f"  R {a} -> {b}")


@main.command()
@STORE
@click.argument("rev", default="HEAD")
@click.option("-n", "--max-count", "limit", type=int, help="Show at most this many commits.")
@JSON
def log(store: Path, rev: str, limit: int | None, as_json: bool) -> None:
    """List commits: time, kind, documents added/updated/deleted, vectors, tags.

    Commits made with plain git are described by diffing their ledgers.

    Example: kbgit log ./kb -n 20
    """
    entries = history.log(KnowledgeStore(store).repo, rev, limit=limit)
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    for e in entries:
        tags = f" ({', '.join(e.tags)})" if e.tags else ""
        what = f"+{e.added} ~{e.updated} -{e.deleted}" + (f" >{e.renamed}" if e.renamed else "")
        vecs = "-" if e.vectors is None else f"{e.vectors} vectors"
        extra = f" -> {e.rollback_to[:12]}" if e.rollback_to else ""
        click.echo(f"{e.commit[:12]}  {_when(e.time)}  {e.kind:<8} {what:<14} {vecs}{extra}{tags}")
        click.echo(f"    {e.author}: {e.subject}")


@main.command()
@STORE
@click.argument("a")
@click.argument("b", default="HEAD")
@JSON
def diff(store: Path, a: str, b: str, as_json: bool) -> None:
    """Show documents added (A), modified (M), removed (D) and renamed (R) from A to B.

    Example: kbgit diff ./kb v1 HEAD
    """
    change = history.diff(KnowledgeStore(store).repo, a, b)
    if as_json:
        emit_json(dataclasses.asdict(change))
        return
    click.echo(
        f"{len(change.added)} added, {len(change.modified)} modified, {len(change.removed)} "
        f"removed, {len(change.renamed)} renamed, {change.unchanged} unchanged; "
        f"vectors +{change.chunks_added} -{change.chunks_removed}"
        + (" (model or chunking changed)" if change.settings_changed else "")
    )
    _print_diff(change)


@main.command()
@STORE
@click.argument("rev", default="HEAD")
@click.option("--verify", is_flag=True, help="Check every file of REV first.")
@click.option("--documents/--no-documents", default=True, help="List the documents.")
@JSON
def show(store: Path, rev: str, verify: bool, documents: bool, as_json: bool) -> None:
    """Show the store at REV: model, chunking, segments, vectors and documents.

    Example: kbgit show ./kb v1 --verify
    """
    view = history.show(KnowledgeStore(store).repo, rev, verify=verify)
    if as_json:
        emit_json(view.to_json())
        return
    tags = f" ({', '.join(view.tags)})" if view.tags else ""
    click.echo(f"commit   {view.commit}{tags}  {_when(view.time)}")
    click.echo(f"subject  {view.subject}")
    click.echo(f"model    {view.model_id} ({view.dim}-d), chunking {view.chunking}")
    click.echo(
        f"content  {len(view.documents)} documents, {view.vectors} vectors in "
        f"{len(view.segments)} segments (generation {view.generation}, format {view.format})"
        + (", verified" if view.verified else "")
    )
    for seg in view.segments:
        click.echo(f"  {seg['name']}: {seg['vectors']} vectors, {seg['deleted']} tombstoned")
    if documents:
        for path, doc in view.documents.items():
            click.echo(f"  {path}  {doc['chunks']} chunks  {doc['sha256'][:12]}")


@main.command()
@STORE
@click.argument("rev")
@click.option("--dry-run", is_flag=True, help="Show what would change; commit nothing.")
@click.option("--no-push", is_flag=True, help="Commit locally; push with the next write.")
@click.option("--linear", is_flag=True, help="One parent only (do not record REV as parent 2).")
@JSON
def rollback(
    store: Path, rev: str, dry_run: bool, no_push: bool, linear: bool, as_json: bool
) -> None:
    """Restore the store of REV (commit or tag) as a new forward commit, and push it.

    REV is verified first; standbys fast-forward to the new commit. Rolling back a
    rollback works the same way.

    Example: kbgit rollback ./kb v1 --dry-run
    """
    res = rollback_mod.rollback(
        KnowledgeStore(store), rev, dry_run=dry_run, push=not no_push, linear=linear
    )
    if as_json:
        emit_json(dataclasses.asdict(res))
        return
    c = res.change
    for warning in res.warnings:
        click.echo(f"warning: {warning}", err=True)
    if res.noop:
        click.echo(f"HEAD already holds the store of {rev} ({res.target[:12]}): no commit")
        return
    verb = "would restore" if dry_run else "restored"
    click.echo(
        f"{verb} {res.target[:12]}: {len(c.added)} added, {len(c.modified)} modified, "
        f"{len(c.removed)} removed, {len(c.renamed)} renamed; {res.vectors} vectors"
    )
    _print_diff(c)
    if res.commit:
        click.echo(f"commit {res.commit[:12]}" + (", pushed" if res.pushed else ""))


@main.command()
@STORE
@click.argument("name")
@click.argument("rev", default="HEAD")
@click.option("-m", "--message", help="Tag message (default: a summary of the store).")
@click.option("--no-push", is_flag=True, help="Create the tag locally only.")
def tag(store: Path, name: str, rev: str, message: str | None, no_push: bool) -> None:
    """Create an annotated tag NAME on a verified REV and push it to the hub.

    Tags are rollback points: kbgit rollback ./kb NAME.

    Example: kbgit tag ./kb before-migration
    """
    res = rollback_mod.tag(KnowledgeStore(store), name, rev, message=message, push=not no_push)
    click.echo(f"tagged {res.commit[:12]} as {res.name}" + (", pushed" if res.pushed else ""))


@main.command()
@STORE
@click.option("--force", is_flag=True, help="Rewrite even a store that is already compact.")
@click.option("--dry-run", is_flag=True, help="Show what would change; commit nothing.")
@click.option("--no-push", is_flag=True, help="Commit locally; push with the next write.")
@click.option(
    "--tiered",
    is_flag=True,
    help="Merge only runs of 4+ segments of one size tier (large stores; see docs/history.md).",
)
@JSON
def compact(
    store: Path, force: bool, dry_run: bool, no_push: bool, tiered: bool, as_json: bool
) -> None:
    """Merge all segments into one and drop tombstoned vectors, as one forward commit.

    Search results are unchanged; the hub grows by one copy of the live index (with
    --tiered, by the merged segments only).

    Example: kbgit compact ./kb --tiered
    """
    res = compaction.compact(
        KnowledgeStore(store), force=force, dry_run=dry_run, push=not no_push, tiered=tiered
    )
    if as_json:
        emit_json(dataclasses.asdict(res))
        return
    if res.noop and tiered:
        click.echo(f"no size tier is full ({res.segments_before} segments): no commit")
        return
    if res.noop:
        click.echo(f"already compact ({res.segments_before} segment, no tombstones): no commit")
        return
    click.echo(
        f"{'would merge' if dry_run else 'merged'} {res.segments_before} segments "
        f"({res.tombstone_files_before} tombstone files) into {res.segments_after}; "
        f"{res.vectors} vectors kept, {res.vectors_dropped} dropped; index "
        f"{_mb(res.index_bytes_before)} -> {_mb(res.index_bytes_after)}"
    )
    if res.commit:
        click.echo(f"commit {res.commit[:12]}" + (", pushed" if res.pushed else ""))


@main.command()
@STORE
@click.option("--dry-run", is_flag=True, help="Show what would change; commit nothing.")
@click.option("--no-push", is_flag=True, help="Commit locally; push with the next write.")
@JSON
def migrate(store: Path, dry_run: bool, no_push: bool, as_json: bool) -> None:
    """Upgrade the store to the current format as one forward commit, verified and pushed.

    Upgrade kbgit on the hub and every standby first: a release that cannot read the
    new format refuses the commit and keeps serving the last one it can read.

    Example: kbgit migrate ./kb
    """
    res = migrate_mod.migrate(KnowledgeStore(store), dry_run=dry_run, push=not no_push)
    if as_json:
        emit_json({**dataclasses.asdict(res), "noop": res.noop})
        return
    if res.noop:
        click.echo(f"already format {res.format_after}: no commit")
        return
    click.echo(
        f"{'would migrate' if dry_run else 'migrated'} format {res.format_before} -> "
        f"{res.format_after}: {res.documents} documents in {res.ledger_files - 1} ledger shards"
    )
    if res.commit:
        click.echo(f"commit {res.commit[:12]}" + (", pushed" if res.pushed else ""))


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--hub", "of_hub", is_flag=True, help="Collect the hub of the store at PATH.")
@JSON
def gc(path: Path, of_hub: bool, as_json: bool) -> None:
    """Pack the objects of a store or bare hub with git gc (safe while in use).

    Example: kbgit gc /srv/kb-hub.git    or    kbgit gc ./kb --hub
    """
    if of_hub:
        hub = KnowledgeStore(path).config.hub
        if not hub or not Path(hub).is_dir():
            raise click.UsageError(f"the hub of {path} is not a local directory: {hub!r}")
        path = Path(hub)
    res = compaction.gc(path)
    if as_json:
        emit_json(dataclasses.asdict(res))
        return
    click.echo(f"{res.path}: objects {_mb(res.bytes_before)} -> {_mb(res.bytes_after)}")

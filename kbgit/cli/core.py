"""Core commands: hub create, init, ingest, status, query, verify, repair, pull."""

from __future__ import annotations

import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Any

import click

from ..backends import BACKENDS
from ..config import (
    DEFAULT_BACKEND,
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MODEL,
    StoreConfig,
)
from ..errors import IntegrityError
from ..gitrepo import create_hub
from ..store import KnowledgeStore
from .app import EXIT_INTEGRITY, EXIT_PARTIAL, emit_json, main
from .progress import progress_reporter
from .retrieval import MODE_OPTION, mode_options, options

STORE = click.argument("store", type=click.Path(file_okay=False, path_type=Path))


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@main.group()
def hub() -> None:
    """Manage hub repositories (bare git repos that primaries push to)."""


@hub.command("create")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--branch", default="main", show_default=True, help="The hub's initial branch (its HEAD)."
)
def hub_create(path: Path, branch: str) -> None:
    """Create a bare hub that refuses non-fast-forward pushes and branch deletion.

    Example: kbgit hub create /srv/kb-hub.git
    """
    create_hub(path, branch)
    click.echo(f"created hub {path} (receive.denyNonFastForwards on)")


@main.command()
@STORE
@click.option("--hub", "hub_url", default="", help="Hub repo (path or URL) every ingest pushes to.")
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Embedding model; 'fake:<dim>' for tests.",
)
@click.option(
    "--chunk-size",
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Chunk length in model tokens.",
)
@click.option(
    "--chunk-overlap",
    default=DEFAULT_CHUNK_OVERLAP,
    show_default=True,
    help="Tokens shared by neighbouring chunks.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="How the model runs. Default: the backend the hub's history records; for a new "
    f"store {DEFAULT_BACKEND} with {DEFAULT_MODEL}, torch with any other model.",
)
def init(
    store: Path, hub_url: str, model: str, chunk_size: int, chunk_overlap: int, backend: str | None
) -> None:
    """Create a working store (clones the hub's history if it has any).

    Example: kbgit init ./kb --hub /srv/kb-hub.git --backend openvino-int8
    """
    cfg = StoreConfig(
        model=model,
        backend=backend or "",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        hub=hub_url,
    )
    kb = KnowledgeStore.init(store, hub=hub_url, config=cfg)
    head = kb.repo.head()
    click.echo(
        f"initialized {store} (settings in {store / 'kb.toml'})"
        + (f", at hub commit {head[:12]}" if head else "")
    )


@main.command()
@STORE
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--keep-missing",
    is_flag=True,
    help="Keep documents absent from SOURCE (like LangChain cleanup='incremental').",
)
@click.option("--no-wait", is_flag=True, help="Fail at once if another ingest holds the lock.")
@click.option("--no-push", is_flag=True, help="Commit locally; push with the next ingest.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars; default: bars on a terminal, a log line every 10 s otherwise.",
)
def ingest(
    store: Path,
    source: Path,
    keep_missing: bool,
    no_wait: bool,
    no_push: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Ingest a folder of documents as one commit, and push it to the hub.

    Unchanged files (by sha256) are skipped, edited ones replaced, renamed ones moved
    without re-embedding, and files gone from SOURCE removed. Exit code 3 when some
    files could not be read (they are listed; everything else is committed).

    Example: kbgit ingest ./kb ./my-docs
    """
    kb = KnowledgeStore(store)
    bars = progress_reporter(progress)
    try:
        result = kb.ingest(
            source,
            keep_missing=keep_missing,
            wait=not no_wait,
            push=not no_push,
            progress=bars,
            on_wait=lambda: click.echo("waiting for another ingest to finish...", err=True),
        )
    finally:
        if bars is not None:
            bars.close()
    if as_json:
        emit_json(dataclasses.asdict(result))
    else:
        click.echo(
            f"added {len(result.added)}, updated {len(result.updated)}, "
            f"skipped {result.skipped}, deleted {len(result.deleted)}, "
            f"renamed {len(result.renamed)}"
            + (f", failed {len(result.failed)}" if result.failed else "")
        )
        if result.reembedded:
            click.echo("model or chunking changed: every document was re-embedded")
        if result.commit:
            click.echo(
                f"commit {result.commit[:12]}: +{result.chunks_added} "
                f"-{result.chunks_deleted} vectors" + (", pushed" if result.pushed else "")
            )
        else:
            click.echo(
                "nothing changed: no commit" + (", pushed pending commits" if result.pushed else "")
            )
        for f in result.failed:
            click.echo(f"failed: {f.path}: {f.reason}", err=True)
    if result.failed:
        sys.exit(EXIT_PARTIAL)


@main.command()
@STORE
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder to compare with: shows what an ingest of it would change.",
)
@click.option("--no-fetch", is_flag=True, help="Do not contact the hub.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(store: Path, source: Path | None, no_fetch: bool, as_json: bool) -> None:
    """Show HEAD, contents, position against the hub and pending changes.

    Example: kbgit status ./kb --source ./my-docs
    """
    st = KnowledgeStore(store).status(source, fetch=not no_fetch)
    if as_json:
        emit_json(dataclasses.asdict(st))
        return
    click.echo(f"store    {st.root}")
    click.echo(f"HEAD     {st.head or '(no commits)'}  {_when(st.head_time)}")
    click.echo(
        f"content  {st.documents} documents, {st.vectors} vectors, {st.segments} segments, "
        f"{st.tombstones} tombstone files; model {st.model_id or '-'}"
    )
    if st.hub:
        click.echo(
            f"hub      {st.hub}: {st.ahead} ahead, {st.behind} behind"
            + ("" if st.hub_head else " (hub is empty)")
        )
    if st.dirty:
        click.echo("repair   working tree differs from HEAD (interrupted write): run kbgit repair")
    if st.reembed:
        click.echo(f"settings the next ingest re-embeds all {st.vectors} chunks: {st.reembed}")
    if st.plan is not None:
        p = st.plan
        click.echo(
            f"pending  {len(p.added)} to add, {len(p.updated)} to update, "
            f"{len(p.deleted)} to delete, {len(p.renamed)} renamed, {len(p.unchanged)} unchanged"
            + (" (model/backend/chunking changed: full re-embed)" if p.reembed_all else "")
        )
        for label, paths in (("A", p.added), ("M", p.updated), ("D", p.deleted)):
            for path in paths:
                click.echo(f"  {label} {path}")
        for a, b in p.renamed:
            click.echo(f"  R {a} -> {b}")


@main.command()
@STORE
@click.argument("text")
@click.option("-k", "k", default=5, show_default=True, help="Number of chunks to return.")
@click.option("--rev", default="HEAD", show_default=True, help="Answer from this revision.")
@click.option("--source", "sources", multiple=True, help="Only documents under this path prefix.")
@click.option("--score-threshold", type=float, help="Drop hits scoring below this.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@MODE_OPTION
@mode_options
def query(
    store: Path,
    text: str,
    k: int,
    rev: str,
    sources: tuple[str, ...],
    score_threshold: float | None,
    as_json: bool,
    mode: str,
    **kw: Any,
) -> None:
    """Print the chunks that best answer TEXT: score, source, retrievers' ranks, text, commit.

    Example: kbgit query ./kb "what does --no-wait do" -k 5 --mode hybrid
    """
    res = KnowledgeStore(store).query(
        text,
        k,
        rev=rev,
        source=list(sources) or None,
        score_threshold=score_threshold,
        options=options(mode, **kw),
    )
    if as_json:
        emit_json({"commit": res.commit, "hits": [h.to_json() for h in res.hits]})
        return
    click.echo(f"commit {res.commit}")
    for n, hit in enumerate(res.hits, start=1):
        where = hit.source + (f" p.{hit.meta['page']}" if "page" in hit.meta else "")
        found = " ".join(f"{r}#{rank}" for r, rank in getattr(hit, "retrievers", {}).items())
        click.echo(f"\n{n}. {hit.score:.4f}  {where}  [{hit.chunk_id[:12]}]  {found}")
        click.echo("   " + hit.text.strip().replace("\n", "\n   "))
    if not res.hits:
        click.echo("no hits")


@main.command()
@STORE
@click.argument("rev", default="HEAD")
def verify(store: Path, rev: str) -> None:
    """Check a commit: every checksum, ledger vs manifest vs vectors vs tombstones vs docs.

    Exit code 0 only when everything agrees; 4 names the first mismatch. With
    allowed_signers in kb.toml it also requires, and names, the commit's signer.

    Example: kbgit verify ./kb HEAD~3
    """
    kb = KnowledgeStore(store)
    try:
        snap = kb.verify(rev)
        sig = kb.signature(rev)
    except IntegrityError as exc:
        click.secho(f"FAILED {rev}: {exc}", fg="red", err=True)
        sys.exit(EXIT_INTEGRITY)
    click.echo(
        f"ok {snap.commit[:12]}: {len(snap.ledger.documents)} documents, "
        f"{snap.vectors} live vectors in {len(snap.manifest.segments)} segments, "
        f"model {snap.ledger.model_id} ({snap.ledger.dim}-d); "
        + (sig.describe() if sig else "signature not checked (no allowed_signers)")
    )


@main.command()
@STORE
def repair(store: Path) -> None:
    """Reset a working tree left half-written by a killed ingest back to HEAD.

    Ingest runs this itself; it is here for operators. Example: kbgit repair ./kb
    """
    kb = KnowledgeStore(store)
    with kb.lock(wait=False):
        fixed = kb.repair()
    click.echo("repaired: working tree reset to HEAD" if fixed else "nothing to repair")


@main.command()
@STORE
def pull(store: Path) -> None:
    """Fast-forward the store to the hub (after another writer pushed), verifying it.

    Example: kbgit pull ./kb
    """
    head = KnowledgeStore(store).pull()
    click.echo(f"at {head[:12]}" if head else "hub is empty")

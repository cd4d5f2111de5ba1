"""LangChain migration commands: import-langchain, export-langchain."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, DEFAULT_MODEL, StoreConfig
from ..store import KnowledgeStore
from .app import emit_json, main
from .core import STORE
from .progress import progress_reporter

JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@main.command("import-langchain")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@STORE
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow reading index.pkl (a Python pickle can run code: only for folders you trust).",
)
@click.option(
    "--source-model",
    help="Embedding model that wrote SOURCE (default: the Chatchat folder name "
    "vector_store/<model>, else all-MiniLM-L6-v2). Vectors are kept only if it is --model.",
)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model of the new store.")
@click.option("--hub", "hub_url", default="", help="New (empty) hub the import is pushed to.")
@click.option(
    "--chunk-size",
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="For later folder ingests (imported documents keep their chunks).",
)
@click.option(
    "--chunk-overlap",
    default=DEFAULT_CHUNK_OVERLAP,
    show_default=True,
    help="Tokens shared by neighbouring chunks (later folder ingests).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars; default: bars on a terminal, a log line every 10 s otherwise.",
)
@JSON
def import_lc(
    source: Path,
    store: Path,
    trust_pickle: bool,
    source_model: str | None,
    model: str,
    hub_url: str,
    chunk_size: int,
    chunk_overlap: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Convert a LangChain FAISS save_local folder into a new kbgit store.

    SOURCE is a folder with index.faiss + index.pkl, or a Langchain-Chatchat knowledge
    base (its vector_store/<model>/ is found). index.pkl is a pickle: it is read only
    with --trust-pickle, through a loader that admits only LangChain docstore classes.
    The store's history starts at the import; it holds no pickle.

    \b
    Example:
      kbgit import-langchain ~/chatchat/knowledge_base/ops ./kb --trust-pickle
    """
    cfg = StoreConfig(model=model, chunk_size=chunk_size, chunk_overlap=chunk_overlap, hub=hub_url)
    bars = progress_reporter(progress)
    try:
        from ..langchain.interop import import_langchain

        res = import_langchain(
            source,
            store,
            trust_pickle=trust_pickle,
            source_model=source_model,
            config=cfg,
            hub=hub_url,
            progress=bars,
        )
    finally:
        if bars is not None:
            bars.close()
    if as_json:
        emit_json(dataclasses.asdict(res))
        return
    how = "vectors kept" if res.kept_vectors else f"re-embedded with {res.model_id}"
    click.echo(f"imported {res.documents} documents into {res.store} ({how})")
    if res.commit:
        click.echo(f"commit {res.commit[:12]}" + (", pushed" if res.pushed else ""))
    if res.source_metric == "l2":
        click.echo("source index used L2 distance; kbgit scores are cosine similarity")


@main.command("export-langchain")
@STORE
@click.argument("rev", metavar="[REV]")
@click.argument("dest", required=False, metavar="DEST", type=click.Path(file_okay=False))
@click.option(
    "--metric",
    type=click.Choice(("ip", "l2")),  # kbgit.langchain.interop.METRICS (imported lazily: slow)
    default="ip",
    show_default=True,
    help="FAISS index metric: ip (scores = cosine) or l2 (same ranking).",
)
@JSON
def export_lc(store: Path, rev: str, dest: str | None, metric: str, as_json: bool) -> None:
    """Write a revision as a folder that LangChain's FAISS.load_local opens.

    The folder gets index.faiss + index.pkl (written by langchain-community's FAISS)
    and kbgit-export.json (commit, model, how to load it).

    Example: kbgit export-langchain ./kb v1.2 ./faiss-v1.2
    """
    if dest is None:  # click cannot put an optional argument first: REV was DEST
        rev, dest = "HEAD", rev
    from ..langchain.interop import export_langchain

    res = export_langchain(KnowledgeStore(store), dest, rev, metric=metric)
    if as_json:
        emit_json(dataclasses.asdict(res))
        return
    click.echo(f"exported {res.documents} documents of {res.commit[:12]} to {res.path}")
    click.echo(
        f"load with embeddings of {res.model_id}: FAISS.load_local({str(res.path)!r}, embeddings, "
        f'allow_dangerous_deserialization=True, distance_strategy="{res.distance_strategy}")'
    )

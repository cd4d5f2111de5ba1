"""Serving commands: serve, standby, hooks install, hook (run by the hub's shims)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from ..config import DEFAULT_STORE_NAME, ServeConfig, StoreSpec
from ..errors import ConfigError
from .app import main

_OPTIONS = [
    click.option("--bind", help="HOST:PORT to listen on [default: 127.0.0.1:8000]."),
    click.option("--token", help="Bearer token for /admin/* (or KBGIT_TOKEN)."),
    click.option(
        "--model",
        "model_dirs",
        multiple=True,
        type=click.Path(exists=True, file_okay=False),
        help="Local model directory commits may name as local:<its name> (repeat; KBGIT_MODELS).",
    ),
    click.option(
        "--interval",
        type=float,
        help="Seconds between syncs; a primary checks HEAD at least every 1 s [default: 5].",
    ),
    click.option("--threads", type=int, help="HTTP worker threads [default: 8]."),
    click.option(
        "--allowed-signers",
        help="Serve only commits signed by a key in this file (see docs/security.md).",
    ),
    click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="TOML file with a [serve] table (see docs/serving.md).",
    ),
    click.option("--name", default=DEFAULT_STORE_NAME, show_default=True, help="Store name."),
]


def _serve_options(fn):  # noqa: ANN001,ANN202 - a click decorator
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop like Ctrl-C (followers stop, sockets close)


def _run(config_file: Path | None, spec: StoreSpec | None, **overrides: object) -> None:
    """Load the config, then serve until SIGINT/SIGTERM."""
    from server.run import Server  # Flask and waitress load only for these commands

    extra: dict[str, object] = {"stores": (spec,)} if spec is not None else {}
    model_dirs = overrides.pop("model_dirs", ())
    if model_dirs:
        extra["models"] = os.pathsep.join(str(d) for d in model_dirs)  # type: ignore[union-attr]
    config = ServeConfig.load(config_file, **overrides, **extra)
    if not config.stores:
        raise ConfigError("no store to serve", hint="name one, or add [serve.stores.<name>]")
    server = Server(config)
    signal.signal(signal.SIGTERM, _interrupt)
    names = ", ".join(f"{s.name} ({s.role})" for s in config.stores)
    click.echo(f"kbgit serving {names} on http://{config.bind}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("kbgit: stopped", err=True)


@main.command()
@click.argument("store", required=False, type=click.Path(file_okay=False, path_type=Path))
@_serve_options
def serve(store: Path | None, config_file: Path | None, name: str, **opts: object) -> None:
    """Serve a store over HTTP; reload it after each ingest (it watches HEAD).

    Without STORE, serves the [serve.stores.<name>] tables of --config (a STORE replaces
    them). Endpoints: /query, /health, /ready, /metrics, /kb, /admin/sync, /admin/reload,
    /documents (upload, delete, list: the write API) and the web console at /ui/ (and
    /kb/<name>/query, health, ready, documents, admin/... for each store).

    Example: kbgit serve ./kb --bind 127.0.0.1:8001
    """
    spec = StoreSpec(name, str(store)) if store is not None else None
    _run(config_file, spec, **opts)


@main.command()
@click.argument("hub")
@click.argument("replica", type=click.Path(file_okay=False, path_type=Path))
@_serve_options
@click.option("--branch", default="main", show_default=True, help="Hub branch to follow.")
def standby(
    hub: str, replica: Path, config_file: Path | None, name: str, branch: str, **opts: object
) -> None:
    """Follow HUB in REPLICA (cloned if absent) and serve it: verified, hot-swapped.

    Fetches every --interval seconds or when woken by POST /admin/sync (the hub's
    post-receive hook); fast-forwards only; refuses commits that fail verification.

    Example: kbgit standby /srv/kb-hub.git ./replica --bind 127.0.0.1:8002 --interval 5
    """
    _run(config_file, StoreSpec(name, str(replica), hub=hub, branch=branch), **opts)


@main.group()
def hooks() -> None:
    """Manage the hub's git hooks (verify pushes, notify standbys) and chained wake-ups."""


@hooks.command("install")
@click.argument("hub", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--notify", multiple=True, help="Standby base URL to wake after a push (repeat).")
@click.option("--token", envvar="KBGIT_TOKEN", help="Bearer token of the standbys' /admin/sync.")
@click.option("--python", default=sys.executable, show_default=True, help="Python running kbgit.")
@click.option("--force", is_flag=True, help="Replace hooks not written by kbgit.")
@click.option(
    "--allowed-signers",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Accept only commits signed by a key in this file (see docs/security.md).",
)
def hooks_install(
    hub: Path,
    notify: tuple[str, ...],
    token: str | None,
    python: str,
    force: bool,
    allowed_signers: Path | None,
) -> None:
    """Install pre-receive (verify) and post-receive (notify) hooks in a bare hub.

    Example: kbgit hooks install /srv/kb-hub.git --notify http://127.0.0.1:8002
    """
    from ..hub import hooks as hub_hooks

    paths = hub_hooks.install(
        hub,
        notify=notify,
        token=token,
        python=python,
        force=force,
        allowed_signers=allowed_signers,
    )
    for path in paths:
        click.echo(f"installed {path}")
    click.echo(f"standbys notified after each push: {', '.join(notify) or '(none)'}")


@hooks.command("chain")
@click.argument("replica", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--notify", multiple=True, help="Next-tier standby URL to wake (repeat).")
@click.option("--token", envvar="KBGIT_TOKEN", help="Bearer token of their /admin/sync.")
def hooks_chain(replica: Path, notify: tuple[str, ...], token: str | None) -> None:
    """Wake the standbys that follow REPLICA after each commit its standby serves.

    For chained replication (a standby whose hub is another standby's replica): the
    standby serving REPLICA POSTs /admin/sync to each --notify URL after every swap,
    as a hub's post-receive hook does. Without --notify, it wakes nobody.

    Example: kbgit hooks chain ./tier1-replica --notify http://10.0.0.7:8003
    """
    from ..hub import hooks as hub_hooks

    hub_hooks.install_chain(replica, notify=notify, token=token)
    click.echo(f"standbys woken after each new commit: {', '.join(notify) or '(none)'}")


@main.command("hook")
@click.argument("name", type=click.Choice(["pre-receive", "post-receive"]))
def hook(name: str) -> None:
    """Run a hub hook (called by the shims `kbgit hooks install` writes; reads stdin).

    Example: echo "$OLD $NEW refs/heads/main" | kbgit hook pre-receive  (in the hub)
    """
    import os

    from ..hub import hooks as hub_hooks

    text = sys.stdin.read()
    if name == "post-receive":
        hub_hooks.run_post_receive(text, os.environ)
        return
    sys.exit(hub_hooks.run_pre_receive(text))

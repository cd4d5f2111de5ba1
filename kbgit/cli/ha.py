"""High availability commands: promote, rejoin, nginx-config."""

from __future__ import annotations

from pathlib import Path

import click

from .app import emit_json, main


@main.command()
@click.argument("replica", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", help="Model directory, if the ledger names a local model.")
@click.option("--author", help="Author of the new primary's commits ('Name <email>').")
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SSH key this node signs its commits with (its public key must be allowed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def promote(
    replica: Path, model: str | None, author: str | None, signing_key: Path | None, as_json: bool
) -> None:
    """Turn a standby's REPLICA into the writer (it can ingest and push to the hub).

    Stop the standby process first. Catches up with the hub if it can, verifies HEAD,
    writes kb.toml (hub, model and chunking from the ledger: nothing is re-embedded), and
    records this store as the writer on the hub (refs/kbgit/writer, next epoch): the old
    primary is fenced. On a working store that is not the writer, takes the role over.

    Example: kbgit promote /var/lib/kbgit/replica
    """
    from ..serving.failover import promote as do_promote

    res = do_promote(replica, model=model, author=author, signing_key=signing_key)
    if as_json:
        emit_json(res.__dict__)
        return
    if not res.changed:
        click.echo(f"{res.root} is already a primary (HEAD {res.commit[:12]}, hub {res.hub})")
        return
    click.echo(f"promoted {res.root} at {res.commit[:12]} (model {res.model}, hub {res.hub})")
    if res.caught_up:
        click.echo(f"caught up {res.caught_up} commit(s) from the hub first")
    if res.epoch is not None:
        pending = " (pending: the first ingest publishes it)" if res.claim_pending else ""
        click.echo(f"writer epoch {res.epoch} recorded in the hub's refs/kbgit/writer{pending}")
    if not res.hub_reachable:
        click.echo("warning: the hub is unreachable; ingest will refuse until it is back")
    click.echo("next:")
    click.echo(f"  1. serve it as the primary:  kbgit serve {res.root} --bind HOST:PORT")
    click.echo("  2. point nginx's primary (non-backup) server at that address; reload nginx")
    click.echo(f"  3. ingest on it:             kbgit ingest {res.root} DOCS")
    click.echo(f"  the old primary, when back:  kbgit rejoin OLD && kbgit standby {res.hub} OLD")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rejoin(store: Path, as_json: bool) -> None:
    """Make an old primary STORE a standby of the hub (after a standby was promoted).

    Commits the hub never received are kept on a branch kbgit/orphaned-<time>; the
    store is reset to the hub's verified head. Stop its server first.

    Example: kbgit rejoin /var/lib/kbgit/kb && kbgit standby /srv/kb-hub.git /var/lib/kbgit/kb
    """
    from ..serving.failover import rejoin as do_rejoin

    res = do_rejoin(store)
    if as_json:
        emit_json(res.__dict__)
        return
    click.echo(f"{res.root} now sits on the hub's {res.commit[:12]}")
    if res.orphaned_branch:
        click.echo(
            f"kept {res.orphaned_commits} commit(s) the hub never received on branch "
            f"{res.orphaned_branch}"
        )
        click.echo(
            f"  see them: git -C {res.root} log --stat {res.commit[:12]}..{res.orphaned_branch}"
        )
        click.echo("  to keep their documents, ingest them again on the new primary")
    click.echo(f"next: kbgit standby {res.hub} {res.root} --bind HOST:PORT")


@main.command("nginx-config")
@click.option("--primary", default="127.0.0.1:8001", show_default=True, help="Primary HOST:PORT.")
@click.option("--standby", default="127.0.0.1:8002", show_default=True, help="Standby HOST:PORT.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="nginx HOST:PORT.")
@click.option(
    "--standalone",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write DIR/nginx.conf for `nginx -p DIR -c DIR/nginx.conf` (pid, logs, temp in DIR).",
)
def nginx_config(primary: str, standby: str, listen: str, standalone: Path | None) -> None:
    """Print deploy/nginx/kbgit.conf with your addresses (or write a standalone config).

    Example: kbgit nginx-config --primary 10.0.0.1:8000 --standby 10.0.0.2:8000 > kbgit.conf
    """
    from ..serving.nginx import render_site, shipped_site, write_standalone

    if standalone is None:
        text = render_site(shipped_site(), primary=primary, standby=standby, listen=listen)
        click.echo(text, nl=False)
        return
    conf = write_standalone(standalone, primary=primary, standby=standby, listen=listen)
    click.echo(f"wrote {conf}")
    click.echo(f"run: nginx -p {standalone} -c {conf}")

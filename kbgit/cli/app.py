"""The ``kbgit`` command group, its error handling, logging setup and JSON output.

Exit codes: 0 success; 1 an error (message and hint on stderr); 2 bad usage;
3 an ingest that committed but could not read some files; 4 verification failed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import click

from ..errors import IntegrityError, KbgitError
from ..gitrepo import redact

EXIT_ERROR = 1
EXIT_PARTIAL = 3
EXIT_INTEGRITY = 4


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for Loki/ELK."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, json_lines: bool) -> None:
    """Configure the root logger for a CLI process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("sentence_transformers", "transformers", "urllib3", "waitress.queue"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # progress lines (ingest without a terminal) show unless --log-level error asks for quiet
    progress = logging.INFO if root.level < logging.ERROR else root.level
    logging.getLogger("kbgit.progress").setLevel(progress)


class KbgitGroup(click.Group):
    """A group that turns KbgitError into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report kbgit errors without a traceback."""
        try:
            return super().invoke(ctx)
        except KbgitError as exc:
            click.secho(f"error: {redact(str(exc))}", fg="red", err=True)
            if exc.hint:
                click.echo(f"hint: {redact(exc.hint)}", err=True)
            ctx.exit(EXIT_INTEGRITY if isinstance(exc, IntegrityError) else EXIT_ERROR)


@click.group(cls=KbgitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kbgit")
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity.",
)
@click.option("--log-json", is_flag=True, help="Log JSON lines (for Loki/ELK).")
def main(log_level: str, log_json: bool) -> None:
    """kbgit: a git-backed RAG knowledge store with hot-standby replication.

    Every ingest is one git commit (ledger, documents, FAISS segments) pushed to a
    bare hub; standbys fetch, verify and hot-swap it. Run `kbgit COMMAND --help`.
    """
    setup_logging(log_level, log_json)


def emit_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))

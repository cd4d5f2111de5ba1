"""Ingest progress on stderr: bars on a terminal, periodic log lines everywhere else.

A cron job, CI or systemd has no terminal: instead of minutes of silence it gets one log
record when a stage starts, one every PROGRESS_EVERY seconds, and one when it ends (JSON
lines with ``--log-json``, like every other log record).
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

#: seconds between two progress lines of one stage when stderr is not a terminal
PROGRESS_EVERY = 10.0
LABELS = {"hash": "hashing", "load": "reading", "embed": "embedding"}
#: the logger of progress lines; `kbgit` shows it at INFO whatever --log-level says
logger = logging.getLogger("kbgit.progress")


def _unit(stage: str) -> str:
    return "chunks" if stage == "embed" else "files"


class ProgressBars:
    """tqdm progress bars, one per ingest stage, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Move the stage's bar to ``done`` of ``total``."""
        if not self.enabled:
            return
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(
                total=total,
                desc=LABELS.get(stage, stage),
                unit=_unit(stage)[:-1],
                file=sys.stderr,
                leave=False,
            )
        bar.update(done - bar.n)

    def close(self) -> None:
        """Remove the bars."""
        for bar in self.bars.values():
            bar.close()


class ProgressLines:
    """Progress as log records: a stage's first step, its last, and one every ``every`` s."""

    def __init__(self, every: float = PROGRESS_EVERY) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.started: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Log the stage's position if it starts, ends, or was last logged long enough ago."""
        now = time.monotonic()
        last = self.last.get(stage)
        if last is not None and done < total and now - last < self.every:
            return
        self.last[stage] = now
        elapsed = now - self.started.setdefault(stage, now)
        percent = 100.0 * done / total if total else 100.0
        logger.info(
            "%s %d/%d %s (%.0f%%, %.0f s)",
            LABELS.get(stage, stage), done, total, _unit(stage), percent, elapsed,
        )  # fmt: skip

    def close(self) -> None:
        """Nothing to clean up (for symmetry with ProgressBars)."""


def progress_reporter(flag: bool | None) -> ProgressBars | ProgressLines | None:
    """Return bars on a terminal (or with --progress), lines elsewhere, None with --no-progress."""
    if flag is False:
        return None
    if flag or sys.stderr.isatty():
        return ProgressBars()
    return ProgressLines()

"""Fixtures shared by the multi-process integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .procs import KbgitProc


@pytest.fixture
def procs() -> Iterator[list[KbgitProc]]:
    """Collect started kbgit processes; stop every one of them after the test."""
    started: list[KbgitProc] = []
    yield started
    for p in started:
        p.stop()

"""Commands registered on `kbgit` (filled in by the issue that owns them)."""

from __future__ import annotations

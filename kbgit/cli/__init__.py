"""The ``kbgit`` command line: thin commands over the library.

Exit codes: 0 success; 1 an error (message and hint on stderr); 2 bad usage;
3 an ingest that committed but could not read some files; 4 verification failed.
The group lives in :mod:`kbgit.cli.app`; each command module registers on it when imported.
"""

from . import core, ha, history, lc, retrieval, serve  # noqa: F401  (registers the commands)
from .app import EXIT_ERROR, EXIT_INTEGRITY, EXIT_PARTIAL, emit_json, main

__all__ = ["EXIT_ERROR", "EXIT_INTEGRITY", "EXIT_PARTIAL", "emit_json", "main"]

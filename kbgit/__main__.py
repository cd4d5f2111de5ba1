"""Allow ``python -m kbgit``."""

from .cli import main

main()

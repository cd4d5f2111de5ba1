"""Entry point kept for hub hook shims installed before the package layout moved.

Old shims run ``python -m kbgit.hooks pre-receive`` or, for post-receive, this file as
a script (``python -I .../kbgit/hooks.py post-receive``, standard library only, fast).
The logic lives in :mod:`kbgit.hub.hooks`, which ``kbgit hooks install`` names directly.
"""

import os
import runpy
import sys

if __name__ == "__main__":
    if __spec__ is None:  # run as a file: hand over to the new file, still as a script
        here = os.path.dirname(os.path.abspath(__file__))
        runpy.run_path(os.path.join(here, "hub", "hooks.py"), run_name="__main__")
    else:
        from kbgit.hub.hooks import main

        sys.exit(main(sys.argv[1:]))

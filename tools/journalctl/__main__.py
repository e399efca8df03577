"""``python -m tools.journalctl``: the same as the ``strata-journal`` script."""

from __future__ import annotations

import sys

from tools.journalctl.cli import main

if __name__ == "__main__":
    sys.exit(main())

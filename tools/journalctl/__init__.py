"""``strata-journal``: inspect a journal's data directory, like journalctl and Kafka's dump-log.

``cli.py`` parses the command line; ``reader.py`` is a read-only view of the
data directory (catalog opened read-only, segment files and objects read
directly, never a recovery); ``commands.py`` holds the modes (stream list,
records, follow, segments, disk usage, vacuum), ``verify.py`` the checks,
``output.py`` the ``-o`` formats and ``timespec.py`` the ``--since``/size
arguments. See ``docs/journalctl.md``.
"""

from tools.journalctl.cli import main

__all__ = ["main"]

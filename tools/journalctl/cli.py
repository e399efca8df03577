"""The command line of ``strata-journal``: options, help text and dispatch."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tools.journalctl import commands
from tools.journalctl.output import BATCH_MODES, RECORD_MODES
from tools.journalctl.reader import DataDir, DataDirError
from tools.journalctl.timespec import TimeSpecError, parse_age, parse_size, parse_time
from tools.journalctl.verify import verify

__all__ = ["build_parser", "main", "parse_object_options"]

_DESCRIPTION = """\
Inspect a StrataMQ journal data directory: list streams and segments, print
records with filters, follow new records, verify checksums and indexes on
every tier, show disk usage and apply retention. Reads only (the catalog is
opened read-only, no recovery runs), so it is safe beside a running server;
only --vacuum-size/--vacuum-time change data, and they refuse to run while
another process holds the directory.

With no mode option it lists the streams (first/next offset, size, segments
per tier). --stream or any record filter prints records instead."""

_EPILOG = """\
time values (--since/--until):
  ISO 8601 (2026-11-27, 2026-11-27T10:00:00Z, ...+02:00; naive = UTC),
  relative (-1h, -30m, -2d, +10s), now, today, yesterday, epoch milliseconds

exit status:
  0 ok; 1 --verify found problems (or the directory cannot be read);
  2 bad arguments, or a vacuum refused because the directory is in use

examples:
  strata-journal -D /var/lib/strata                 list streams
  strata-journal -D data --stream orders -n 20      last 20 records of 'orders'
  strata-journal -D data --stream 'sensor-*' --since -1h --grep 'temp=9[0-9]'
  strata-journal -D data --stream orders -f -o json | jq .value
  strata-journal -D data --stream orders --from-offset 1000 --to-offset 1099 -o verbose
  strata-journal -D data --stream orders -o batch   batch headers, like kafka dump-log
  strata-journal -D data --list-segments            where every segment is, and its state
  strata-journal -D data --verify                   CRCs, indexes, catalog vs files
  strata-journal -D data --disk-usage
  strata-journal -D data --vacuum-time 7d --vacuum-size 10G   (server stopped)
  strata-journal -D data --list-segments \\
      --object-option key=AKIA... --object-option secret=... \\
      --object-option client_kwargs.endpoint_url=http://127.0.0.1:9000

See docs/journalctl.md."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="strata-journal",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-D",
        "--directory",
        type=Path,
        default=Path("strata-data"),
        metavar="DIR",
        help="the journal's data directory (default: ./strata-data)",
    )
    p.add_argument(
        "--stream",
        action="append",
        metavar="NAME",
        help="streams to show (glob patterns; repeatable; default: all)",
    )
    sel = p.add_argument_group("selecting records")
    sel.add_argument("--from-offset", type=int, metavar="N", help="first offset to show")
    sel.add_argument("--to-offset", type=int, metavar="N", help="last offset to show")
    sel.add_argument("-S", "--since", metavar="TIME", help="records at or after TIME")
    sel.add_argument("-U", "--until", metavar="TIME", help="records at or before TIME")
    sel.add_argument(
        "-n",
        "--lines",
        type=int,
        metavar="N",
        help="only the last N matching records of each stream",
    )
    sel.add_argument("-r", "--reverse", action="store_true", help="newest first")
    sel.add_argument(
        "-g",
        "--grep",
        metavar="PATTERN",
        help="regular expression on key, value and headers (UTF-8, lossy)",
    )
    sel.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing records as they are appended (default -n 10)",
    )
    sel.add_argument(
        "-o",
        "--output",
        default="short",
        choices=RECORD_MODES + BATCH_MODES,
        metavar="MODE",
        help="short (default), verbose, json, json-pretty, cat (values only), "
        "hex, batch (one line of header fields per batch); json also "
        "applies to --list-segments and --disk-usage",
    )
    modes = p.add_argument_group("other modes")
    modes.add_argument(
        "--list-segments",
        action="store_true",
        help="each segment's tier, object key, offsets, time range, size, state",
    )
    modes.add_argument(
        "--verify",
        action="store_true",
        help="check every batch CRC, the indexes and the catalog against a scan "
        "on every tier; exit 1 on any problem",
    )
    modes.add_argument("--disk-usage", action="store_true", help="bytes per stream and tier")
    modes.add_argument(
        "--vacuum-size",
        metavar="SIZE",
        help="apply retention now, keeping at most SIZE per stream (1G, 512M)",
    )
    modes.add_argument(
        "--vacuum-time",
        metavar="AGE",
        help="apply retention now, dropping segments older than AGE (7d, 12h)",
    )
    p.add_argument(
        "--object-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option for the object tier (repeatable; dotted keys "
        "nest: client_kwargs.endpoint_url=http://...; JSON values allowed)",
    )
    p.add_argument(
        "--object-url",
        metavar="URL",
        help="object tier URL, if not the one recorded in the catalog",
    )
    return p


def parse_object_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as nested fsspec options (``a.b=1`` -> ``{"a": {"b": 1}}``)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--object-option wants KEY=VALUE, not {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, float):  # keep 1.0-looking secrets etc. as strings
            value = raw
        node = options
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--object-option {key}: {part} is not a group")
            node = child
        node[parts[-1]] = value
    return options


_TIME_OPTIONS = ("-S", "--since", "-U", "--until")


def _glue_relative_times(argv: Sequence[str]) -> list[str]:
    """``--since -1h`` as ``--since=-1h``: argparse would take ``-1h`` for an option."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in _TIME_OPTIONS and i + 1 < len(items) and items[i + 1].startswith("-"):
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    logging.basicConfig(level=logging.WARNING, format="strata-journal: %(message)s")
    parser = build_parser()
    args = parser.parse_args(_glue_relative_times(sys.argv[1:] if argv is None else argv))
    now = int(time.time() * 1000)
    try:
        object_options = parse_object_options(args.object_option)
        since = None if args.since is None else parse_time(args.since, now)
        until = None if args.until is None else parse_time(args.until, now)
        vacuum_size = None if args.vacuum_size is None else parse_size(args.vacuum_size)
        vacuum_age = None if args.vacuum_time is None else parse_age(args.vacuum_time)
        grep = None if args.grep is None else re.compile(args.grep)
    except (ValueError, TimeSpecError, re.error) as exc:
        parser.error(str(exc))
    if args.lines is not None and args.lines < 0:
        parser.error("--lines must be >= 0")
    if vacuum_size is not None or vacuum_age is not None:
        return commands.vacuum(
            args.directory, args.stream, vacuum_size, vacuum_age, object_options, out, err
        )
    try:
        dd = DataDir(args.directory, object_options, args.object_url)
    except DataDirError as exc:
        err.write(f"strata-journal: {exc}\n")
        return 1
    with dd:
        streams = dd.streams(args.stream)
        if args.stream and not streams:
            err.write(f"strata-journal: no stream matches {' '.join(args.stream)}\n")
            return 1
        as_json = args.output in ("json", "json-pretty")
        if args.verify:
            return verify(dd, streams, out)
        if args.list_segments:
            return commands.list_segments(dd, streams, out, as_json)
        if args.disk_usage:
            return commands.disk_usage(dd, streams, out, as_json)
        showing = (
            args.stream
            or args.follow
            or args.output not in ("short",)
            or any(
                v is not None
                for v in (args.from_offset, args.to_offset, since, until, args.lines, grep)
            )
            or args.reverse
        )
        if not showing:
            return commands.list_streams(dd, streams, out, as_json=False)
        lines = args.lines
        if args.follow and lines is None and args.from_offset is None and since is None:
            lines = 10
        selection = commands.Selection(
            from_offset=args.from_offset, to_offset=args.to_offset, since=since, until=until,
            lines=lines, reverse=args.reverse, grep=grep, follow=args.follow, output=args.output,
        )  # fmt: skip
        try:
            return commands.show(dd, streams, selection, out, err)
        except BrokenPipeError:  # `| head`
            return 0

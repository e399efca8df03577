"""The ``strata`` command line: options, help text and dispatch.

Only ``strata config show`` exists so far; the server subcommands (``start``,
``status``, ``topic``, ``user``) come with the server. Errors print
``strata: error: <message>`` on stderr and exit with status 2, like argparse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.strata.config import ConfigError, load_config

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
StrataMQ: one server for MQTT, Kafka and AMQP 0-9-1 on a tiered journal."""

_CONFIG_EPILOG = """\
precedence (later wins):
  defaults < --config FILE < STRATA_<SECTION>_<KEY> environment variables < flags

examples:
  strata config show
  strata config show --config strata.toml --data-dir /var/lib/strata
  STRATA_JOURNAL_FSYNC=always strata config show -o json

See docs/configuration.md for every setting."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strata", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = commands.add_parser(
        "config",
        help="inspect the configuration",
        description="Inspect the configuration.",
    )
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_commands.add_parser(
        "show",
        help="print the effective configuration",
        description="Print the effective configuration: defaults, the config file, "
        "STRATA_* environment variables and flags combined.",
        epilog=_CONFIG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("--config", type=Path, metavar="FILE", help="TOML file (strata.toml)")
    show.add_argument("--data-dir", metavar="DIR", help="shortcut for server.data_dir")
    show.add_argument(
        "--output",
        "-o",
        choices=("toml", "json"),
        default="toml",
        help="output format (default: toml, loadable with --config)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``strata`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["server.data_dir"] = args.data_dir
    try:
        config = load_config(args.config, os.environ, overrides)
    except ConfigError as exc:
        print(f"strata: error: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(config.to_dict(), indent=2))
    else:
        sys.stdout.write(config.to_toml())
    return 0


if __name__ == "__main__":
    sys.exit(main())

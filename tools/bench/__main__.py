"""Command line of the benchmarks: ``python -m tools.bench journal|tiering|rpc|mqtt [--quick] ...``.

Also installed as the ``strata-bench`` script.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def _concurrency_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, not {text}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"each concurrency must be >= 1, not {text}")
    return values


def _common_options(
    parser: argparse.ArgumentParser, quick_help: str, *, scratch_dir: bool = True
) -> None:
    """--quick, --json and (for benchmarks that write files) --dir."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    if scratch_dir:
        parser.add_argument(
            "--dir",
            type=Path,
            default=None,
            help="write under this directory (in a fresh subdirectory, removed afterwards); "
            "default: a temporary directory under the current directory",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description="StrataMQ benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jp = sub.add_parser(
        "journal",
        help="journal append/read/tail throughput and latency vs the raw disk rate",
        description="Journal benchmark; see the docstring of tools/bench/journal.py.",
    )
    _common_options(jp, "a demo run of a few seconds (tiny budgets, 64 KiB x 1000 skipped)")
    jp.add_argument(
        "--seconds",
        type=_positive_float,
        default=None,
        help="time budget of each write case (default 1.5, or 0.03 with --quick)",
    )
    jp.add_argument(
        "--max-mib",
        type=_positive_int,
        default=None,
        help="bytes budget of each write case in MiB (default 256, or 8 with --quick)",
    )
    jp.add_argument(
        "--concurrency",
        type=_concurrency_list,
        default=None,
        help="appender task counts for fsync=always/interval (default 1,8,64)",
    )
    jp.add_argument(
        "--fsync-interval-ms",
        type=_positive_int,
        default=5,
        help="fsync interval of the 'interval' policy and its raw reference (default 5)",
    )

    tp = sub.add_parser(
        "tiering",
        help="migration to the object tier, cold reads from it and hot tail reads, "
        "against plain copies and local reads (starts its own moto S3 server)",
        description="Tiering benchmark; see the docstring of tools/bench/tiering.py.",
    )
    _common_options(tp, "a demo run of a few seconds (4 x 4 MiB segments)")
    tp.add_argument(
        "--segment-mib",
        type=_positive_int,
        default=None,
        help="segment size in MiB (default 16, or 4 with --quick)",
    )
    tp.add_argument(
        "--segments",
        type=_positive_int,
        default=None,
        help="sealed segments migrated per object tier (default 8, or 4 with --quick)",
    )

    rp = sub.add_parser(
        "rpc",
        help="what the network hop costs: the same workloads through the in-process journal "
        "and through RemoteJournal over loopback TCP (server in this process and in a child)",
        description="Journal RPC benchmark; see the docstring of tools/bench/rpc.py.",
    )
    _common_options(rp, "a demo run of under 15 seconds (tiny budgets)")
    rp.add_argument(
        "--no-server-process",
        action="store_true",
        help="skip the server in a child process (`strata start --role journal`)",
    )

    mp = sub.add_parser(
        "mqtt",
        help="MQTT load (fan-in, fan-out, QoS 1, rate sweep, latency, broker CPU, memory per "
        "idle connection) against Mosquitto and StrataMQ, brokers started by the benchmark",
        description="MQTT benchmark; see the docstring of tools/bench/mqtt.py.",
    )
    _common_options(mp, "a demo run of under 45 seconds", scratch_dir=False)
    mp.add_argument(
        "--target",
        choices=("mosquitto", "strata", "both"),
        default="both",
        help="which brokers to start and load (default both; an unavailable one is skipped)",
    )
    mp.add_argument(
        "--strata-command",
        default=None,
        help="how to start strata, with {python}, {data_dir} and {port} placeholders "
        "(default: '{python} -m tools.strata.cli start --data-dir {data_dir}'); "
        "STRATA_MQTT_PORT is set to the chosen port, the other STRATA_*_PORT to 0",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "journal":
        from tools.bench import journal

        return journal.main(
            quick=args.quick,
            directory=args.dir,
            seconds=args.seconds,
            max_mib=args.max_mib,
            concurrency=args.concurrency,
            fsync_interval_ms=args.fsync_interval_ms,
            json_path=args.json,
        )
    if args.command == "tiering":
        from tools.bench import tiering

        return tiering.main(
            quick=args.quick,
            directory=args.dir,
            segment_mib=args.segment_mib,
            segments=args.segments,
            json_path=args.json,
        )
    if args.command == "rpc":
        from tools.bench import rpc

        return rpc.main(
            quick=args.quick,
            directory=args.dir,
            server_process=not args.no_server_process,
            json_path=args.json,
        )
    if args.command == "mqtt":
        from tools.bench import mqtt

        return mqtt.main(
            quick=args.quick,
            target=args.target,
            strata_command=args.strata_command,
            json_path=args.json,
        )
    raise AssertionError(args.command)  # argparse refuses unknown subcommands


if __name__ == "__main__":
    sys.exit(main())

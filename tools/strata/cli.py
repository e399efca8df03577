"""The ``strata`` command line: options, help text and dispatch.

``strata start`` runs the server in the foreground (:mod:`tools.strata.server`);
``strata config show`` prints the effective configuration. The other commands
(``status``, ``topic``, ``user``) are clients of a running server's admin API
(``--server URL``, default http://127.0.0.1:8080) and print a table or, with
``-o json``, the API's JSON. Credentials come from ``--user`` with the
password from ``STRATA_CLI_PASSWORD`` or a prompt. Errors print
``strata: error: <message>`` on stderr and exit with status 2 (usage, config)
or 1 (the server said no, or could not be reached).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tools.strata.client import DEFAULT_SERVER, AdminClient, AdminError
from tools.strata.config import ConfigError, load_config
from tools.text import human_size, table

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

_START_EPILOG = """\
examples:
  strata start                                  everything in one process, ./strata-data
  strata start --role journal                   only the journal server (port 7700)
  strata start --role broker --journal 10.0.0.5:7700
                                                front ends against a remote journal

The first SIGINT/SIGTERM stops gracefully (drain, fsync, close); a second one
exits at once."""

_CLIENT_ENV = """\
environment: STRATA_CLI_SERVER (for --server), STRATA_CLI_USER (for --user),
STRATA_CLI_PASSWORD (the password; otherwise strata asks for it)."""

Handler = Callable[[argparse.Namespace, AdminClient], Any]


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get("STRATA_CLI_SERVER", DEFAULT_SERVER),
        help=f"admin API of the server (default: {DEFAULT_SERVER})",
    )
    common.add_argument(
        "--user", metavar="NAME", default=os.environ.get("STRATA_CLI_USER"), help="log in as"
    )
    common.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="output format"
    )
    return common


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file (strata.toml)")
    parser.add_argument("--data-dir", metavar="DIR", help="shortcut for server.data_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strata", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = _client_options()
    raw = argparse.RawDescriptionHelpFormatter

    start = commands.add_parser(
        "start",
        help="run the server in the foreground",
        description="Run the server: journal, meta and every front end, or the given roles.",
        epilog=_START_EPILOG,
        formatter_class=raw,
    )
    _config_options(start)
    start.add_argument(
        "--role",
        action="append",
        metavar="ROLE",
        help="journal, meta or broker; repeat or comma-separate to combine (default: all)",
    )
    start.add_argument(
        "--journal", metavar="HOST:PORT", help="journal server for the broker role (journal.remote)"
    )

    config = commands.add_parser(
        "config", help="inspect the configuration", description="Inspect the configuration."
    )
    config_commands = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = config_commands.add_parser(
        "show",
        help="print the effective configuration",
        description="Print the effective configuration: defaults, the config file, "
        "STRATA_* environment variables and flags combined.",
        epilog=_CONFIG_EPILOG,
        formatter_class=raw,
    )
    _config_options(show)
    show.add_argument(
        "--output",
        "-o",
        choices=("toml", "json"),
        default="toml",
        help="output format (default: toml, loadable with --config)",
    )

    status = commands.add_parser(
        "status",
        parents=[client],
        help="show a running server's state",
        description="Show a running server's roles, listeners and journal totals.",
        epilog=_CLIENT_ENV,
        formatter_class=raw,
    )
    status.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="first wait up to SECONDS for the server to be ready, showing progress",
    )

    topic = commands.add_parser(
        "topic", help="manage topics (streams)", description="Manage topics (journal streams)."
    )
    topics = topic.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics.add_parser("list", parents=[client], help="list topics", epilog=_CLIENT_ENV)
    create = topics.add_parser("create", parents=[client], help="create a topic")
    create.add_argument("name")
    create.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a stream setting, e.g. retention_ms=86400000 or fsync=always (repeatable)",
    )
    create.add_argument("--exist-ok", action="store_true", help="succeed if it exists")
    describe = topics.add_parser("describe", parents=[client], help="settings and segments")
    describe.add_argument("name")
    delete = topics.add_parser("delete", parents=[client], help="delete a topic and its data")
    delete.add_argument("name")

    user = commands.add_parser("user", help="manage users", description="Manage users.")
    users = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    users.add_parser("list", parents=[client], help="list users", epilog=_CLIENT_ENV)
    for action, text in (("add", "create a user"), ("passwd", "change a user's password")):
        sub = users.add_parser(action, parents=[client], help=text, epilog=_CLIENT_ENV)
        sub.add_argument("name")
        sub.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the new password from the first line of stdin instead of prompting",
        )
    remove = users.add_parser("delete", parents=[client], help="delete a user")
    remove.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``strata`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in ("start", "config"):
        return _local_command(args)
    handler = _HANDLERS[args.command, getattr(args, "action", None)]
    password = None
    if args.user is not None:
        password = os.environ.get("STRATA_CLI_PASSWORD")
        if password is None:
            password = getpass.getpass(f"password for {args.user}: ")
    try:
        with AdminClient(args.server, user=args.user, password=password) as client:
            result = handler(args, client)
    except AdminError as exc:
        print(f"strata: error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        for line in _TABLES[args.command, getattr(args, "action", None)](result):
            print(line)
    return 0


def _local_command(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["server.data_dir"] = args.data_dir
    if args.command == "start":
        if args.role:
            overrides["server.roles"] = ",".join(args.role)
        if args.journal is not None:
            overrides["journal.remote"] = args.journal
    try:
        config = load_config(args.config, os.environ, overrides)
    except ConfigError as exc:
        print(f"strata: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "start":
        from tools.strata.server import run  # trio and the services load only to serve

        return run(config)
    if args.output == "json":
        print(json.dumps(config.to_dict(), indent=2))
    else:
        sys.stdout.write(config.to_toml())
    return 0


# -- client commands: each returns the JSON it got, which a table function prints ----


def _status(args: argparse.Namespace, client: AdminClient) -> Any:
    if args.wait is not None:
        _wait_ready(client, args.wait)
    return client.get("/api/v1/status")


def _wait_ready(client: AdminClient, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    shown = sys.stderr.isatty()
    while True:
        try:
            client.get("/ready")
            break
        except AdminError as exc:
            if time.monotonic() >= deadline:
                raise AdminError(f"not ready after {seconds:g} s: {exc}") from None
        if shown:
            print(".", end="", file=sys.stderr, flush=True)
        time.sleep(0.2)
    if shown:
        print(" ready", file=sys.stderr)


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise AdminError(f"--set wants KEY=VALUE, not {text!r}")
    if value.lower() in ("none", "null", ""):
        return key, None
    try:
        return key, int(value)
    except ValueError:
        return key, value


def _path(name: str) -> str:
    return quote(name, safe="")


_HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("status", None): _status,
    ("topic", "list"): lambda a, c: c.get("/api/v1/streams"),
    ("topic", "create"): lambda a, c: c.post(
        "/api/v1/streams",
        {"name": a.name, "config": dict(map(_setting, a.set)), "exist_ok": a.exist_ok},
    ),
    ("topic", "describe"): lambda a, c: c.get(f"/api/v1/streams/{_path(a.name)}"),
    ("topic", "delete"): lambda a, c: (
        c.delete(f"/api/v1/streams/{_path(a.name)}") or {"deleted": a.name}
    ),
    ("user", "list"): lambda a, c: c.get("/api/v1/users"),
    ("user", "add"): lambda a, c: (
        c.post("/api/v1/users", {"name": a.name, "password": _new_password(a)}) or {"added": a.name}
    ),
    ("user", "passwd"): lambda a, c: (
        c.put(f"/api/v1/users/{_path(a.name)}/password", {"password": _new_password(a)})
        or {"changed": a.name}
    ),
    ("user", "delete"): lambda a, c: (
        c.delete(f"/api/v1/users/{_path(a.name)}") or {"deleted": a.name}
    ),
}


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise AdminError("the passwords differ")
    return first


# -- tables ----------------------------------------------------------------------------


def _status_table(doc: Any) -> list[str]:
    journal = doc.get("journal", {})
    lines = [
        f"strata {doc.get('version', '?')}  roles: {', '.join(doc.get('roles', []))}  "
        f"up {doc.get('uptime_seconds', 0):.0f} s",
        "",
    ]
    rows = [[name, "ready" if ok else "not ready"] for name, ok in doc.get("listeners", {}).items()]
    lines += table([("listener", -16), ("state", -10)], rows)
    lines.append("")
    for key, value in journal.items():
        shown = human_size(value) if "bytes" in key and isinstance(value, int) else value
        lines.append(f"  {key.replace('_', ' ')}: {shown}")
    return lines


def _streams_table(doc: Any) -> list[str]:
    rows = [
        [
            s["name"],
            str(s["first_offset"]),
            str(s["next_offset"]),
            human_size(s["size_bytes"]),
            str(s.get("segment_count", s.get("segments", ""))),
        ]
        for s in _items(doc, "streams")
    ]
    return table([("topic", -24), ("first", 10), ("next", 10), ("size", 10), ("segments", 8)], rows)


def _describe_table(doc: Any) -> list[str]:
    first, after = doc["first_offset"], doc["next_offset"]
    held = f"offsets {first}..{after - 1}" if after > first else f"empty, next offset {after}"
    lines = [
        f"{doc['name']}: {held}, {human_size(doc['size_bytes'])}",
        "",
        "settings:",
    ]
    lines += [f"  {k} = {v}" for k, v in sorted(doc.get("config", {}).items())]
    segments = doc.get("segments", [])
    if segments:
        lines += ["", "segments:"]
        rows = [
            [str(s["base_offset"]), str(s["last_offset"]), s["tier"], human_size(s["size_bytes"])]
            for s in segments
        ]
        lines += table([("base", 12), ("last", 12), ("tier", -8), ("size", 10)], rows)
    return lines


def _users_table(doc: Any) -> list[str]:
    rows = [[u["name"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(u["created_ms"] / 1000))]
            for u in _items(doc, "users")]  # fmt: skip
    return table([("user", -24), ("created (UTC)", -16)], rows)


def _message(doc: Any) -> list[str]:
    return [f"{verb}: {name}" for verb, name in doc.items()] if isinstance(doc, dict) else []


def _items(doc: Any, key: str) -> list[Any]:
    return list(doc[key]) if isinstance(doc, dict) else list(doc)


_TABLES: dict[tuple[str, str | None], Callable[[Any], list[str]]] = {
    ("status", None): _status_table,
    ("topic", "list"): _streams_table,
    ("topic", "create"): _describe_table,
    ("topic", "describe"): _describe_table,
    ("topic", "delete"): _message,
    ("user", "list"): _users_table,
    ("user", "add"): _message,
    ("user", "passwd"): _message,
    ("user", "delete"): _message,
}


if __name__ == "__main__":
    sys.exit(main())

"""The ``strata`` server's settings: defaults, ``strata.toml``, environment, flags.

Each section of ``strata.toml`` is a frozen dataclass whose fields are the
settings; a field's metadata holds its one-line documentation and its check,
and its type hint says how a string from the environment converts. The loader
applies, in order (later wins):

1. the defaults below;
2. the TOML file (``[section]`` tables of ``key = value``);
3. environment variables ``STRATA_<SECTION>_<KEY>`` (``STRATA_JOURNAL_FSYNC``);
4. explicit overrides from the command line (``{"server.data_dir": ...}``).

Every value is checked as it is read, so a :class:`ConfigError` names the key
the way the user spelled it (``journal.fsync`` in the file,
``STRATA_JOURNAL_FSYNC`` in the environment) and says what is allowed. Unknown
sections, keys and ``STRATA_`` variables are errors, never silently ignored.
:meth:`Config.to_toml` renders the effective configuration so that loading it
back gives the same :class:`Config`. The module does no I/O beyond reading
the one file it is given.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from journal.config import FSYNC_POLICIES, FsyncPolicy
from journal.errors import StrataError

__all__ = [
    "CLIENT_ENV_PREFIX",
    "ENV_PREFIX",
    "ROLES",
    "SECTIONS",
    "AdminConfig",
    "AmqpConfig",
    "Config",
    "ConfigError",
    "JournalConfig",
    "KafkaConfig",
    "MetaConfig",
    "MqttConfig",
    "ServerConfig",
    "Setting",
    "env_name",
    "load_config",
    "settings",
    "settings_table",
]

ENV_PREFIX = "STRATA_"
CLIENT_ENV_PREFIX = "STRATA_CLI_"
"""Variables for the ``strata`` client commands (server URL, credentials), not settings."""
ROLES: tuple[str, ...] = ("journal", "meta", "broker")
"""What one ``strata`` process can run; roles combine, the default is all."""

_MAX_INT = (1 << 63) - 1  # the largest integer TOML can write
_LOCALHOST = "127.0.0.1"


class ConfigError(StrataError, ValueError):
    """A setting is unknown or has a value that is not allowed; names the key."""


# -- checks: each returns None when the value is fine, else what is allowed ------

Check = Callable[[Any], str | None]


def _port(value: int) -> str | None:
    if 0 <= value <= 65535:
        return None
    return "a TCP port from 1 to 65535, or 0 to pick a free port"


def _int_range(low: int, high: int = _MAX_INT) -> Check:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"an integer from {low} to {high}"

    return check


def _positive_seconds(value: float) -> str | None:
    ok = math.isfinite(value) and value > 0
    return None if ok else "a finite number of seconds greater than 0"


def _seconds_or_zero(value: float) -> str | None:
    ok = math.isfinite(value) and value >= 0
    return None if ok else "a finite number of seconds, 0 or more"


def _choice(options: tuple[str, ...]) -> Check:
    def check(value: str) -> str | None:
        return None if value in options else "one of " + ", ".join(map(repr, options))

    return check


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "a non-empty string"


def _host(value: str) -> str | None:
    if value and not any(ch.isspace() for ch in value):
        return None
    return "a host name or IP address without spaces (0.0.0.0 listens on every interface)"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


def _object_url(value: str) -> str | None:
    if _URL.fullmatch(value):
        return None
    return "an fsspec URL such as file:///var/lib/strata/objects or s3://bucket/prefix"


def _address(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    digits = port.isascii() and port.isdigit()
    if sep and host and _host(host) is None and digits and 1 <= int(port) <= 65535:
        return None
    return "HOST:PORT with a port from 1 to 65535 (e.g. 10.0.0.5:7700 or [::1]:7700)"


def _roles(value: tuple[str, ...]) -> str | None:
    allowed = "a non-empty list of distinct roles from " + ", ".join(ROLES)
    if not value or len(set(value)) != len(value) or not set(value) <= set(ROLES):
        return allowed
    return None


def _meta(doc: str, check: Check | None = None) -> dict[str, Any]:
    return {"doc": doc, "check": check}


# -- the sections ------------------------------------------------------------------


class _Section:
    """Checks every field on construction, naming it ``section.key``."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for setting in _section_settings(type(self)):
            value = getattr(self, setting.key)
            problem = setting.problem(value)
            if problem is not None:
                raise ConfigError(f"{setting.name} = {value!r}: must be {problem}")


@dataclass(frozen=True, slots=True)
class ServerConfig(_Section):
    """``[server]``: what this process runs and where it keeps its data."""

    section: ClassVar[str] = "server"
    data_dir: str = field(
        default="./strata-data",
        metadata=_meta(
            "Directory for all data (journal, meta state, users); relative to the working "
            "directory, ~ expands.",
            _non_empty,
        ),
    )
    roles: tuple[str, ...] = field(
        default=ROLES,
        metadata=_meta(
            "Roles this process runs: journal (the journal and its RPC server), meta, broker "
            "(the protocol front ends).",
            _roles,
        ),
    )


@dataclass(frozen=True, slots=True)
class JournalConfig(_Section):
    """``[journal]``: the storage engine and its RPC listener."""

    section: ClassVar[str] = "journal"
    host: str = field(
        default=_LOCALHOST, metadata=_meta("Address the journal RPC server listens on.", _host)
    )
    port: int = field(
        default=7700, metadata=_meta("Journal RPC port (0: pick a free port).", _port)
    )
    fsync: FsyncPolicy = field(
        default="interval",
        metadata=_meta(
            "Default fsync policy of streams: always (before every ack), interval (every "
            "fsync_interval_ms, acks wait for it), none (page cache only).",
            _choice(FSYNC_POLICIES),
        ),
    )
    fsync_interval_ms: int = field(
        default=5,
        metadata=_meta(
            "Milliseconds between fsyncs under the interval policy.", _int_range(0, 3_600_000)
        ),
    )
    object_url: str | None = field(
        default=None,
        metadata=_meta(
            "fsspec URL of the object tier (s3://bucket/prefix, file:///dir); unset means "
            "file://<data_dir>/objects.",
            _object_url,
        ),
    )
    upload_concurrency: int = field(
        default=2,
        metadata=_meta(
            "Streams migrating segments to the object tier at once.", _int_range(1, 1024)
        ),
    )
    cache_bytes: int = field(
        default=256 << 20,
        metadata=_meta(
            "Byte budget of the local cache of cold (object-tier) reads (256 MiB).", _int_range(0)
        ),
    )
    object_timeout: float = field(
        default=30.0,
        metadata=_meta("Seconds after which an object-store call gives up.", _positive_seconds),
    )
    remote: str | None = field(
        default=None,
        metadata=_meta(
            "HOST:PORT of a journal server for the broker role; unset means the journal runs "
            "in this process.",
            _address,
        ),
    )


@dataclass(frozen=True, slots=True)
class AdminConfig(_Section):
    """``[admin]``: the HTTP admin API and ``/metrics``."""

    section: ClassVar[str] = "admin"
    host: str = field(
        default=_LOCALHOST, metadata=_meta("Address the admin HTTP API listens on.", _host)
    )
    port: int = field(
        default=8080,
        metadata=_meta("Admin HTTP API and /metrics port (0: pick a free port).", _port),
    )


@dataclass(frozen=True, slots=True)
class MqttConfig(_Section):
    """``[mqtt]``: the MQTT 3.1.1/5.0 front end."""

    section: ClassVar[str] = "mqtt"
    host: str = field(
        default=_LOCALHOST, metadata=_meta("Address the MQTT listeners listen on.", _host)
    )
    port: int = field(
        default=1883, metadata=_meta("MQTT over TCP port (0: pick a free port).", _port)
    )
    ws_port: int = field(
        default=8083, metadata=_meta("MQTT over WebSocket port (0: pick a free port).", _port)
    )
    tls_port: int = field(
        default=8883,
        metadata=_meta(
            "MQTT over TLS port (0: pick a free port); open only when tls_cert is set.", _port
        ),
    )
    tls_cert: str | None = field(
        default=None,
        metadata=_meta("PEM certificate chain for the TLS listener; unset: no TLS listener."),
    )
    tls_key: str | None = field(
        default=None,
        metadata=_meta("PEM private key for tls_cert (unset: the key is in tls_cert's file)."),
    )
    shards: int = field(
        default=1,
        metadata=_meta(
            "Message shard streams (mqtt.messages.N, mqtt.qos0.N); fixed once the first broker "
            "ran. More only helps on disks whose fsyncs run in parallel.",
            _int_range(1, 1024),
        ),
    )
    fsync: FsyncPolicy = field(
        default="always",
        metadata=_meta(
            "fsync policy of the message shards: always (group commit before each PUBACK), "
            "interval, none.",
            _choice(FSYNC_POLICIES),
        ),
    )
    max_packet_size: int = field(
        default=1 << 20,
        metadata=_meta(
            "Largest MQTT packet accepted, in bytes (1 MiB).", _int_range(64, 268435460)
        ),
    )
    receive_maximum: int = field(
        default=1024,
        metadata=_meta(
            "QoS 1/2 PUBLISHes a client may have unacknowledged (Receive Maximum).",
            _int_range(1, 65535),
        ),
    )
    max_inflight: int = field(
        default=64,
        metadata=_meta(
            "QoS 1/2 deliveries in flight per client (lowered to the client's Receive Maximum).",
            _int_range(1, 65535),
        ),
    )
    max_queued: int = field(
        default=1000,
        metadata=_meta(
            "Deliveries a session may owe (queued plus in flight); newer messages are dropped "
            "and counted.",
            _int_range(1),
        ),
    )
    max_subscriptions: int = field(
        default=1000, metadata=_meta("Subscriptions per session.", _int_range(1))
    )
    max_topic_levels: int = field(
        default=128, metadata=_meta("Levels a topic name or filter may have.", _int_range(1))
    )
    topic_alias_maximum: int = field(
        default=1024,
        metadata=_meta("Topic aliases a client may use (0: none).", _int_range(0, 65535)),
    )
    max_keep_alive: int = field(
        default=0,
        metadata=_meta(
            "Longest keep alive in seconds; clients asking more (or 0) get this (0: no limit).",
            _int_range(0, 65535),
        ),
    )
    max_session_expiry: int = field(
        default=0xFFFFFFFF,
        metadata=_meta(
            "Longest session expiry interval in seconds (4294967295: never expire).",
            _int_range(0, 0xFFFFFFFF),
        ),
    )
    sys_interval: float = field(
        default=10.0,
        metadata=_meta("Seconds between $SYS/broker updates (0: none).", _seconds_or_zero),
    )
    allow_anonymous: bool = field(
        default=False,
        metadata=_meta(
            "Accept clients without a user name even when users exist (with no users, "
            "every client is accepted)."
        ),
    )
    max_connections: int = field(
        default=100_000, metadata=_meta("Open MQTT connections at most.", _int_range(1))
    )
    connect_timeout: float = field(
        default=10.0,
        metadata=_meta(
            "Seconds a new connection has for its TLS/WebSocket handshake and CONNECT.",
            _positive_seconds,
        ),
    )


@dataclass(frozen=True, slots=True)
class KafkaConfig(_Section):
    """``[kafka]``: the Kafka front end."""

    section: ClassVar[str] = "kafka"
    host: str = field(
        default=_LOCALHOST, metadata=_meta("Address the Kafka listener listens on.", _host)
    )
    port: int = field(default=9092, metadata=_meta("Kafka port (0: pick a free port).", _port))


@dataclass(frozen=True, slots=True)
class AmqpConfig(_Section):
    """``[amqp]``: the AMQP 0-9-1 front end."""

    section: ClassVar[str] = "amqp"
    host: str = field(
        default=_LOCALHOST, metadata=_meta("Address the AMQP listener listens on.", _host)
    )
    port: int = field(default=5672, metadata=_meta("AMQP 0-9-1 port (0: pick a free port).", _port))


@dataclass(frozen=True, slots=True)
class MetaConfig(_Section):
    """``[meta]``: the Raft meta service."""

    section: ClassVar[str] = "meta"
    host: str = field(
        default=_LOCALHOST, metadata=_meta("Address the meta (Raft) service listens on.", _host)
    )
    port: int = field(
        default=7710, metadata=_meta("Meta (Raft) port (0: pick a free port).", _port)
    )


_SECTION_TYPES: tuple[type[_Section], ...] = (
    ServerConfig,
    JournalConfig,
    AdminConfig,
    MqttConfig,
    KafkaConfig,
    AmqpConfig,
    MetaConfig,
)
SECTIONS: tuple[str, ...] = tuple(cls.section for cls in _SECTION_TYPES)

_LISTENERS = (
    "journal.port",
    "admin.port",
    "mqtt.port",
    "mqtt.ws_port",
    "mqtt.tls_port",
    "kafka.port",
    "amqp.port",
    "meta.port",
)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration of one ``strata`` process."""

    server: ServerConfig = field(default_factory=ServerConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    amqp: AmqpConfig = field(default_factory=AmqpConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)

    def __post_init__(self) -> None:
        taken: dict[tuple[str, int], str] = {}
        for name in _LISTENERS:
            section, key = name.split(".")
            port = getattr(getattr(self, section), key)
            host = getattr(self, section).host
            if port == 0:
                continue
            if (host, port) in taken:
                raise ConfigError(
                    f"{taken[host, port]} and {name} both listen on {host}:{port}; "
                    "give each listener its own port (or 0 to pick a free one)"
                )
            taken[host, port] = name

    @property
    def data_path(self) -> Path:
        """``server.data_dir`` as a path, ``~`` expanded (still relative if written so)."""
        return Path(self.server.data_dir).expanduser()

    def object_url(self) -> str:
        """The object tier's URL: ``journal.object_url`` or ``file://<data_dir>/objects``."""
        if self.journal.object_url is not None:
            return self.journal.object_url
        return (self.data_path / "objects").absolute().as_uri()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` with lists for list settings and None for unset."""
        result: dict[str, dict[str, Any]] = {}
        for cls in _SECTION_TYPES:
            section = getattr(self, cls.section)
            result[cls.section] = {}
            for setting in _section_settings(cls):
                value = getattr(section, setting.key)
                result[cls.section][setting.key] = (
                    list(value) if isinstance(value, tuple) else value
                )
        return result

    def to_toml(self) -> str:
        """The configuration as a ``strata.toml`` that loads back to this ``Config``.

        Unset optional settings appear as comments, since TOML has no null.
        """
        lines = ["# StrataMQ effective configuration (strata config show)."]
        for cls in _SECTION_TYPES:
            lines += ["", f"[{cls.section}]"]
            for setting in _section_settings(cls):
                value = getattr(getattr(self, cls.section), setting.key)
                lines.append(f"# {setting.doc}")
                if value is None:
                    lines.append(f"# {setting.key} = (unset)")
                else:
                    lines.append(f"{setting.key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


# -- settings as data ----------------------------------------------------------------

_Kind = Literal["str", "int", "float", "bool", "list"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: where it lives, its type, default, documentation and check."""

    section: str
    key: str
    kind: _Kind
    optional: bool
    default: Any
    doc: str
    check: Check | None
    choices: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """The key as written in ``strata.toml``: ``journal.fsync``."""
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        """The environment variable that overrides it: ``STRATA_JOURNAL_FSYNC``."""
        return env_name(self.section, self.key)

    @property
    def type_name(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        base = {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "list": "list of strings",
        }[self.kind]
        return f"{base} (optional)" if self.optional else base

    @property
    def _expected(self) -> str:
        if self.choices is not None:
            return self.type_name
        return ("an " if self.type_name[0] in "aeiou" else "a ") + self.type_name

    def problem(self, value: Any) -> str | None:
        """None if ``value`` (already of the right type) is allowed, else what is."""
        if value is None:
            return None if self.optional else self._expected
        if not self._has_type(value):
            return self._expected
        return self.check(value) if self.check is not None else None

    def _has_type(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.kind == "int":
            return isinstance(value, int)
        if self.kind == "float":
            return isinstance(value, int | float)
        if self.kind == "list":
            return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        return isinstance(value, str)

    def from_toml(self, value: object) -> Any:
        """A TOML value of the right type, or raise ``_Invalid`` saying what is allowed."""
        expected = self._expected
        if value is None and self.optional:  # only from overrides: TOML has no null
            return None
        converted: Any
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise _Invalid(expected + " (true or false)")
            converted = value
        elif self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Invalid(expected)
            converted = value
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Invalid(expected)
            converted = float(value)
        elif self.kind == "list":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise _Invalid(expected)
            converted = tuple(value)
        else:
            if not isinstance(value, str):
                raise _Invalid(expected)
            converted = value
        return self._checked(converted)

    def from_text(self, text: str) -> Any:
        """Convert an environment (or command-line) string by the setting's type.

        An empty string unsets an optional setting; lists are comma-separated.
        """
        stripped = text.strip()
        converted: Any
        if self.optional and not stripped:
            return None
        if self.kind == "bool":
            word = stripped.lower()
            if word not in _BOOL_WORDS:
                raise _Invalid("a boolean: true/false, 1/0 or yes/no")
            converted = _BOOL_WORDS[word]
        elif self.kind == "int":
            if not _INT.fullmatch(stripped):
                raise _Invalid("an integer")
            converted = int(stripped)
        elif self.kind == "float":
            try:
                converted = float(stripped)
            except ValueError:
                raise _Invalid("a number") from None
        elif self.kind == "list":
            converted = tuple(part.strip() for part in text.split(",") if part.strip())
        else:
            converted = text
        return self._checked(converted)

    def _checked(self, value: Any) -> Any:
        problem = self.problem(value)
        if problem is not None:
            raise _Invalid(problem)
        return value


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_INT = re.compile(r"[+-]?[0-9]+")


class _Invalid(Exception):
    """A value failed its conversion or check; the loader adds where it came from."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


def env_name(section: str, key: str) -> str:
    """``env_name("journal", "fsync") == "STRATA_JOURNAL_FSYNC"``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


_SETTINGS_CACHE: dict[type[_Section], tuple[Setting, ...]] = {}


def _section_settings(cls: type[_Section]) -> tuple[Setting, ...]:
    cached = _SETTINGS_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind, optional, choices = _kind_of(hints[f.name])
        result.append(
            Setting(
                section=cls.section,
                key=f.name,
                kind=kind,
                optional=optional,
                default=f.default,
                doc=f.metadata["doc"],
                check=f.metadata["check"],
                choices=choices,
            )
        )
    _SETTINGS_CACHE[cls] = tuple(result)
    return _SETTINGS_CACHE[cls]


def _kind_of(hint: Any) -> tuple[_Kind, bool, tuple[str, ...] | None]:
    optional = False
    if isinstance(hint, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        (hint,) = args
    if get_origin(hint) is Literal:
        return "str", optional, tuple(get_args(hint))
    if get_origin(hint) is tuple:
        return "list", optional, None
    kinds: dict[Any, _Kind] = {str: "str", int: "int", float: "float", bool: "bool"}
    return kinds[hint], optional, None


def settings() -> Iterator[Setting]:
    """Every setting, section by section, in documentation order."""
    for cls in _SECTION_TYPES:
        yield from _section_settings(cls)


def settings_table() -> str:
    """The Markdown table of every setting in docs/configuration.md (kept equal by a test)."""
    rows = [
        "| setting | environment variable | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in settings():
        default = "unset" if s.default is None else f"`{_toml_value(s.default)}`"
        doc = s.doc.replace("|", "\\|")
        rows.append(f"| `{s.name}` | `{s.env}` | {s.type_name} | {default} | {doc} |")
    return "\n".join(rows) + "\n"


# -- loading -------------------------------------------------------------------------

_Values = dict[str, dict[str, Any]]


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the effective configuration: defaults < ``path`` < ``env`` < ``overrides``.

    ``env`` is usually ``os.environ``; only its ``STRATA_`` variables are read.
    ``overrides`` maps ``"section.key"`` to a value of the setting's type or a
    string to convert (command-line flags such as ``--data-dir``). Raises
    :class:`ConfigError` for an unreadable file, bad TOML, an unknown section,
    key or variable, or a value that is not allowed.
    """
    by_section = {cls.section: {s.key: s for s in _section_settings(cls)} for cls in _SECTION_TYPES}
    values: _Values = {section: {} for section in SECTIONS}
    if path is not None:
        _apply_file(path, by_section, values)
    if env is not None:
        _apply_env(env, by_section, values)
    for name, value in (overrides or {}).items():
        section, _, key = name.partition(".")
        setting = by_section.get(section, {}).get(key)
        if setting is None:
            raise ConfigError(f"override {name!r} names no setting{_suggest(name, _all_names())}")
        try:
            if isinstance(value, str) and setting.kind != "str":
                converted = setting.from_text(value)
            else:
                converted = setting.from_toml(value)
        except _Invalid as exc:
            raise ConfigError(f"{name} = {value!r} (override): must be {exc.allowed}") from None
        values[section][key] = converted
    return Config(
        server=ServerConfig(**values["server"]),
        journal=JournalConfig(**values["journal"]),
        admin=AdminConfig(**values["admin"]),
        mqtt=MqttConfig(**values["mqtt"]),
        kafka=KafkaConfig(**values["kafka"]),
        amqp=AmqpConfig(**values["amqp"]),
        meta=MetaConfig(**values["meta"]),
    )


def _apply_file(path: Path, by_section: dict[str, dict[str, Setting]], values: _Values) -> None:
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for section, table in document.items():
        known = by_section.get(section)
        if known is None:
            what = "section" if isinstance(table, dict) else "top-level key"
            raise ConfigError(
                f"unknown {what} {section!r} in {path}{_suggest(section, SECTIONS)}; "
                f"sections are {', '.join(SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{section} in {path} must be a table ([{section}]), not a value")
        for key, raw in table.items():
            setting = known.get(key)
            name = f"{section}.{key}"
            if setting is None:
                raise ConfigError(
                    f"unknown setting {name!r} in {path}{_suggest(key, list(known))}; "
                    f"[{section}] has {', '.join(known)}"
                )
            try:
                values[section][key] = setting.from_toml(raw)
            except _Invalid as exc:
                raise ConfigError(f"{name} = {raw!r} in {path}: must be {exc.allowed}") from None


def _apply_env(
    env: Mapping[str, str], by_section: dict[str, dict[str, Setting]], values: _Values
) -> None:
    names = {s.env: s for s in settings()}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var.startswith(CLIENT_ENV_PREFIX):
            continue
        setting = names.get(var)
        if setting is None:
            raise ConfigError(
                f"environment variable {var} names no setting{_suggest(var, list(names))}; "
                "STRATA_ variables are STRATA_<SECTION>_<KEY>, see docs/configuration.md"
            )
        try:
            values[setting.section][setting.key] = setting.from_text(env[var])
        except _Invalid as exc:
            raise ConfigError(f"{var}={env[var]!r}: must be {exc.allowed}") from None


def _all_names() -> list[str]:
    return [s.name for s in settings()]


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- TOML rendering ------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)

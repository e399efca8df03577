"""The ``strata`` configuration layer: defaults, ``strata.toml``, ``STRATA_*`` variables
and overrides, with errors that name the key as the user wrote it.

Tables of (input, expected) cover every conversion and its errors; hypothesis
checks that any TOML document or environment either loads or raises
:class:`ConfigError`, and that every valid configuration survives
``to_toml`` -> ``load_config``. ``strata config show`` runs as a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from journal import FSYNC_POLICIES, StrataError
from tools.strata import (
    ROLES,
    SECTIONS,
    Config,
    ConfigError,
    JournalConfig,
    MqttConfig,
    ServerConfig,
    Setting,
    load_config,
    settings_table,
)
from tools.strata import settings as all_settings

_ROOT = Path(__file__).resolve().parent.parent
_FUZZ = settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_text(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "strata.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env or {}, {})


def value_of(config: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


# -- defaults ------------------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None, {}, {})
    assert config == Config()
    assert config.server.data_dir == "./strata-data"
    assert config.server.roles == ROLES == ("journal", "meta", "broker")
    assert config.journal.fsync == "interval"
    assert config.journal.fsync_interval_ms == 5
    assert config.journal.object_url is None
    assert config.journal.remote is None
    ports = {name: value_of(config, name) for name in _PORT_NAMES}
    assert ports == {
        "journal.port": 7700,
        "admin.port": 8080,
        "mqtt.port": 1883,
        "mqtt.ws_port": 8083,
        "mqtt.tls_port": 8883,
        "kafka.port": 9092,
        "amqp.port": 5672,
        "meta.port": 7710,
    }
    assert {getattr(config, s).host for s in SECTIONS if s != "server"} == {"127.0.0.1"}


_PORT_NAMES = [
    "journal.port",
    "admin.port",
    "mqtt.port",
    "mqtt.ws_port",
    "mqtt.tls_port",
    "kafka.port",
    "amqp.port",
    "meta.port",
]


def test_default_object_url_is_a_folder_inside_the_data_dir(tmp_path: Path) -> None:
    config = load_config(None, {}, {"server.data_dir": str(tmp_path / "d")})
    assert config.object_url() == (tmp_path / "d" / "objects").as_uri()
    assert config.object_url().startswith("file:///")
    relative = Config()
    assert relative.object_url() == (Path.cwd() / "strata-data" / "objects").as_uri()
    s3 = load_config(None, {"STRATA_JOURNAL_OBJECT_URL": "s3://bucket/p"}, {})
    assert s3.object_url() == "s3://bucket/p"


def test_data_path_expands_home() -> None:
    config = load_config(None, {}, {"server.data_dir": "~/strata"})
    assert config.data_path == Path.home() / "strata"


def test_every_setting_is_documented_and_valid_by_default() -> None:
    names = [s.name for s in all_settings()]
    assert len(names) == len(set(names))
    for setting in all_settings():
        assert setting.doc.strip(), setting.name
        assert setting.problem(setting.default) is None, setting.name
        assert setting.env == "STRATA_" + setting.name.replace(".", "_").upper()


def test_docs_table_is_generated_from_the_settings() -> None:
    docs = (_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert settings_table() in docs


# -- the TOML file -------------------------------------------------------------------


def test_toml_file_sets_every_section(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [server]
        data_dir = "/var/lib/strata"
        roles = ["journal"]

        [journal]
        host = "0.0.0.0"
        port = 17700
        fsync = "always"
        fsync_interval_ms = 20
        object_url = "s3://bucket/prefix"
        upload_concurrency = 4
        cache_bytes = 1024
        object_timeout = 5
        remote = "10.0.0.5:7700"

        [admin]
        port = 18080
        host = "::1"

        [mqtt]
        port = 11883
        ws_port = 0
        tls_port = 0

        [kafka]
        port = 19092

        [amqp]
        port = 15672

        [meta]
        port = 17710
        """,
    )
    assert config.server == ServerConfig(data_dir="/var/lib/strata", roles=("journal",))
    assert config.journal == JournalConfig(
        host="0.0.0.0",
        port=17700,
        fsync="always",
        fsync_interval_ms=20,
        object_url="s3://bucket/prefix",
        upload_concurrency=4,
        cache_bytes=1024,
        object_timeout=5.0,
        remote="10.0.0.5:7700",
    )
    assert isinstance(config.journal.object_timeout, float)
    assert (config.admin.host, config.admin.port) == ("::1", 18080)
    assert config.mqtt == MqttConfig(port=11883, ws_port=0, tls_port=0)
    assert (config.kafka.port, config.amqp.port, config.meta.port) == (19092, 15672, 17710)


def test_empty_file_and_empty_sections_give_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == Config()
    assert load_text(tmp_path, "[server]\n[journal]\n[meta]\n") == Config()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[journal]\nfsync = "sometimes"', ["journal.fsync", "'always', 'interval', 'none'"]),
        ('[journal]\nport = "7700"', ["journal.port", "an integer"]),
        ("[journal]\nport = 70000", ["journal.port", "1 to 65535", "0 to pick a free port"]),
        ("[journal]\nport = -1", ["journal.port", "1 to 65535"]),
        ("[journal]\nport = 1.5", ["journal.port", "an integer"]),
        ("[journal]\nport = true", ["journal.port", "an integer"]),
        ("[journal]\nfsync_interval_ms = -5", ["journal.fsync_interval_ms", "from 0"]),
        ("[journal]\nupload_concurrency = 0", ["journal.upload_concurrency", "from 1"]),
        ("[journal]\ncache_bytes = -1", ["journal.cache_bytes", "from 0"]),
        ("[journal]\nobject_timeout = 0", ["journal.object_timeout", "greater than 0"]),
        ("[journal]\nobject_timeout = inf", ["journal.object_timeout", "finite"]),
        ("[journal]\nobject_timeout = nan", ["journal.object_timeout", "finite"]),
        ('[journal]\nobject_timeout = "30"', ["journal.object_timeout", "a number"]),
        ('[journal]\nobject_url = "bucket/prefix"', ["journal.object_url", "fsspec URL"]),
        ('[journal]\nremote = "10.0.0.5"', ["journal.remote", "HOST:PORT"]),
        ('[journal]\nremote = "host:0"', ["journal.remote", "HOST:PORT"]),
        ('[journal]\nremote = ":7700"', ["journal.remote", "HOST:PORT"]),
        ('[admin]\nhost = ""', ["admin.host", "host name"]),
        ('[admin]\nhost = "a b"', ["admin.host", "without spaces"]),
        ('[server]\ndata_dir = ""', ["server.data_dir", "non-empty"]),
        ("[server]\ndata_dir = 5", ["server.data_dir", "a string"]),
        ('[server]\nroles = "journal"', ["server.roles", "list of strings"]),
        ("[server]\nroles = [1]", ["server.roles", "list of strings"]),
        ("[server]\nroles = []", ["server.roles", "non-empty list"]),
        ('[server]\nroles = ["journal", "web"]', ["server.roles", "journal, meta, broker"]),
        ('[server]\nroles = ["meta", "meta"]', ["server.roles", "distinct"]),
        ("[mqtt]\nws_port = 65536", ["mqtt.ws_port", "65535"]),
    ],
)
def test_invalid_toml_value_names_the_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert "strata.toml" in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[jornal]\nfsync = "always"', ["unknown section 'jornal'", "did you mean 'journal'"]),
        ('[journal]\nfsynk = "always"', ["'journal.fsynk'", "did you mean 'fsync'"]),
        ("[kafka]\nbroker_id = 1", ["'kafka.broker_id'", "[kafka] has host, port"]),
        ('data_dir = "x"', ["unknown top-level key 'data_dir'", "sections are server"]),
        ("journal = 1", ["journal", "must be a table"]),
        ("[journal.tiers]\nx = 1", ["'journal.tiers'"]),
    ],
)
def test_unknown_section_or_key_in_toml(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.toml"):
        load_config(missing, {}, {})
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_text(tmp_path, "[journal\nport = 1")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[server]\ndata_dir = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad, {}, {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, {}, {})  # a directory


def test_config_error_is_a_strata_error_and_a_value_error() -> None:
    assert issubclass(ConfigError, StrataError)
    assert issubclass(ConfigError, ValueError)


# -- environment variables -----------------------------------------------------------


_ENV_CASES: list[tuple[str, str, str, Any]] = [
    ("STRATA_SERVER_DATA_DIR", "/srv/strata", "server.data_dir", "/srv/strata"),
    ("STRATA_SERVER_ROLES", "journal, broker", "server.roles", ("journal", "broker")),
    ("STRATA_JOURNAL_FSYNC", "none", "journal.fsync", "none"),
    ("STRATA_JOURNAL_OBJECT_URL", "s3://b/p", "journal.object_url", "s3://b/p"),
    ("STRATA_JOURNAL_PORT", "17700", "journal.port", 17700),
    ("STRATA_JOURNAL_HOST", "0.0.0.0", "journal.host", "0.0.0.0"),
    ("STRATA_JOURNAL_FSYNC_INTERVAL_MS", "50", "journal.fsync_interval_ms", 50),
    ("STRATA_JOURNAL_UPLOAD_CONCURRENCY", "8", "journal.upload_concurrency", 8),
    ("STRATA_JOURNAL_CACHE_BYTES", "0", "journal.cache_bytes", 0),
    ("STRATA_JOURNAL_OBJECT_TIMEOUT", "2.5", "journal.object_timeout", 2.5),
    ("STRATA_JOURNAL_REMOTE", "[::1]:7700", "journal.remote", "[::1]:7700"),
    ("STRATA_ADMIN_PORT", "18080", "admin.port", 18080),
    ("STRATA_ADMIN_HOST", "::", "admin.host", "::"),
    ("STRATA_MQTT_PORT", "11883", "mqtt.port", 11883),
    ("STRATA_MQTT_WS_PORT", "0", "mqtt.ws_port", 0),
    ("STRATA_MQTT_TLS_PORT", "18883", "mqtt.tls_port", 18883),
    ("STRATA_MQTT_HOST", "mqtt.local", "mqtt.host", "mqtt.local"),
    ("STRATA_MQTT_TLS_CERT", "/etc/strata/cert.pem", "mqtt.tls_cert", "/etc/strata/cert.pem"),
    ("STRATA_MQTT_TLS_KEY", "key.pem", "mqtt.tls_key", "key.pem"),
    ("STRATA_MQTT_SHARDS", "4", "mqtt.shards", 4),
    ("STRATA_MQTT_FSYNC", "interval", "mqtt.fsync", "interval"),
    ("STRATA_MQTT_MAX_PACKET_SIZE", "65536", "mqtt.max_packet_size", 65536),
    ("STRATA_MQTT_RECEIVE_MAXIMUM", "10", "mqtt.receive_maximum", 10),
    ("STRATA_MQTT_MAX_INFLIGHT", "20", "mqtt.max_inflight", 20),
    ("STRATA_MQTT_MAX_QUEUED", "5", "mqtt.max_queued", 5),
    ("STRATA_MQTT_MAX_SUBSCRIPTIONS", "3", "mqtt.max_subscriptions", 3),
    ("STRATA_MQTT_MAX_TOPIC_LEVELS", "8", "mqtt.max_topic_levels", 8),
    ("STRATA_MQTT_TOPIC_ALIAS_MAXIMUM", "0", "mqtt.topic_alias_maximum", 0),
    ("STRATA_MQTT_MAX_KEEP_ALIVE", "30", "mqtt.max_keep_alive", 30),
    ("STRATA_MQTT_MAX_SESSION_EXPIRY", "3600", "mqtt.max_session_expiry", 3600),
    ("STRATA_MQTT_SYS_INTERVAL", "0.5", "mqtt.sys_interval", 0.5),
    ("STRATA_MQTT_ALLOW_ANONYMOUS", "true", "mqtt.allow_anonymous", True),
    ("STRATA_MQTT_MAX_CONNECTIONS", "100", "mqtt.max_connections", 100),
    ("STRATA_MQTT_CONNECT_TIMEOUT", "2.5", "mqtt.connect_timeout", 2.5),
    ("STRATA_KAFKA_PORT", "19092", "kafka.port", 19092),
    ("STRATA_KAFKA_HOST", "10.1.2.3", "kafka.host", "10.1.2.3"),
    ("STRATA_AMQP_PORT", "15672", "amqp.port", 15672),
    ("STRATA_AMQP_HOST", "localhost", "amqp.host", "localhost"),
    ("STRATA_META_PORT", "17710", "meta.port", 17710),
    ("STRATA_META_HOST", "meta-0", "meta.host", "meta-0"),
]


@pytest.mark.parametrize(("var", "text", "name", "expected"), _ENV_CASES)
def test_environment_overrides_each_setting(var: str, text: str, name: str, expected: Any) -> None:
    config = load_config(None, {var: text}, {})
    assert value_of(config, name) == expected
    default = {s.name: s.default for s in all_settings()}
    others = {s.name for s in all_settings()} - {name}
    assert all(value_of(config, other) == default[other] for other in others)


def test_every_setting_has_an_environment_case() -> None:
    covered = {case[0] for case in _ENV_CASES}
    assert covered == {s.env for s in all_settings()}


@pytest.mark.parametrize(
    ("var", "text", "expected"),
    [
        ("STRATA_JOURNAL_PORT", " 42 ", 42),
        ("STRATA_JOURNAL_PORT", "+42", 42),
        ("STRATA_JOURNAL_PORT", "0042", 42),
        ("STRATA_JOURNAL_OBJECT_TIMEOUT", "1e3", 1000.0),
        ("STRATA_JOURNAL_OBJECT_TIMEOUT", "7", 7.0),
        ("STRATA_JOURNAL_OBJECT_URL", "", None),
        ("STRATA_JOURNAL_OBJECT_URL", "  ", None),
        ("STRATA_JOURNAL_REMOTE", "", None),
        ("STRATA_SERVER_ROLES", "meta", ("meta",)),
        ("STRATA_SERVER_ROLES", " broker ,journal,", ("broker", "journal")),
        ("STRATA_SERVER_DATA_DIR", " spaced dir ", " spaced dir "),
    ],
)
def test_environment_string_conversions(var: str, text: str, expected: Any) -> None:
    config = load_config(None, {var: text}, {})
    (setting,) = [s for s in all_settings() if s.env == var]
    assert value_of(config, setting.name) == expected


@pytest.mark.parametrize(
    ("var", "text", "allowed"),
    [
        ("STRATA_JOURNAL_FSYNC", "sometimes", "'always', 'interval', 'none'"),
        ("STRATA_JOURNAL_FSYNC", "ALWAYS", "'always', 'interval', 'none'"),
        ("STRATA_JOURNAL_PORT", "", "an integer"),
        ("STRATA_JOURNAL_PORT", "12.0", "an integer"),
        ("STRATA_JOURNAL_PORT", "0x10", "an integer"),
        ("STRATA_JOURNAL_PORT", "1_000", "an integer"),
        ("STRATA_JOURNAL_PORT", "\u0664\u0662", "an integer"),  # Arabic-Indic digits
        ("STRATA_JOURNAL_PORT", "65536", "0 to pick a free port"),
        ("STRATA_ADMIN_PORT", "-1", "1 to 65535"),
        ("STRATA_MQTT_PORT", "http", "an integer"),
        ("STRATA_KAFKA_PORT", "99999", "1 to 65535"),
        ("STRATA_AMQP_PORT", "5672x", "an integer"),
        ("STRATA_META_PORT", "true", "an integer"),
        ("STRATA_JOURNAL_OBJECT_TIMEOUT", "soon", "a number"),
        ("STRATA_JOURNAL_OBJECT_TIMEOUT", "nan", "finite"),
        ("STRATA_JOURNAL_OBJECT_TIMEOUT", "inf", "finite"),
        ("STRATA_JOURNAL_OBJECT_TIMEOUT", "-1", "greater than 0"),
        ("STRATA_JOURNAL_OBJECT_URL", "relative/dir", "fsspec URL"),
        ("STRATA_JOURNAL_REMOTE", "host:port", "HOST:PORT"),
        ("STRATA_SERVER_ROLES", "", "non-empty list"),
        ("STRATA_SERVER_ROLES", "journal,web", "journal, meta, broker"),
        ("STRATA_SERVER_DATA_DIR", "", "non-empty"),
        ("STRATA_MQTT_HOST", "", "host name"),
    ],
)
def test_invalid_environment_value_names_the_variable(var: str, text: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {var: text}, {})
    message = str(info.value)
    assert message.startswith(f"{var}={text!r}: must be ")
    assert allowed in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" Yes ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("No", False),
    ],
)
def test_boolean_conversion(text: str, expected: bool) -> None:
    flag = Setting("test", "flag", "bool", False, False, "A flag.", None)
    assert flag.from_text(text) is expected
    assert flag.from_toml(expected) is expected


@pytest.mark.parametrize("text", ["", "on", "off", "2", "truthy", "y"])
def test_boolean_conversion_errors(text: str) -> None:
    flag = Setting("test", "flag", "bool", False, False, "A flag.", None)
    with pytest.raises(Exception, match="true/false, 1/0 or yes/no") as info:
        flag.from_text(text)
    assert not isinstance(info.value, ConfigError)  # the loader adds the key's name
    with pytest.raises(Exception, match="true or false"):
        flag.from_toml(1)


@pytest.mark.parametrize(
    ("var", "fragment"),
    [
        ("STRATA_JOURNAL_FSYNK", "did you mean 'STRATA_JOURNAL_FSYNC'"),
        ("STRATA_FOO_BAR", "STRATA_FOO_BAR names no setting"),
        ("STRATA_JOURNAL", "STRATA_JOURNAL names no setting"),
        ("STRATA_", "STRATA_ names no setting"),
        ("STRATA_CONFIG", "STRATA_<SECTION>_<KEY>"),
        ("STRATA_journal_fsync", "STRATA_journal_fsync names no setting"),
    ],
)
def test_unknown_strata_variable_is_an_error(var: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {var: "always"}, {})
    assert fragment in str(info.value)


def test_other_variables_are_ignored() -> None:
    env = {"PATH": "/bin", "strata_journal_fsync": "bogus", "XSTRATA_A": "1", "HOME": "/"}
    assert load_config(None, env, {}) == Config()


# -- overrides and precedence ----------------------------------------------------------


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "strata.toml"
    path.write_text('[server]\ndata_dir = "from-file"\n[journal]\nport = 1001\nfsync = "none"\n')
    env = {"STRATA_SERVER_DATA_DIR": "from-env", "STRATA_JOURNAL_PORT": "1002"}
    overrides = {"server.data_dir": "from-flag"}

    config = load_config(path, env, overrides)
    assert (config.server.data_dir, config.journal.port) == ("from-flag", 1002)
    assert config.journal.fsync == "none"  # only the file sets it

    config = load_config(path, env, {})
    assert (config.server.data_dir, config.journal.port) == ("from-env", 1002)

    config = load_config(path, {}, {})
    assert (config.server.data_dir, config.journal.port) == ("from-file", 1001)

    config = load_config(None, env, overrides)
    assert (config.server.data_dir, config.journal.port) == ("from-flag", 1002)


def test_a_later_source_does_not_excuse_an_invalid_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "strata.toml"
    path.write_text('[journal]\nfsync = "never"\n')
    with pytest.raises(ConfigError, match=r"journal\.fsync"):
        load_config(path, {"STRATA_JOURNAL_FSYNC": "always"}, {})


def test_env_can_unset_an_optional_setting_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "strata.toml"
    path.write_text('[journal]\nobject_url = "s3://b/p"\n')
    config = load_config(path, {"STRATA_JOURNAL_OBJECT_URL": ""}, {})
    assert config.journal.object_url is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"journal.port": 0}, ("journal.port", 0)),
        ({"journal.port": "123"}, ("journal.port", 123)),
        ({"server.roles": ("meta",)}, ("server.roles", ("meta",))),
        ({"server.roles": ["meta"]}, ("server.roles", ("meta",))),
        ({"server.roles": "meta,broker"}, ("server.roles", ("meta", "broker"))),
        ({"journal.object_timeout": 1}, ("journal.object_timeout", 1.0)),
        ({"journal.remote": None}, ("journal.remote", None)),
    ],
)
def test_overrides_accept_typed_values_and_strings(
    overrides: dict[str, object], expected: tuple[str, Any]
) -> None:
    config = load_config(None, {}, overrides)
    assert value_of(config, expected[0]) == expected[1]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"server.data_dir": ""}, "server.data_dir = '' (override): must be a non-empty"),
        ({"journal.port": "x"}, "journal.port = 'x' (override): must be an integer"),
        ({"journal.port": None}, "journal.port = None (override): must be an integer"),
        ({"server.nope": 1}, "override 'server.nope' names no setting"),
        ({"data_dir": "x"}, "did you mean 'server.data_dir'"),
    ],
)
def test_invalid_override(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, overrides)
    assert fragment in str(info.value)


def test_all_arguments_are_optional() -> None:
    assert load_config() == Config()


# -- the sections themselves ---------------------------------------------------------


def test_sections_check_values_on_construction() -> None:
    with pytest.raises(ConfigError, match=r"journal.fsync = 'never': must be one of"):
        JournalConfig(fsync="never")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"journal.port = '1': must be an integer"):
        JournalConfig(port="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"server.roles"):
        ServerConfig(roles=["journal"])  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().journal.port = 1  # type: ignore[misc]


def test_two_listeners_on_one_address_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"STRATA_ADMIN_PORT": "1883"}, {})
    assert "admin.port and mqtt.port both listen on 127.0.0.1:1883" in str(info.value)
    # Different hosts, or port 0 twice, are fine.
    load_config(None, {"STRATA_ADMIN_PORT": "1883", "STRATA_ADMIN_HOST": "10.0.0.1"}, {})
    load_config(None, {"STRATA_ADMIN_PORT": "0", "STRATA_MQTT_PORT": "0"}, {})


# -- rendering and round trips -----------------------------------------------------------


def test_to_toml_round_trips_the_defaults(tmp_path: Path) -> None:
    text = Config().to_toml()
    assert "[journal]" in text
    assert 'fsync = "interval"' in text
    assert "# object_url = (unset)" in text
    assert load_text(tmp_path, text) == Config()


def test_to_toml_round_trips_a_custom_config(tmp_path: Path) -> None:
    config = load_config(
        None,
        {
            "STRATA_SERVER_DATA_DIR": 'C:\\data "quoted"\ttab\u00e9\U0001f600',
            "STRATA_SERVER_ROLES": "broker",
            "STRATA_JOURNAL_OBJECT_URL": "s3://bucket/prefix",
            "STRATA_JOURNAL_OBJECT_TIMEOUT": "0.1",
            "STRATA_JOURNAL_REMOTE": "journal-0:7700",
            "STRATA_MQTT_WS_PORT": "0",
        },
        {},
    )
    assert load_text(tmp_path, config.to_toml()) == config


def test_to_dict_is_json_ready() -> None:
    data = json.loads(json.dumps(Config().to_dict()))
    assert list(data) == list(SECTIONS)
    assert data["server"]["roles"] == list(ROLES)
    assert data["journal"]["object_url"] is None
    assert data["kafka"] == {"host": "127.0.0.1", "port": 9092}


def _no_space(min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=20).filter(lambda s: not any(c.isspace() for c in s))


_port_values = st.integers(0, 65535)
_VALID: dict[str, st.SearchStrategy[Any]] = {
    "server.data_dir": st.text(min_size=1, max_size=30).filter(str.strip),
    "server.roles": st.lists(st.sampled_from(ROLES), min_size=1, unique=True).map(tuple),
    "journal.fsync": st.sampled_from(FSYNC_POLICIES),
    "journal.fsync_interval_ms": st.integers(0, 3_600_000),
    "journal.object_url": st.none()
    | st.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        st.sampled_from(["s3", "file", "memory"]),
        _no_space(0),
    ),
    "journal.upload_concurrency": st.integers(1, 1024),
    "journal.cache_bytes": st.integers(0, (1 << 63) - 1),
    "journal.object_timeout": st.floats(1e-9, 1e12),
    "journal.remote": st.none()
    | st.builds(lambda host, port: f"{host}:{port}", _no_space(), st.integers(1, 65535)),
    "mqtt.tls_cert": st.none() | _no_space(),
    "mqtt.tls_key": st.none() | _no_space(),
    "mqtt.shards": st.integers(1, 1024),
    "mqtt.fsync": st.sampled_from(FSYNC_POLICIES),
    "mqtt.max_packet_size": st.integers(64, 268435460),
    "mqtt.receive_maximum": st.integers(1, 65535),
    "mqtt.max_inflight": st.integers(1, 65535),
    "mqtt.max_queued": st.integers(1, 1 << 40),
    "mqtt.max_subscriptions": st.integers(1, 1 << 40),
    "mqtt.max_topic_levels": st.integers(1, 1 << 20),
    "mqtt.topic_alias_maximum": st.integers(0, 65535),
    "mqtt.max_keep_alive": st.integers(0, 65535),
    "mqtt.max_session_expiry": st.integers(0, 0xFFFFFFFF),
    "mqtt.sys_interval": st.floats(0, 1e9),
    "mqtt.allow_anonymous": st.booleans(),
    "mqtt.max_connections": st.integers(1, 1 << 40),
    "mqtt.connect_timeout": st.floats(1e-9, 1e12),
}
for _setting in all_settings():
    if _setting.key == "host":
        _VALID[_setting.name] = _no_space()
    elif _setting.key.endswith("port"):
        _VALID[_setting.name] = _port_values


def test_every_setting_has_a_valid_value_strategy() -> None:
    assert set(_VALID) == {s.name for s in all_settings()}


@st.composite
def valid_configs(draw: st.DrawFn) -> Config:
    overrides = {name: draw(strategy) for name, strategy in _VALID.items()}
    try:
        return load_config(None, {}, overrides)
    except ConfigError:  # two listeners drew the same host and port
        assume(False)
        raise


@_FUZZ
@given(config=valid_configs())
def test_any_valid_config_round_trips_through_toml(tmp_path: Path, config: Config) -> None:
    assert load_text(tmp_path, config.to_toml()) == config


# -- fuzzing: load or ConfigError, nothing else --------------------------------------------

_toml_scalars = (
    st.integers(-(1 << 63), (1 << 63) - 1)
    | st.floats()
    | st.booleans()
    | st.text(max_size=20)
    | st.sampled_from(["always", "interval", "none", "s3://b/p", "journal", "h:1"])
)
_toml_values = st.recursive(_toml_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
_key_names = st.sampled_from(sorted({s.key for s in all_settings()})) | st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True
)
_section_names = st.sampled_from(SECTIONS) | st.from_regex(r"[a-z]{1,8}", fullmatch=True)


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string, except for lone surrogates
    return "[" + ", ".join(_toml_literal(v) for v in value) + "]"


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for section in draw(st.lists(_section_names, max_size=4, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(_key_names, max_size=5, unique=True)):
            lines.append(f"{key} = {_toml_literal(draw(_toml_values))}")
    return "\n".join(lines)


def _loads_or_config_error(tmp_path: Path, text: str, env: Mapping[str, str]) -> None:
    try:
        config = load_text(tmp_path, text, env)
    except ConfigError:
        return
    assert load_text(tmp_path, config.to_toml()) == config


@_FUZZ
@given(text=toml_documents())
def test_structured_toml_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    _loads_or_config_error(tmp_path, text, {})


@_FUZZ
@given(
    text=st.text(alphabet=st.sampled_from("[]=.\"'\n #abcfjlnoprstuvy_0123456789-:/"), max_size=80)
)
def test_arbitrary_text_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    _loads_or_config_error(tmp_path, text, {})


_env_names = st.sampled_from(sorted(s.env for s in all_settings())) | st.from_regex(
    r"STRATA_[A-Za-z_]{0,20}", fullmatch=True
)


@_FUZZ
@given(env=st.dictionaries(_env_names, st.text(max_size=20), max_size=4))
def test_arbitrary_environment_loads_or_raises_config_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    _loads_or_config_error(tmp_path, "", env)


# -- the command line ---------------------------------------------------------------------


def run_cli(
    *args: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tools.strata.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or _ROOT,
        timeout=60,
        check=False,
    )


def test_cli_config_show_prints_the_effective_toml(tmp_path: Path) -> None:
    path = tmp_path / "strata.toml"
    path.write_text('[journal]\nfsync = "always"\n[kafka]\nport = 19092\n')
    result = run_cli(
        "config",
        "show",
        "--config",
        path,
        "--data-dir",
        tmp_path / "data",
        env={"STRATA_MQTT_PORT": "11883"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shown = tomllib.loads(result.stdout)
    assert shown["journal"]["fsync"] == "always"
    assert shown["kafka"]["port"] == 19092
    assert shown["mqtt"]["port"] == 11883
    assert shown["server"]["data_dir"] == str(tmp_path / "data")
    # What it prints is a config file that gives the same configuration.
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert load_config(again, {}, {}) == load_config(
        path, {"STRATA_MQTT_PORT": "11883"}, {"server.data_dir": str(tmp_path / "data")}
    )


def test_cli_config_show_json(tmp_path: Path) -> None:
    result = run_cli("config", "show", "--output", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == Config().to_dict()


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ('[journal]\nfsync = "sometimes"\n', {}, "journal.fsync = 'sometimes'"),
        ("[journal\n", {}, "is not valid TOML"),
        ("[jornal]\n", {}, "unknown section 'jornal'"),
        ("", {"STRATA_JOURNAL_PORT": "http"}, "STRATA_JOURNAL_PORT='http'"),
        ("", {"STRATA_NOPE": "1"}, "STRATA_NOPE names no setting"),
    ],
)
def test_cli_fails_cleanly_on_bad_configuration(
    tmp_path: Path, text: str, env: dict[str, str], fragment: str
) -> None:
    path = tmp_path / "strata.toml"
    path.write_text(text)
    result = run_cli("config", "show", "--config", path, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("strata: error: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_cli_missing_file_and_bad_flags(tmp_path: Path) -> None:
    result = run_cli("config", "show", "--config", tmp_path / "missing.toml")
    assert result.returncode == 2
    assert result.stderr.startswith("strata: error: cannot read config file")
    result = run_cli("config", "show", "--data-dir", "")
    assert result.returncode == 2
    assert "server.data_dir" in result.stderr
    result = run_cli("config", "show", "--output", "yaml")
    assert result.returncode == 2
    assert "strata config show: error: argument --output/-o" in result.stderr
    result = run_cli()
    assert result.returncode == 2
    assert "strata: error:" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "strata"
    assert script.exists(), "make test installs the project, console scripts included"
    result = subprocess.run(
        [str(script), "config", "show", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["journal"]["port"] == 7700

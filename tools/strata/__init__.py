"""The ``strata`` server: one command that runs the journal, meta and front ends.

So far only the configuration layer exists (:mod:`tools.strata.config`) and
the ``strata config show`` command (:mod:`tools.strata.cli`)::

    from tools.strata import load_config

    config = load_config(Path("strata.toml"), os.environ, {"server.data_dir": "/srv"})
"""

from tools.strata.config import (
    ENV_PREFIX,
    ROLES,
    SECTIONS,
    AdminConfig,
    AmqpConfig,
    Config,
    ConfigError,
    JournalConfig,
    KafkaConfig,
    MetaConfig,
    MqttConfig,
    ServerConfig,
    Setting,
    env_name,
    load_config,
    settings,
    settings_table,
)

__all__ = [
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

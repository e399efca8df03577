"""One ``strata`` process: the roles its configuration names, and a clean stop.

How it works. :class:`StrataServer` opens what the roles need, in order, each
inside the one ``AsyncExitStack`` that closes it again:

* always: the user store (``<data_dir>/users``) and the admin HTTP API;
* ``journal``: the journal (``<data_dir>/journal``, object tier
  ``journal.object_url``) and its RPC server on ``journal.port``;
* ``broker`` without ``journal``: a :class:`~journal.remote.RemoteJournal`
  to ``journal.remote``; with ``journal`` the front ends use the in-process
  journal directly. Front ends (MQTT, Kafka, AMQP) start here as they are
  written; they see a :class:`~journal.service.JournalService` either way.
* ``meta``: until the Raft meta service exists, the meta state is the local
  user store, which every process opens anyway.

:func:`run` adds the signals: the first SIGINT/SIGTERM starts a graceful stop
(``/ready`` turns 503, listeners stop accepting, in-flight requests get
``shutdown_grace`` seconds, the journal fsyncs and checkpoints every stream);
a second one exits at once, which loses nothing acknowledged either, since
an acknowledgement already waited for the fsync policy.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, fields
from importlib.metadata import version

import trio

from frontends.mqtt import Broker, BrokerSettings, SessionStore, serve_mqtt
from journal import Journal, StrataError
from journal.errors import leaf_exceptions
from journal.remote import RemoteJournal
from journal.rpc.server import JournalServer
from journal.service import JournalService
from meta.users import UserStore
from tools.strata.admin import create_app, serve_admin
from tools.strata.config import Config, MqttConfig
from tools.strata.metrics import ProtocolConnections

__all__ = ["VERSION", "Listening", "StrataServer", "run"]

log = logging.getLogger("strata")

VERSION = version("stratamq")  # the installed distribution (pyproject.toml)
REMOTE_CONNECT_TIMEOUT = 60.0  # seconds a broker waits for its journal server at start
REMOTE_REQUEST_TIMEOUT = 30.0  # a journal server that answers nothing for this long is stuck
EXIT_FORCED = 130


@dataclass(slots=True)
class Listening:
    """Where this process listens, filled in as each listener binds (port 0 is resolved)."""

    addresses: dict[str, str] = field(default_factory=dict)


def _say(line: str) -> None:
    print(line, flush=True)  # the listening/ready lines are read by supervisors and tests


class StrataServer:
    """The services of one process, started by :meth:`run` in a nursery."""

    def __init__(self, config: Config, *, say: Callable[[str], None] = _say) -> None:
        self.config = config
        self.listening = Listening()
        self._say = say
        self._stopping = False
        self._journal_server: JournalServer | None = None
        self._remote: RemoteJournal | None = None
        self._admin_bound = False
        self._broker: Broker | None = None
        self._mqtt_bound = False
        self._cancel = trio.CancelScope()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def roles(self) -> tuple[str, ...]:
        return self.config.server.roles

    def ready(self) -> dict[str, bool]:
        """Listener name -> accepting; ``/ready`` is 200 when all are True."""
        state = {"admin": self._admin_bound and not self._stopping}
        if self._journal_server is not None:
            state["journal_rpc"] = self._journal_server.accepting and not self._stopping
        if self._remote is not None:
            state["journal_remote"] = self._remote.connected and not self._stopping
        if self._broker is not None:
            state["mqtt"] = self._mqtt_bound and self._broker.ready and not self._stopping
        return state

    def connections(self) -> dict[str, ProtocolConnections]:
        listeners = {
            "journal_rpc": self._journal_server.statistics() if self._journal_server else None,
            "mqtt": self._broker.statistics() if self._broker else None,
        }
        return {
            name: ProtocolConnections(st.connections_open, st.connections_total, st.protocol_errors)
            for name, st in listeners.items()
            if st is not None
        }

    async def run(
        self, *, task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or :meth:`shutdown`; ``task_status`` gets the addresses."""
        config = self.config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        with self._cancel:
            async with AsyncExitStack() as stack:
                users = stack.enter_context(UserStore.open(data / "users"))
                service = await self._open_service(stack)
                async with trio.open_nursery() as nursery:
                    if self._journal_server is not None:
                        port = await nursery.start(
                            self._journal_server.serve, config.journal.host, config.journal.port
                        )
                        self._listen("journal_rpc", config.journal.host, port)
                    app = create_app(
                        service,
                        users,
                        ready=self.ready,
                        connections=self.connections,
                        mqtt=lambda: self._broker.statistics() if self._broker else None,
                        version=VERSION,
                        roles=self.roles,
                        started_at=time.time(),
                    )
                    if "broker" in self.roles:
                        await self._start_mqtt(stack, service, users, nursery)
                    port = await nursery.start(
                        serve_admin, app, config.admin.host, config.admin.port
                    )
                    self._admin_bound = True
                    self._listen("admin", config.admin.host, port, scheme="http://")
                    if len(users) == 0:
                        self._say(
                            "strata: no users yet: the admin API allows anonymous access from "
                            "loopback only; create the first user with `strata user add NAME`"
                        )
                    self._say(f"strata {VERSION}: ready (roles: {', '.join(self.roles)})")
                    task_status.started(self.listening)

    async def _start_mqtt(
        self,
        stack: AsyncExitStack,
        service: JournalService,
        users: UserStore,
        nursery: trio.Nursery,
    ) -> None:
        mqtt = self.config.mqtt
        store = stack.enter_context(SessionStore.open(self.config.data_path / "mqtt"))
        self._broker = broker = Broker(service, store, users, mqtt_settings(mqtt), version=VERSION)
        await nursery.start(broker.run)
        listeners: list[tuple[str, int, str, ssl.SSLContext | None]] = [
            ("mqtt", mqtt.port, "tcp", None),
            ("mqtt_ws", mqtt.ws_port, "ws", None),
        ]
        if mqtt.tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(mqtt.tls_cert, mqtt.tls_key)
            listeners.append(("mqtt_tls", mqtt.tls_port, "tls", tls))
        for name, port, transport, context in listeners:
            bound = await nursery.start(
                functools.partial(
                    serve_mqtt, broker, mqtt.host, port, transport=transport, ssl_context=context
                )
            )
            self._listen(name, mqtt.host, bound)
        self._mqtt_bound = True

    async def _open_service(self, stack: AsyncExitStack) -> JournalService:
        config = self.config
        if "journal" in self.roles:
            journal = await stack.enter_async_context(
                Journal.open(
                    config.data_path / "journal",
                    config.journal.fsync,
                    fsync_interval_ms=config.journal.fsync_interval_ms,
                    object_url=config.object_url(),
                    upload_concurrency=config.journal.upload_concurrency,
                    cache_bytes=config.journal.cache_bytes,
                    object_timeout=config.journal.object_timeout,
                )
            )
            self._journal_server = JournalServer(journal, name=f"strata {VERSION}")
            return journal
        remote = config.journal.remote
        assert remote is not None, "checked by check_roles"
        self._say(f"strata: connecting to the journal server at {remote}")
        self._remote = await stack.enter_async_context(
            RemoteJournal.connect(
                remote,
                name=f"strata {VERSION} broker",
                connect_timeout=REMOTE_CONNECT_TIMEOUT,
                request_timeout=REMOTE_REQUEST_TIMEOUT,
            )
        )
        return self._remote

    def _listen(self, name: str, host: str, port: int, scheme: str = "") -> None:
        shown = f"[{host}]" if ":" in host else host
        address = f"{scheme}{shown}:{port}"
        self.listening.addresses[name] = address
        self._say(f"strata: {name} listening on {address}")

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish for ``grace`` s, then close all."""
        self._stopping = True
        if self._broker is not None:
            self._broker.shutdown()
        if self._journal_server is not None:
            await self._journal_server.shutdown(grace)
        self._cancel.cancel()


def mqtt_settings(mqtt: MqttConfig) -> BrokerSettings:
    """The broker's settings from ``[mqtt]``: every field of the same name.

    ``allow_anonymous = false`` means "only while there are no users" (None).
    """
    values = {f.name: getattr(mqtt, f.name) for f in fields(BrokerSettings)}
    values["allow_anonymous"] = True if mqtt.allow_anonymous else None
    return BrokerSettings(**values)


def check_roles(config: Config) -> str | None:
    """What is wrong with the combination of roles and journal settings, if anything."""
    roles = config.server.roles
    if "journal" in roles and config.journal.remote is not None:
        return (
            "journal.remote is set but this process runs the journal role: "
            "drop one (--role broker --journal HOST:PORT runs a broker against a remote journal)"
        )
    if "broker" in roles and "journal" not in roles and config.journal.remote is None:
        return "the broker role without the journal role needs --journal HOST:PORT (journal.remote)"
    return None


async def _serve_until_signalled(config: Config) -> None:
    server = StrataServer(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    if server.stopping:
                        print("strata: second signal, exiting now", file=sys.stderr, flush=True)
                        os._exit(EXIT_FORCED)
                    name = signal.Signals(signum).name
                    print(f"strata: {name}, shutting down (again to force)", flush=True)
                    nursery.start_soon(server.shutdown)

            nursery.start_soon(watch)
            await server.run()  # returns once shutdown() has cancelled it
            nursery.cancel_scope.cancel()
    print("strata: stopped", flush=True)


def run(config: Config) -> int:
    """Run the server in the foreground; returns the exit status."""
    problem = check_roles(config)
    if problem is not None:
        print(f"strata: error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_serve_until_signalled, config)
    except BaseExceptionGroup as group:
        failures = group.subgroup((StrataError, OSError))
        if failures is None or failures.split((StrataError, OSError))[1] is not None:
            raise
        for exc in leaf_exceptions(failures):
            print(f"strata: error: {exc}", file=sys.stderr)
        return 1
    except (StrataError, OSError) as exc:  # a data dir in use, a port taken, no journal server
        print(f"strata: error: {exc}", file=sys.stderr)
        return 1
    return 0

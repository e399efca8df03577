"""The MQTT listeners: plain TCP, TLS, and WebSocket (path ``/mqtt``).

Each accepted socket becomes a :class:`~frontends.mqtt.connection.Connection`
after the transport's own handshake (TLS, then the WebSocket upgrade), all
under the broker's connect timeout. A handler never lets an error escape to
the listener: one bad client must not stop the others.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

import trio

from journal.errors import StrataError

from .broker import Broker
from .connection import Connection
from .websocket import accept_websocket

__all__ = ["TRANSPORTS", "serve_mqtt"]

log = logging.getLogger("strata.mqtt")

TRANSPORTS = ("tcp", "tls", "ws")

Wrap = Callable[[trio.abc.Stream], Awaitable[trio.abc.Stream]]


async def serve_mqtt(
    broker: Broker,
    host: str,
    port: int,
    *,
    transport: str = "tcp",
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept MQTT connections on ``host:port``; ``task_status`` gets the bound port."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r} is not one of {TRANSPORTS}")
    if transport == "tls" and ssl_context is None:
        raise ValueError("the tls transport needs an ssl_context")
    settings = broker.settings

    async def handle(stream: trio.SocketStream) -> None:
        if broker.counters.connections_open >= settings.max_connections:
            broker.counters.protocol_errors += 1
            await trio.aclose_forcefully(stream)
            return
        connection_stream: trio.abc.Stream = stream
        try:
            with trio.fail_after(settings.connect_timeout):
                if ssl_context is not None:
                    tls = trio.SSLStream(stream, ssl_context, server_side=True)
                    await tls.do_handshake()
                    connection_stream = tls
                if transport == "ws":
                    connection_stream = await accept_websocket(
                        connection_stream, max_message_size=settings.max_packet_size + 16
                    )
        except (trio.TooSlowError, trio.BrokenResourceError, StrataError, ssl.SSLError) as exc:
            broker.counters.protocol_errors += 1
            log.debug("MQTT %s handshake failed: %s", transport, exc)
            await trio.aclose_forcefully(connection_stream)
            return
        try:
            await Connection(broker, connection_stream).run()
        except Exception:
            log.exception("MQTT connection handler failed")

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)

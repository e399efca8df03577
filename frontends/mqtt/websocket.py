"""MQTT over WebSocket (MQTT spec section 6) as a trio Stream.

How it works. :func:`accept_websocket` reads the HTTP upgrade request with h11
(at most ``MAX_HANDSHAKE_SIZE`` bytes, within ``timeout``) and hands it to
:class:`ServerHandshake`, a sans-I/O checker that answers 101 (selecting the
"mqtt" subprotocol when offered) or an error status. The bytes that followed
the request go to a wsproto ``Connection``, which frames the rest.

:class:`WebSocketStream` makes the connection look like a byte stream, which is
all MQTT asks of it: ``receive_some`` returns each binary fragment's payload as
it arrives (MQTT packets may span messages and messages may hold several
packets), ``send_all`` sends one binary message. It reads from the transport
only when nothing is pending, so pending payload never exceeds one read of at
most ``max_message_size`` bytes, or the bytes that came with the handshake
(messages themselves are streamed, not capped).
The reader answers pings and closes itself, possibly while another task is in
``send_all``, so every transport write goes through one lock. A text message is
refused with close code 1003; framing errors close with wsproto's code. Both
raise :class:`WebSocketProtocolError`. No extensions (permessage-deflate) are
negotiated, so payload size equals wire size.
"""

from __future__ import annotations

import base64
import binascii
import http
from contextlib import suppress
from dataclasses import dataclass
from typing import NoReturn

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from journal.errors import RemoteProtocolError

__all__ = [
    "MAX_HANDSHAKE_SIZE",
    "Accepted",
    "Rejected",
    "ServerHandshake",
    "WebSocketHandshakeError",
    "WebSocketProtocolError",
    "WebSocketStream",
    "accept_websocket",
]

MAX_HANDSHAKE_SIZE = 16 << 10
"""Most bytes read before the upgrade request (and any body) is complete."""

_MAX_RECEIVE = 64 << 10


class WebSocketHandshakeError(RemoteProtocolError):
    """The peer's opening handshake was refused; ``code`` is the HTTP status sent.

    408 means it did not finish in time (nothing was sent then).
    """

    code = 400


class WebSocketProtocolError(RemoteProtocolError):
    """The peer broke WebSocket (or MQTT's use of it); ``code`` is the close code sent."""

    code = CloseReason.PROTOCOL_ERROR


# --- the opening handshake, without I/O ---------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """Send ``response``; ``connection`` already holds the bytes after the request."""

    response: bytes
    connection: Connection
    subprotocol: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Send ``response`` (may be empty) and drop the connection."""

    response: bytes
    status: int
    reason: str


def _http_response(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _reject(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> Rejected:
    extra = [*(headers or []), ("Content-Length", "0"), ("Connection", "close")]
    return Rejected(_http_response(status, extra), status, reason)


def _tokens(request: h11.Request, name: bytes) -> list[str]:
    """Comma-separated values of every ``name`` header (latin-1, so never fails)."""
    return [
        token.strip()
        for header, value in request.headers
        if header == name
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]


class ServerHandshake:
    """The server side of RFC 6455's opening handshake: bytes in, an outcome out.

    Feed bytes with :meth:`receive_data` (``b""`` for end of file) and call
    :meth:`next_outcome` until it returns an :class:`Accepted` or :class:`Rejected`.
    The request line and headers are capped by h11, everything read by ``max_size``.
    """

    def __init__(
        self, *, path: str = "/mqtt", subprotocol: str = "mqtt", max_size: int = MAX_HANDSHAKE_SIZE
    ) -> None:
        self.path = path
        self.subprotocol = subprotocol
        self.max_size = max_size
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_size)
        self._request: h11.Request | None = None
        self._received = 0
        self._outcome: Accepted | Rejected | None = None

    def receive_data(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.max_size and self._outcome is None:
            self._outcome = _reject(431, f"handshake longer than {self.max_size} bytes")
        self._h11.receive_data(data)

    def next_outcome(self) -> Accepted | Rejected | None:
        """The handshake's result, or None while more bytes are needed."""
        while self._outcome is None:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._outcome = _reject(exc.error_status_hint, f"bad HTTP request: {exc}")
                break
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Request):
                self._request = event
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                assert self._request is not None
                self._outcome = self._check(self._request)
            elif isinstance(event, h11.ConnectionClosed):
                self._outcome = Rejected(b"", 400, "peer closed before sending a request")
            # h11.Data: a body on an upgrade request is read (within max_size) and ignored.
        return self._outcome

    def _check(self, request: h11.Request) -> Accepted | Rejected:
        target = request.target.decode("ascii", "replace")
        if target.partition("?")[0] != self.path:
            return _reject(404, f"no WebSocket endpoint at {target!r}")
        if request.method != b"GET" or request.http_version != b"1.1":
            return _reject(400, "a WebSocket upgrade is an HTTP/1.1 GET")
        if "upgrade" not in {t.lower() for t in _tokens(request, b"connection")}:
            return _reject(400, "missing 'Connection: Upgrade'")
        if "websocket" not in {t.lower() for t in _tokens(request, b"upgrade")}:
            return _reject(400, "missing 'Upgrade: websocket'")
        if _tokens(request, b"sec-websocket-version") != ["13"]:
            return _reject(426, "WebSocket version is not 13", [("Sec-WebSocket-Version", "13")])
        keys = _tokens(request, b"sec-websocket-key")
        try:
            valid_key = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
        except (binascii.Error, ValueError):
            valid_key = False
        if not valid_key:
            return _reject(400, "missing or malformed Sec-WebSocket-Key")
        offered = _tokens(request, b"sec-websocket-protocol")
        # MQTT 6.0: the server must select "mqtt"; a client offering nothing is let in.
        if offered and self.subprotocol not in offered:
            return _reject(400, f"subprotocol {self.subprotocol!r} not offered: {offered}")
        selected = self.subprotocol if offered else None
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(keys[0].encode("ascii")).decode()),
        ]
        if selected is not None:
            headers.append(("Sec-WebSocket-Protocol", selected))
        trailing, _ = self._h11.trailing_data
        connection = Connection(ConnectionType.SERVER, trailing_data=trailing)
        return Accepted(_http_response(101, headers), connection, selected)


# --- the stream ---------------------------------------------------------------


class WebSocketStream(trio.abc.Stream):
    """A trio Stream whose bytes travel in WebSocket binary messages.

    One task may receive while another sends; two tasks in ``send_all`` (or two
    in ``receive_some``) at once raise :class:`trio.BusyResourceError`, as trio's
    own streams do. Like them, after a cancelled ``send_all`` only ``aclose`` is safe.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        connection: Connection,
        *,
        subprotocol: str | None = None,
        max_message_size: int = 1 << 20,
    ) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self.transport = transport
        self.subprotocol = subprotocol
        self._ws = connection
        self._receive_size = min(max_message_size, _MAX_RECEIVE)
        self._write_lock = trio.Lock()  # every transport write: data, pongs, closes
        self._pending = bytearray()
        self._sending = False
        self._receiving = False
        self._peer_closed = False  # close handshake done (or transport EOF)
        self._broken = False  # a protocol error was raised
        self._closed = False  # aclose() called

    async def _reply(self, event: Event) -> None:
        """Send a pong unless a close went out meanwhile (from another task)."""
        async with self._write_lock:
            if self._ws.state is ConnectionState.OPEN:
                await self.transport.send_all(self._ws.send(event))

    # -- sending --

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message (nothing at all if empty)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            async with self._write_lock:
                if self._closed:
                    raise trio.ClosedResourceError("WebSocketStream was closed")
                if self._ws.state is not ConnectionState.OPEN:
                    raise trio.BrokenResourceError(f"WebSocket is {self._ws.state.name}")
                if data:
                    frame = self._ws.send(BytesMessage(data=bytes(data)))
                    await self.transport.send_all(frame)
                else:
                    await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        if self._closed:
            raise trio.ClosedResourceError("WebSocketStream was closed")
        await self.transport.wait_send_all_might_not_block()

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or answer) the closing handshake; a no-op once a close was sent.

        The transport stays open: keep receiving until ``b""`` to see the reply.
        """
        async with self._write_lock:
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self.transport.send_all(self._ws.send(CloseConnection(code, reason)))
            else:
                await trio.lowlevel.checkpoint()

    # -- receiving --

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Payload bytes of binary messages as they arrive; ``b""`` once the peer closed."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("WebSocketStream was closed")
            if self._broken:
                raise trio.BrokenResourceError("WebSocket failed with a protocol error")
            await self._handle_events()  # frames that came with the handshake
            if self._pending or self._peer_closed:
                await trio.lowlevel.checkpoint()
            while not self._pending and not self._peer_closed:
                data = await self.transport.receive_some(self._receive_size)
                # b"" is EOF without a close frame: wsproto reports close code 1006.
                self._ws.receive_data(bytes(data) or None)
                await self._handle_events()
            n = len(self._pending) if max_bytes is None else min(max_bytes, len(self._pending))
            chunk = bytes(self._pending[:n])
            del self._pending[:n]
            return chunk
        finally:
            self._receiving = False

    async def _handle_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._pending += event.data
            elif isinstance(event, TextMessage):
                await self._fail(CloseReason.UNSUPPORTED_DATA, "MQTT is sent in binary messages")
            elif isinstance(event, Ping):
                await self._reply(event.response())
            elif isinstance(event, CloseConnection):
                state = self._ws.state
                if state is ConnectionState.REMOTE_CLOSING:  # the peer closed first
                    self._peer_closed = True
                    await self.send_close(event.code, event.reason or "")
                elif state is ConnectionState.CLOSED:  # reply to our close, or EOF
                    self._peer_closed = True
                else:  # still OPEN or LOCAL_CLOSING: wsproto found a framing error
                    await self._fail(event.code, event.reason or "bad WebSocket frame")
            # Pong: nothing to do; we send no pings.

    async def _fail(self, code: int, reason: str) -> NoReturn:
        self._broken = True
        self._pending.clear()
        # The protocol error is the news, not a transport that died meanwhile.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send_close(code, reason)
        raise WebSocketProtocolError(reason, code=code)

    # -- closing --

    async def aclose(self) -> None:
        """Send close 1000 if still open, then close the transport.

        The close frame waits for a write in progress; cancel to give up on it.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            await self.send_close(CloseReason.NORMAL_CLOSURE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.transport.aclose()


async def accept_websocket(
    stream: trio.abc.Stream,
    *,
    path: str = "/mqtt",
    subprotocol: str = "mqtt",
    timeout: float = 10.0,  # noqa: ASYNC109 -- bounds the handshake alone, not the session
    max_message_size: int = 1 << 20,
) -> WebSocketStream:
    """Run the HTTP upgrade handshake on ``stream`` as the server.

    On refusal the error response is sent and :class:`WebSocketHandshakeError`
    raised; ``stream`` is left open either way, as the caller owns it until a
    :class:`WebSocketStream` is returned. Transport errors propagate unchanged.
    """
    handshake = ServerHandshake(path=path, subprotocol=subprotocol)
    try:
        with trio.fail_after(timeout):
            while (outcome := handshake.next_outcome()) is None:
                handshake.receive_data(bytes(await stream.receive_some(MAX_HANDSHAKE_SIZE)))
            if outcome.response:
                await stream.send_all(outcome.response)
    except trio.TooSlowError:
        raise WebSocketHandshakeError(
            f"no WebSocket handshake within {timeout} s", code=408
        ) from None
    if isinstance(outcome, Rejected):
        raise WebSocketHandshakeError(outcome.reason, code=outcome.status)
    return WebSocketStream(
        stream,
        outcome.connection,
        subprotocol=outcome.subprotocol,
        max_message_size=max_message_size,
    )

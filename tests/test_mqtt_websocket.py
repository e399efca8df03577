"""MQTT over WebSocket: the handshake, the byte stream, pings, closes, timeouts.

The client is a raw wsproto client (:class:`WsClient`) over real sockets on
127.0.0.1; refusals, timeouts, concurrency and fuzzing use trio's memory
streams so they are exact and need no clock.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from frontends.mqtt.codec import NeedData, PacketReader, encode
from frontends.mqtt.packets import Connect, Packet, Pingreq, Publish
from frontends.mqtt.websocket import (
    MAX_HANDSHAKE_SIZE,
    Accepted,
    Rejected,
    ServerHandshake,
    WebSocketHandshakeError,
    WebSocketProtocolError,
    WebSocketStream,
    accept_websocket,
)

KEY = base64.b64encode(b"0123456789abcdef").decode()
HUGE_HEADER = "X-Filler: " + "y" * MAX_HANDSHAKE_SIZE + "\r\n"


def upgrade_request(
    target: str = "/mqtt", *, protocols: str | None = "mqtt", extra: str = ""
) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class WsClient:
    """A wsproto client over a trio stream, one event at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()

    async def handshake(
        self, target: str = "/mqtt", subprotocols: tuple[str, ...] = ("mqtt",)
    ) -> Event:
        await self.send(Request(host="localhost", target=target, subprotocols=list(subprotocols)))
        return await self.next_event()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        while not self._events:
            data = await self.stream.receive_some()
            self.ws.receive_data(bytes(data) or None)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    async def receive_bytes(self, n: int) -> bytes:
        """Payload of binary messages until ``n`` bytes came (TCP may split them)."""
        got = bytearray()
        while len(got) < n:
            event = await self.next_event()
            assert isinstance(event, BytesMessage), event
            got += event.data
        return bytes(got)


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """A connected (server, client) pair of sockets on 127.0.0.1."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    async with server, client:
        yield server, client


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[WebSocketStream, WsClient]]:
    """A handshaken (server stream, client) pair over real sockets."""
    async with tcp_pair() as (server_sock, client_sock):
        client = WsClient(client_sock)
        result: list[WebSocketStream] = []

        async def serve() -> None:
            result.append(await accept_websocket(server_sock))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            accepted = await client.handshake()
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "mqtt"
        (server,) = result
        assert server.subprotocol == "mqtt"
        yield server, client


async def echo(stream: WebSocketStream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def refusal(request: bytes) -> tuple[bytes, WebSocketHandshakeError]:
    """The response and the error when ``request`` (then EOF) is refused."""
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(request)
    await client.send_eof()
    with pytest.raises(WebSocketHandshakeError) as info:
        await accept_websocket(server)
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        response += await client.receive_some()
    return response, info.value


# --- handshake ----------------------------------------------------------------


async def test_echo_both_ways() -> None:
    async with connected() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(echo, server)
        packet = encode(Publish(topic="a/b", payload=b"\x00\xff" * 100), 4)
        await client.send(BytesMessage(data=packet))
        assert await client.receive_bytes(len(packet)) == packet
        await client.send(CloseConnection(code=1000))
        assert await client.next_event() == CloseConnection(code=1000, reason="")


async def test_send_all_is_one_binary_message() -> None:
    async with connected() as (server, client):
        await server.send_all(b"abc")
        await server.send_all(memoryview(b"defg"))
        await server.send_all(b"")  # nothing on the wire
        assert await client.next_event() == BytesMessage(data=b"abc")
        assert await client.next_event() == BytesMessage(data=b"defg")
        await server.aclose()
        assert await client.next_event() == CloseConnection(code=1000, reason="")


async def test_packets_split_and_joined_across_messages() -> None:
    connect = encode(Connect(client_id="ws-client"), 4)
    publish = encode(Publish(topic="t", payload=b"x" * 300), 4)
    ping = encode(Pingreq(), 4)
    async with connected() as (server, client):
        # CONNECT in three messages, the middle one fragmented; then three packets in one.
        await client.send(BytesMessage(data=connect[:3]))
        await client.send(BytesMessage(data=connect[3:7], message_finished=False))
        await client.send(BytesMessage(data=connect[7:], message_finished=True))
        await client.send(BytesMessage(data=publish + ping + ping))
        reader = PacketReader()
        packets: list[Packet] = []
        while len(packets) < 4:
            reader.receive_data(await server.receive_some(50))
            while not isinstance(packet := reader.next_packet(), NeedData):
                packets.append(packet)
        assert packets == [
            Connect(client_id="ws-client"),
            Publish(topic="t", payload=b"x" * 300),
            Pingreq(),
            Pingreq(),
        ]


async def test_wrong_path_gets_404() -> None:
    async with tcp_pair() as (server_sock, client_sock):
        client = WsClient(client_sock)

        async def refused() -> None:
            with pytest.raises(WebSocketHandshakeError) as info:
                await accept_websocket(server_sock)
            assert info.value.code == 404

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refused)
            event = await client.handshake("/other")
        assert isinstance(event, RejectConnection)
        assert event.status_code == 404


async def test_no_subprotocol_offered_is_accepted_without_one() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(upgrade_request(protocols=None))
    stream = await accept_websocket(server)
    assert stream.subprotocol is None
    response = await client.receive_some()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-protocol" not in response.lower()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400, id="garbage"),
        pytest.param(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="plain-http"),
        pytest.param(upgrade_request(protocols="mqttv3.1, wamp"), 400, id="no-mqtt-offered"),
        pytest.param(upgrade_request("/ws"), 404, id="wrong-path"),
        pytest.param(upgrade_request().replace(b"GET", b"PUT"), 400, id="not-get"),
        pytest.param(upgrade_request().replace(b"13", b"8"), 426, id="old-version"),
        pytest.param(upgrade_request().replace(KEY.encode(), b"short"), 400, id="bad-key"),
        pytest.param(upgrade_request(extra=HUGE_HEADER), 431, id="huge"),
        pytest.param(upgrade_request()[:30], 400, id="truncated"),
    ],
)
async def test_refusals(request_bytes: bytes, status: int) -> None:
    response, error = await refusal(request_bytes)
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert error.code == status


async def test_eof_before_request_sends_nothing() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_eof()
    with pytest.raises(WebSocketHandshakeError):
        await accept_websocket(server)


async def test_handshake_times_out(autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(upgrade_request()[:40])  # and then nothing
    with pytest.raises(WebSocketHandshakeError) as info:
        await accept_websocket(server, timeout=7)
    assert info.value.code == 408
    assert trio.current_time() == pytest.approx(7)


async def test_frames_sent_with_the_request_are_kept() -> None:
    client, server = trio.testing.memory_stream_pair()
    # A pipelining client sends its first frame in the same write as the request.
    frame = Connection(ConnectionType.CLIENT).send(BytesMessage(data=b"hi"))
    await client.send_all(upgrade_request() + frame)
    stream = await accept_websocket(server)
    assert await stream.receive_some() == b"hi"


def test_handshake_one_byte_at_a_time() -> None:
    handshake = ServerHandshake()
    request = upgrade_request()
    outcomes = []
    for i in range(len(request)):
        handshake.receive_data(request[i : i + 1])
        outcomes.append(handshake.next_outcome())
    assert outcomes[:-1] == [None] * (len(request) - 1)
    assert isinstance(outcomes[-1], Accepted)
    # The accept token for the RFC 6455 example nonce.
    handshake = ServerHandshake()
    handshake.receive_data(upgrade_request().replace(KEY.encode(), b"dGhlIHNhbXBsZSBub25jZQ=="))
    outcome = handshake.next_outcome()
    assert isinstance(outcome, Accepted)
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in outcome.response


# --- data path ----------------------------------------------------------------


async def test_text_message_closes_with_1003() -> None:
    async with connected() as (server, client):
        await client.send(TextMessage(data="{}"))
        with pytest.raises(WebSocketProtocolError) as info:
            await server.receive_some()
        assert info.value.code == 1003
        event = await client.next_event()
        assert isinstance(event, CloseConnection)
        assert event.code == 1003
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()


async def test_ping_gets_pong_while_data_flows() -> None:
    async with connected() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(echo, server)
        await client.send(Ping(payload=b"are you there"))
        assert await client.next_event() == Pong(payload=b"are you there")
        await client.send(BytesMessage(data=b"\xc0\x00"))
        assert await client.receive_bytes(2) == b"\xc0\x00"
        await client.send(CloseConnection(code=1000))
        assert isinstance(await client.next_event(), CloseConnection)


async def test_peer_close_is_answered_and_reads_as_eof() -> None:
    async with connected() as (server, client):
        await client.send(BytesMessage(data=b"last"))
        await client.send(CloseConnection(code=1001, reason="going away"))
        assert await server.receive_some() == b"last"
        assert await server.receive_some() == b""
        assert await server.receive_some() == b""
        assert await client.next_event() == CloseConnection(code=1001, reason="going away")
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"too late")


async def test_transport_eof_without_close_reads_as_eof() -> None:
    async with connected() as (server, client):
        assert isinstance(client.stream, trio.SocketStream)
        await client.stream.send_eof()
        assert await server.receive_some() == b""


async def test_our_close_then_peer_reply() -> None:
    async with connected() as (server, client):
        await server.send_close(1000, "bye")
        assert await client.next_event() == CloseConnection(code=1000, reason="bye")
        await client.send(CloseConnection(code=1000, reason="bye"))
        assert await server.receive_some() == b""
        await server.aclose()
        await server.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await server.send_all(b"x")


async def test_receive_some_respects_max_bytes() -> None:
    async with connected() as (server, client):
        await client.send(BytesMessage(data=b"0123456789"))
        got = b""
        while len(got) < 10:
            chunk = await server.receive_some(3)
            assert 1 <= len(chunk) <= 3
            got += chunk
        assert got == b"0123456789"


async def accepted_lockstep() -> tuple[WebSocketStream, WsClient]:
    """A server stream over lockstep streams: every write waits for the reader."""
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    client = WsClient(client_stream)
    result: list[WebSocketStream] = []

    async def serve() -> None:
        result.append(await accept_websocket(server_stream))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        assert isinstance(await client.handshake(), AcceptConnection)
    return result[0], client


async def test_reader_and_writer_tasks_share_the_transport() -> None:
    # lockstep streams raise BusyResourceError on overlapping writes: the
    # pongs the reader sends must queue behind the writer's messages.
    server, client = await accepted_lockstep()
    n = 20

    async def writer() -> None:
        for i in range(n):
            await server.send_all(b"%d" % i)

    async def reader() -> None:
        assert await server.receive_some() == b""

    async def pinger() -> None:
        for i in range(n):
            await client.send(Ping(payload=b"%d" % i))

    events: list[Event] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        nursery.start_soon(reader)
        nursery.start_soon(pinger)
        while len(events) < 2 * n:
            events.append(await client.next_event())
        await client.send(CloseConnection(code=1000))
        assert isinstance(await client.next_event(), CloseConnection)
    assert [e for e in events if isinstance(e, Pong)] == [Pong(b"%d" % i) for i in range(n)]
    assert [e for e in events if isinstance(e, BytesMessage)] == [
        BytesMessage(b"%d" % i) for i in range(n)
    ]


async def test_two_senders_conflict() -> None:
    server, _client = await accepted_lockstep()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, b"first")  # blocks: nobody reads
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.send_all(b"second")
        nursery.cancel_scope.cancel()


async def test_pending_payload_is_bounded() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(upgrade_request())
    stream = await accept_websocket(server_stream, max_message_size=1000)
    payload = bytes(range(256)) * 256
    await client_stream.send_all(Connection(ConnectionType.CLIENT).send(BytesMessage(payload)))
    got = bytearray()
    while len(got) < len(payload):
        chunk = await stream.receive_some()
        assert 0 < len(chunk) <= 1000
        got += chunk
    assert got == payload


# --- fuzzing ------------------------------------------------------------------

requests = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda cut, junk: upgrade_request()[:cut] + junk, st.integers(0, 250), st.binary()),
    st.builds(
        lambda i, b: (lambda r: r[:i] + bytes([b]) + r[i + 1 :])(upgrade_request()),
        st.integers(0, 200),
        st.integers(0, 255),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests, chunks=st.lists(st.integers(1, 64), max_size=8))
def test_arbitrary_handshake_bytes_succeed_or_refuse(data: bytes, chunks: list[int]) -> None:
    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        rest = data
        for size in chunks:
            await client.send_all(rest[:size])
            rest = rest[size:]
        await client.send_all(rest)
        await client.send_eof()
        code = 101
        try:
            await accept_websocket(server, timeout=5)
        except WebSocketHandshakeError as exc:
            code = exc.code
        assert code in {101, 400, 404, 426, 431}

    trio.run(main)


@settings(max_examples=200, deadline=None)
@given(frames=st.binary(max_size=400))
def test_arbitrary_frames_read_or_fail_cleanly(frames: bytes) -> None:
    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        await client.send_all(upgrade_request() + frames)
        await client.send_eof()
        stream = await accept_websocket(server)
        code = 1000
        try:
            while await stream.receive_some():
                pass
        except WebSocketProtocolError as exc:
            code = exc.code
        assert 1000 <= code < 5000

    trio.run(main)


def test_eof_alone_is_rejected_without_a_response() -> None:
    handshake = ServerHandshake()
    handshake.receive_data(b"")
    outcome = handshake.next_outcome()
    assert isinstance(outcome, Rejected)
    assert outcome.response == b""

"""Bad bytes over a real socket: that connection ends, the broker and everyone else go on.

One server for the module. Each case opens a raw socket, sends something a
correct client never would, and checks what the spec asks: a 5.0 connection
gets a DISCONNECT (or a CONNACK, before CONNECT completed) with the reason
code, a 3.1.1 connection is just closed. Meanwhile a paho subscriber and
publisher connected before the case must still exchange a message, and the
``strata_protocol_errors_total{protocol=mqtt}`` counter must grow.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_support import (
    V3,
    V5,
    Client,
    metric,
    mqtt_port,
    start_mqtt_server,
    unique,
    wait_for,
)
from strata_process import StrataProcess

V5_LEVEL, V3_LEVEL = 5, 4
DISCONNECT, CONNACK = 0xE0, 0x20


# -- raw packets ------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(header: int, body: bytes) -> bytes:
    return bytes([header]) + _varint(len(body)) + body


def _str(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


def connect_packet(level: int, client_id: str, *, name: bytes = b"MQTT") -> bytes:
    props = b"\x00" if level == V5_LEVEL else b""
    body = _str(name) + bytes([level, 0x02]) + struct.pack(">H", 60) + props
    return _packet(0x10, body + _str(client_id.encode()))


def publish_packet(level: int, topic: bytes, payload: bytes = b"x", props: bytes = b"") -> bytes:
    """A QoS 0 PUBLISH with raw topic bytes (and raw property bytes for 5.0)."""
    p = _varint(len(props)) + props if level == V5_LEVEL else b""
    return _packet(0x30, _str(topic) + p + payload)


def _split(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of each whole packet in ``data``."""
    out = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        length, shift, pos = 0, 0, pos + 1
        while pos < len(data):
            byte = data[pos]
            pos += 1
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append((header, data[pos : pos + length]))
        pos += length
    return out


class Raw:
    """A raw MQTT connection; :meth:`until_closed` reads everything until the server closes."""

    def __init__(self, port: int, level: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        if level is not None:
            self.sock.sendall(connect_packet(level, unique("raw")))
            ack = self.read_exactly(4 if level == V3_LEVEL else 3)
            assert ack[0] == CONNACK, ack
            if level == V5_LEVEL:  # the rest of the CONNACK: its properties
                self.read_exactly(ack[1] - 1)

    def read_exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, f"closed after {len(data)} of {n} bytes"
            data += chunk
        return bytes(data)

    def send(self, data: bytes) -> None:
        # the server may close before it read everything
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def until_closed(self, timeout: float = 15.0) -> bytes:
        data = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return bytes(data)
            except TimeoutError:
                raise AssertionError(f"server did not close within {timeout} s") from None
            if not chunk:
                return bytes(data)
            data += chunk

    def disconnect_code(self) -> int | None:
        """The reason code of the server's DISCONNECT (or refused CONNACK), None if none came."""
        for header, body in _split(self.until_closed()):
            if header == DISCONNECT:
                return body[0] if body else 0
            if header == CONNACK and len(body) >= 2:
                return body[1]
        return None

    def close(self) -> None:
        self.sock.close()


# -- the shared server and the bystanders -------------------------------------------


class Bystanders:
    """A connected subscriber and publisher that must keep working through every case."""

    def __init__(self, port: int) -> None:
        self.topic = unique("bystander")
        self.sub = Client(port, version=V5)
        self.sub.subscribe(self.topic, 1)
        self.pub = Client(port, version=V3)

    def check(self) -> None:
        payload = unique("alive").encode()
        self.pub.publish(self.topic, payload, 1)
        wait_for(
            lambda: any(m.payload == payload for m in self.sub.messages()), what=payload.decode()
        )

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


def protocol_errors(server: StrataProcess) -> float:
    return metric(server, "strata_protocol_errors_total", protocol="mqtt")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    with start_mqtt_server(tmp_path_factory.mktemp("bad") / "data") as process:
        yield process


@pytest.fixture(scope="module")
def port(server: StrataProcess) -> int:
    return mqtt_port(server)


@pytest.fixture(scope="module")
def bystanders(port: int) -> Iterator[Bystanders]:
    b = Bystanders(port)
    yield b
    b.close()


@pytest.fixture
def counted(server: StrataProcess, bystanders: Bystanders) -> Iterator[None]:
    """The case must count a protocol error and leave the bystanders working."""
    bystanders.check()
    before = protocol_errors(server)
    yield
    wait_for(lambda: protocol_errors(server) > before, what="protocol error counted")
    bystanders.check()
    assert server.proc.poll() is None


# -- before CONNECT -----------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [b"\xff\x00", b"\x00\x00", b"\xc0\x00", b"\x30\x05\x00\x01ax\x00"],
    ids=["garbage-first-byte", "packet-type-0", "pingreq-first", "publish-first"],
)
@pytest.mark.usefixtures("counted")
def test_anything_but_connect_first_is_closed(port: int, first: bytes) -> None:
    raw = Raw(port)
    raw.send(first)
    data = raw.until_closed()
    # no version is known yet, so there is no one to tell: no CONNACK with success
    assert not any(h == CONNACK and body[1:2] == b"\x00" for h, body in _split(data))
    raw.close()


@pytest.mark.usefixtures("counted")
def test_unknown_protocol_level_gets_connack_1(port: int) -> None:
    raw = Raw(port)
    raw.send(connect_packet(7, unique("lvl")))
    assert raw.until_closed() == b"\x20\x02\x00\x01"
    raw.close()


@pytest.mark.usefixtures("counted")
def test_wrong_protocol_name_is_refused(port: int) -> None:
    raw = Raw(port)
    raw.send(connect_packet(V5_LEVEL, unique("name"), name=b"MQTX"))
    data = raw.until_closed()
    assert not any(h == CONNACK and body[1:2] == b"\x00" for h, body in _split(data))
    raw.close()


# -- after a 5.0 CONNECT: DISCONNECT with the reason code ------------------------------

V5_CASES = {
    "remaining-length-5-bytes": (b"\x30\xff\xff\xff\xff\x7f", 0x81),
    "remaining-length-not-minimal": (b"\xc0\x80\x00", 0x81),
    "invalid-utf8-topic": (publish_packet(V5_LEVEL, b"a/\xff\xfe"), 0x81),
    "nul-in-topic": (publish_packet(V5_LEVEL, b"a/\x00b"), 0x81),
    "wildcard-in-publish-topic": (publish_packet(V5_LEVEL, b"a/+/b"), 0x90),
    "hash-in-publish-topic": (publish_packet(V5_LEVEL, b"a/#"), 0x90),
    "second-connect": (connect_packet(V5_LEVEL, "again"), 0x82),
    "qos-3": (_packet(0x36, _str(b"a") + b"\x00\x01\x00x"), 0x81),
    "pingreq-reserved-flags": (b"\xc1\x00", 0x81),
    "subscribe-reserved-flags": (_packet(0x80, b"\x00\x01\x00" + _str(b"a") + b"\x01"), 0x81),
    "packet-type-0": (b"\x00\x00", 0x81),
    "topic-alias-above-maximum": (publish_packet(V5_LEVEL, b"a", props=b"\x23\xff\xff"), 0x94),
    "unknown-topic-alias": (publish_packet(V5_LEVEL, b"", props=b"\x23\x00\x05"), 0x82),
    "connack-from-client": (b"\x20\x03\x00\x00\x00", 0x82),
}


@pytest.mark.parametrize(("data", "code"), list(V5_CASES.values()), ids=list(V5_CASES))
@pytest.mark.usefixtures("counted")
def test_v5_protocol_error_gets_disconnect_with_reason(port: int, data: bytes, code: int) -> None:
    raw = Raw(port, V5_LEVEL)
    raw.send(data)
    assert raw.disconnect_code() == code
    raw.close()


@pytest.mark.usefixtures("counted")
def test_v5_topic_alias_0(port: int) -> None:
    """MQTT 5 forbids alias 0: Topic Alias invalid (spec 3.3.2.3.4), as Mosquitto answers."""
    raw = Raw(port, V5_LEVEL)
    raw.send(publish_packet(V5_LEVEL, b"a", props=b"\x23\x00\x00"))
    assert raw.disconnect_code() == 0x94
    raw.close()


V3_CASES = {
    "invalid-utf8-topic": publish_packet(V3_LEVEL, b"a/\xff"),
    "nul-in-topic": publish_packet(V3_LEVEL, b"\x00"),
    "wildcard-in-publish-topic": publish_packet(V3_LEVEL, b"a/+"),
    "second-connect": connect_packet(V3_LEVEL, "again"),
    "qos-3": _packet(0x36, _str(b"a") + b"\x00\x01x"),
    "remaining-length-5-bytes": b"\x30\xff\xff\xff\xff\x7f",
    "reserved-flags": b"\xc1\x00",
    "auth-in-3.1.1": b"\xf0\x00",
}


@pytest.mark.parametrize("data", list(V3_CASES.values()), ids=list(V3_CASES))
@pytest.mark.usefixtures("counted")
def test_v3_protocol_error_just_closes(port: int, data: bytes) -> None:
    raw = Raw(port, V3_LEVEL)
    raw.send(data)
    assert raw.until_closed() == b""  # 3.1.1 has no DISCONNECT from the server
    raw.close()


# -- ends and floods ------------------------------------------------------------------


@pytest.mark.parametrize("level", [V3_LEVEL, V5_LEVEL], ids=["v311", "v5"])
def test_truncated_packet_then_close(port: int, bystanders: Bystanders, level: int) -> None:
    raw = Raw(port, level)
    raw.send(publish_packet(level, b"trunc", b"y" * 100)[:20])
    raw.sock.shutdown(socket.SHUT_WR)
    raw.until_closed()
    raw.close()
    bystanders.check()


def test_pingreq_flood_is_answered_and_others_keep_working(
    port: int, bystanders: Bystanders
) -> None:
    n = 100_000
    raw = Raw(port, V5_LEVEL)
    raw.sock.sendall(b"\xc0\x00" * (n // 2))
    bystanders.check()
    raw.sock.sendall(b"\xc0\x00" * (n // 2))
    answers = raw.read_exactly(2 * n)
    assert answers == b"\xd0\x00" * n
    bystanders.check()
    raw.close()


def test_qos0_publish_flood_keeps_the_server_serving(port: int, bystanders: Bystanders) -> None:
    n = 20_000
    topic = unique("flood")
    with Client(port, version=V5) as flood_sub:
        flood_sub.subscribe(topic, 0)
        raw = Raw(port, V5_LEVEL)
        raw.sock.sendall(publish_packet(V5_LEVEL, topic.encode(), b"z" * 32) * n)
        raw.sock.sendall(b"\xc0\x00")
        assert raw.read_exactly(2) == b"\xd0\x00"  # everything before it was handled
        bystanders.check()
        wait_for(lambda: flood_sub.messages(topic), what="some of the flood delivered")
        raw.close()
    bystanders.check()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(garbage=st.binary(min_size=1, max_size=300), level=st.sampled_from([V3_LEVEL, V5_LEVEL]))
def test_random_bytes_after_connect_never_crash_the_server(
    server: StrataProcess, port: int, bystanders: Bystanders, garbage: bytes, level: int
) -> None:
    raw = Raw(port, level)
    raw.send(garbage)
    with contextlib.suppress(OSError):
        raw.sock.shutdown(socket.SHUT_WR)  # the end of input: a partial packet ends here
    raw.until_closed()
    raw.close()
    bystanders.check()
    assert server.proc.poll() is None


# -- servers with small limits ---------------------------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    env = {"STRATA_MQTT_MAX_PACKET_SIZE": "1024", "STRATA_MQTT_CONNECT_TIMEOUT": "1"}
    with start_mqtt_server(tmp_path_factory.mktemp("strict") / "data", env=env) as process:
        yield process


@pytest.mark.parametrize("level", [V3_LEVEL, V5_LEVEL], ids=["v311", "v5"])
def test_oversize_packet_is_packet_too_large(strict: StrataProcess, level: int) -> None:
    port = mqtt_port(strict)
    before = protocol_errors(strict)
    with Client(port, version=V3) as other:
        topic = unique("small")
        other.subscribe(topic, 1)
        raw = Raw(port, level)
        raw.send(publish_packet(level, b"big", b"x" * 2000))
        data = raw.until_closed()
        packets = _split(data)
        if level == V5_LEVEL:
            assert packets
            assert packets[0][0] == DISCONNECT
            assert packets[0][1][0] == 0x95
        else:
            assert data == b""
        raw.close()
        other.publish(topic, b"x" * 900, 1)  # under the limit: fine
        other.expect(1, topic)
    assert protocol_errors(strict) > before


def test_silent_connection_closed_after_connect_timeout(strict: StrataProcess) -> None:
    raw = Raw(mqtt_port(strict))
    started = time.monotonic()
    assert raw.until_closed(timeout=15) == b""
    assert time.monotonic() - started < 8  # the 1 s timeout, not the 10 s default
    raw.close()


def test_server_survived_the_module(server: StrataProcess, bystanders: Bystanders) -> None:
    bystanders.check()
    assert server.proc.poll() is None
    assert httpx.get(f"{server.admin}/health", timeout=20).status_code == 200

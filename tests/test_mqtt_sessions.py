"""MQTT connections and sessions against a real ``strata start``, with real paho clients.

* CONNECT/CONNACK: session present across clean / persistent reconnects,
  subscriptions and offline QoS 1 messages of a persistent session, clean start
  discarding it, v5 session expiry (after the interval; set to 0 on DISCONNECT);
* keep-alive (1.5x, v5 DISCONNECT 0x8D first), PINGREQ/PINGRESP, Server Keep Alive;
* client id assignment, user name and password against the user store;
* wills: on a dropped connection (QoS, retain, v5 properties), not on a normal
  DISCONNECT, on v5 DISCONNECT 0x04, will delay cancelled by a reconnect;
* session takeover (v5 DISCONNECT 0x8E), request/response information and the
  other v5 CONNACK properties;
* ``$SYS/broker/...`` updated periodically and hidden from ``#``; ``/metrics``.

Most tests share one server per module (every client id and topic is unique);
tests that need other settings (users, keep alive ceiling) start their own.
Exact return codes and timing use :class:`RawClient`: a socket and the
project's codec.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_support import (
    V3,
    V5,
    Client,
    metric,
    mqtt_port,
    paho_properties,
    start_mqtt_server,
    unique,
    wait_for,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from strata_process import StrataProcess

from frontends.mqtt import (
    NEED_DATA,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Pingreq,
    Pingresp,
    Properties,
    Suback,
    Subscribe,
    Subscription,
    Will,
    encode,
)

VERSIONS = pytest.mark.parametrize("version", [V3, V5], ids=["v3", "v5"])
USER = "sensor-user"
PASSWORD = "correct horse battery"


# -- a raw client: a socket and the project's codec ------------------------------------


class RawClient:
    """One MQTT connection spoken with ``frontends.mqtt``'s codec, for exact checks."""

    TIMEOUT = object()  # :meth:`receive` found nothing within its timeout

    def __init__(self, port: int, version: int) -> None:
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = PacketReader(version)

    def send(self, packet: Packet | bytes) -> None:
        self.sock.sendall(packet if isinstance(packet, bytes) else encode(packet, self.version))

    def receive(self, timeout: float = 10.0) -> Packet | object | None:
        """The next packet; None at EOF; :attr:`TIMEOUT` if nothing came in ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.TIMEOUT
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return self.TIMEOUT
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.reader.receive_data(data)

    def connect(self, connect: Connect | bytes) -> Connack:
        self.send(connect)
        ack = self.receive()
        assert isinstance(ack, Connack), ack
        return ack

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_user(process: StrataProcess, name: str = USER, password: str = PASSWORD) -> None:
    with process.http() as http:
        response = http.post("/api/v1/users", json={"name": name, "password": password})
        assert response.status_code == 201, response.text


def after(seconds: float) -> None:
    """Let ``seconds`` of the server's clock pass (polled, for timers of the server)."""
    deadline = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= deadline, timeout=seconds + 5, what=f"{seconds} s")


def persistent(version: int) -> dict[str, object]:
    """Client arguments of a session that outlives its connection."""
    return {"version": version, "clean": False, "session_expiry": 300 if version == V5 else None}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    with start_mqtt_server(tmp_path_factory.mktemp("mqtt-sessions")) as process:
        yield process


@pytest.fixture(scope="module")
def port(server: StrataProcess) -> int:
    return mqtt_port(server)


@pytest.fixture(scope="module")
def auth_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server with one user: anonymous clients are refused."""
    with start_mqtt_server(tmp_path_factory.mktemp("mqtt-auth")) as process:
        add_user(process)
        yield mqtt_port(process)


@pytest.fixture
def publisher(port: int) -> Iterator[Client]:
    with Client(port, unique("pub")) as client:
        yield client


# -- CONNECT / CONNACK and sessions --------------------------------------------------------


@VERSIONS
def test_session_present_follows_clean_flag(port: int, version: int) -> None:
    cid = unique("present")
    with Client(port, cid, **persistent(version)) as first:  # type: ignore[arg-type]
        assert first.session_present is False  # nothing to resume yet
    with Client(port, cid, **persistent(version)) as second:  # type: ignore[arg-type]
        assert second.session_present is True
    with Client(port, cid, version=version, clean=True) as clean:
        assert clean.session_present is False
    with Client(port, cid, **persistent(version)) as after_clean:  # type: ignore[arg-type]
        assert after_clean.session_present is False  # the clean session ended with it


@VERSIONS
def test_persistent_session_keeps_subscriptions_and_offline_messages(
    port: int, publisher: Client, version: int
) -> None:
    cid, topic = unique("keep"), unique("keep/t")
    with Client(port, cid, **persistent(version)) as sub:  # type: ignore[arg-type]
        assert [c.value for c in sub.subscribe(topic, 1)] == [1]
    payloads = [f"offline-{i}".encode() for i in range(3)]
    for payload in payloads:
        publisher.publish(topic, payload, qos=1)
    with Client(port, cid, **persistent(version)) as sub:  # type: ignore[arg-type]
        assert sub.session_present is True
        got = sub.expect(3, topic)
        assert [m.payload for m in got] == payloads
        assert {m.qos for m in got} == {1}
        publisher.publish(topic, b"live", qos=1)  # the subscription is still there
        assert sub.expect(4, topic)[-1].payload == b"live"


@VERSIONS
def test_clean_start_discards_the_old_session(port: int, publisher: Client, version: int) -> None:
    cid, topic, marker = unique("discard"), unique("discard/t"), unique("discard/m")
    with Client(port, cid, **persistent(version)) as sub:  # type: ignore[arg-type]
        sub.subscribe(topic, 1)
    publisher.publish(topic, b"queued for the old session", qos=1)
    with Client(port, cid, version=version, clean=True) as fresh:
        assert fresh.session_present is False
        fresh.subscribe(marker, 1)
        fresh.barrier(publisher, marker)  # queued messages would have come first
        assert fresh.messages(topic) == []
        publisher.publish(topic, b"after", qos=1)  # and the old subscription is gone
        fresh.barrier(publisher, marker)
        assert fresh.messages(topic) == []


def test_v5_session_expires_after_its_interval(port: int, publisher: Client) -> None:
    cid, topic, marker = unique("expiry"), unique("expiry/t"), unique("expiry/m")
    with RawClient(port, 5) as raw:
        ack = raw.connect(
            Connect(cid, clean_start=False, properties=Properties(session_expiry_interval=1))
        )
        assert (ack.reason_code, ack.session_present) == (0, False)
        raw.send(Subscribe(1, (Subscription(topic, 1),)))
        assert raw.receive() == Suback(1, (1,))
        raw.send(Disconnect())
        assert raw.receive() is None  # closed: the interval runs from before this
    publisher.publish(topic, b"while the session still exists", qos=1)
    # Reconnecting restarts the interval, so look exactly once, just after it; the
    # broker's housekeeping tick may not have come yet, and need not have.
    after(1.1)
    with Client(port, cid, version=V5, clean=False, session_expiry=1) as again:
        assert again.session_present is False
        again.subscribe(marker, 1)
        again.barrier(publisher, marker)
        assert again.messages(topic) == []  # its queue and subscription went with it


def test_v5_will_is_published_when_the_session_expires_first(port: int) -> None:
    topic = unique("will/expiry")
    with Client(port, version=V5) as watcher:
        watcher.subscribe(topic, 1)
        client = Client(
            port,
            version=V5,
            clean=False,
            session_expiry=1,
            will=(topic, b"session over", 1, False),
            will_properties=will_properties(WillDelayInterval=3600),
        )
        dropped_at = time.monotonic()
        client.drop()
        assert watcher.expect(1, topic)[0].payload == b"session over"
        assert 0.9 <= time.monotonic() - dropped_at <= 10  # at the expiry, not the delay


def test_v5_session_within_its_interval_is_kept(port: int, publisher: Client) -> None:
    cid, topic = unique("within"), unique("within/t")
    with Client(port, cid, version=V5, clean=False, session_expiry=30) as sub:
        sub.subscribe(topic, 1)
    publisher.publish(topic, b"kept", qos=1)
    with Client(port, cid, version=V5, clean=False, session_expiry=30) as again:
        assert again.session_present is True
        assert again.expect(1, topic)[0].payload == b"kept"


def test_v5_disconnect_with_expiry_zero_ends_the_session(port: int) -> None:
    cid = unique("zero")
    with RawClient(port, 5) as raw:
        ack = raw.connect(
            Connect(cid, clean_start=False, properties=Properties(session_expiry_interval=300))
        )
        assert (ack.reason_code, ack.session_present) == (0, False)
        raw.send(Disconnect(0, Properties(session_expiry_interval=0)))
        assert raw.receive() is None  # closed after the session was dealt with
    with RawClient(port, 5) as raw:
        ack = raw.connect(
            Connect(cid, clean_start=False, properties=Properties(session_expiry_interval=300))
        )
        assert (ack.reason_code, ack.session_present) == (0, False)
        raw.send(Disconnect())
        assert raw.receive() is None
    with RawClient(port, 5) as raw:  # control: without the change the session stays
        ack = raw.connect(
            Connect(cid, clean_start=False, properties=Properties(session_expiry_interval=300))
        )
        assert (ack.reason_code, ack.session_present) == (0, True)


def test_v5_disconnect_may_not_add_an_expiry_to_a_clean_session(port: int) -> None:
    with RawClient(port, 5) as raw:
        assert raw.connect(Connect(unique("noexp"))).reason_code == 0  # expiry 0
        raw.send(Disconnect(0, Properties(session_expiry_interval=60)))
        answer = raw.receive()
        assert isinstance(answer, Disconnect), answer
        assert answer.reason_code == 0x82  # protocol error
        assert raw.receive() is None


# -- keep alive ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [4, 5], ids=["v3", "v5"])
def test_silent_client_is_disconnected_after_one_and_a_half_keep_alives(
    port: int, level: int
) -> None:
    with RawClient(port, level) as raw:
        ack = raw.connect(Connect(unique("silent"), keep_alive=1))
        assert ack.reason_code == 0
        start = time.monotonic()
        first = raw.receive(timeout=10)
        if level == 5:
            assert isinstance(first, Disconnect), first
            assert first.reason_code == 0x8D  # keep alive timeout
            first = raw.receive(timeout=5)
        assert first is None  # then the connection closes
        elapsed = time.monotonic() - start
        assert 1.3 <= elapsed <= 4.0, elapsed


@pytest.mark.parametrize("level", [4, 5], ids=["v3", "v5"])
def test_pingreq_gets_pingresp_and_keeps_the_connection(port: int, level: int) -> None:
    with RawClient(port, level) as raw:
        assert raw.connect(Connect(unique("ping"), keep_alive=1)).reason_code == 0
        for _ in range(4):  # 4 x 0.5 s: longer than the 1.5 s limit, kept alive by pings
            raw.send(Pingreq())
            assert isinstance(raw.receive(), Pingresp)
            assert raw.receive(timeout=0.5) is RawClient.TIMEOUT


def test_server_caps_keep_alive_and_session_expiry(tmp_path: Path) -> None:
    env = {"STRATA_MQTT_MAX_KEEP_ALIVE": "2", "STRATA_MQTT_MAX_SESSION_EXPIRY": "5"}
    with start_mqtt_server(tmp_path, env=env) as process:
        port = mqtt_port(process)
        with Client(port, version=V5, keepalive=60, clean=False, session_expiry=300) as client:
            props = client.wait_connack()[2]
            assert props.ServerKeepAlive == 2
            assert props.SessionExpiryInterval == 5  # told, since it differs from the ask
        with RawClient(port, 5) as raw:
            ack = raw.connect(Connect(unique("ka0"), keep_alive=0))  # 0 is "no limit": capped
            assert ack.properties.server_keep_alive == 2
        with RawClient(port, 5) as raw:
            ack = raw.connect(Connect(unique("ka1"), keep_alive=1))  # within the cap: kept
            assert ack.properties.server_keep_alive is None


# -- client ids and authentication ---------------------------------------------------------------


def test_v5_empty_client_id_is_assigned(port: int) -> None:
    with Client(port, "", version=V5) as a, Client(port, "", version=V5) as b:
        ids = [getattr(c.wait_connack()[2], "AssignedClientIdentifier", "") for c in (a, b)]
        assert all(ids), ids
        assert ids[0] != ids[1]


def v3_connect_empty_id_persistent() -> bytes:
    """A 3.1.1 CONNECT with an empty client id and clean session 0 (our codec won't make one)."""
    data = bytearray(encode(Connect("", clean_start=True), 4))
    assert data[2:9] == b"\x00\x04MQTT\x04"  # short remaining length: flags at byte 9
    data[9] &= ~0x02
    return bytes(data)


def test_v3_empty_client_id_needs_clean_session(port: int) -> None:
    with RawClient(port, 4) as raw:
        ack = raw.connect(v3_connect_empty_id_persistent())
        assert (ack.reason_code, ack.session_present) == (2, False)  # identifier rejected
        assert raw.receive() is None
    with RawClient(port, 4) as raw:
        assert raw.connect(Connect("", clean_start=True)).reason_code == 0
    with Client(port, "", version=V3, clean=True) as client:
        assert client.wait_connack()[0] == 0


def test_v5_refuses_anonymous_and_bad_passwords(auth_port: int) -> None:
    cases = [
        (None, None, 0x87),
        (USER, "wrong", 0x86),
        ("nobody", PASSWORD, 0x86),
        (USER, PASSWORD, 0),
    ]
    for username, password, code in cases:
        client = Client(auth_port, version=V5, username=username, password=password)
        try:
            assert client.wait_connack()[0] == code, (username, password)
        finally:
            client.close()


def test_v3_refuses_anonymous_and_bad_passwords(auth_port: int) -> None:
    cases = [(None, None, 5), (USER, b"wrong", 4), (USER, PASSWORD.encode(), 0)]
    for username, password, code in cases:
        with RawClient(auth_port, 4) as raw:
            ack = raw.connect(Connect(unique("v3auth"), username=username, password=password))
            assert ack.reason_code == code, (username, password)
    with Client(auth_port, version=V3, username=USER, password=PASSWORD) as client:
        assert client.wait_connack()[0] == 0


def test_allow_anonymous_lets_anonymous_clients_in(tmp_path: Path) -> None:
    with start_mqtt_server(tmp_path, env={"STRATA_MQTT_ALLOW_ANONYMOUS": "true"}) as process:
        add_user(process)
        port = mqtt_port(process)
        with Client(port, version=V5) as v5, Client(port, version=V3) as v3:
            assert v5.wait_connack()[0] == 0
            assert v3.wait_connack()[0] == 0
        with RawClient(port, 5) as raw:  # a wrong password is still wrong
            ack = raw.connect(Connect(unique("anon"), username=USER, password=b"wrong"))
            assert ack.reason_code == 0x86


# -- wills --------------------------------------------------------------------------------


def will_properties(**values: object) -> PahoProperties:
    return paho_properties(PacketTypes.WILLMESSAGE, **values)


@VERSIONS
def test_dropped_connection_publishes_the_will(port: int, version: int) -> None:
    topic = unique("will/drop")
    props = (
        will_properties(ContentType="text/plain", UserProperty=[("site", "north"), ("k", "v")])
        if version == V5
        else None
    )
    with Client(port, version=V5) as watcher:
        watcher.subscribe(topic, 2)
        client = Client(
            port, version=version, will=(topic, b"gone", 1, True), will_properties=props
        )
        client.drop()
        (will,) = watcher.expect(1, topic)
        assert (will.payload, will.qos) == (b"gone", 1)
        if version == V5:
            assert will.properties.ContentType == "text/plain"
            assert will.properties.UserProperty == [("site", "north"), ("k", "v")]
    with Client(port, version=V5) as late:  # the will was retained
        late.subscribe(topic, 1)
        retained = late.expect(1, topic)[0]
        assert (retained.payload, retained.retain) == (b"gone", True)
        late.publish(topic, b"", qos=1, retain=True)  # clear it


@pytest.mark.parametrize("level", [4, 5], ids=["v3", "v5"])
def test_normal_disconnect_does_not_publish_the_will(port: int, level: int) -> None:
    topic = unique("will/normal")
    with Client(port, version=V5) as watcher:
        watcher.subscribe(topic, 1)
        with RawClient(port, level) as raw:
            will = Will(topic, b"should not", 1)
            assert raw.connect(Connect(unique("normal"), will=will)).reason_code == 0
            raw.send(Disconnect())
            assert raw.receive() is None  # the server closes once it let the session go
        assert watcher.barrier(watcher, topic) == []  # a will would be before the marker
        with RawClient(port, level) as raw:  # control: the same will, dropped, is published
            will = Will(topic, b"dropped", 1)
            assert raw.connect(Connect(unique("normal"), will=will)).reason_code == 0
        assert watcher.expect(2, topic)[-1].payload == b"dropped"


def test_v5_disconnect_with_will_message_publishes_it(port: int) -> None:
    topic = unique("will/0x04")
    with Client(port, version=V5) as watcher:
        watcher.subscribe(topic, 1)
        client = Client(port, version=V5, will=(topic, b"asked for", 1, False))
        client.paho.disconnect(reasoncode=PahoReasonCode(PacketTypes.DISCONNECT, identifier=4))
        client.close()
        assert watcher.expect(1, topic)[0].payload == b"asked for"


def test_v5_will_delay_is_cancelled_by_a_reconnect(port: int) -> None:
    stays, returns = unique("will/stays"), unique("will/returns")
    delay = will_properties(WillDelayInterval=1)
    with Client(port, version=V5) as watcher:
        watcher.subscribe(stays, 1)
        watcher.subscribe(returns, 1)
        options = {"version": V5, "clean": False, "session_expiry": 60}
        away = Client(port, will=(stays, b"late", 1, False), will_properties=delay, **options)  # type: ignore[arg-type]
        back = Client(port, will=(returns, b"never", 1, False), will_properties=delay, **options)  # type: ignore[arg-type]
        dropped_at = time.monotonic()
        away.drop()
        back.drop()
        with Client(port, back.client_id, **options) as again:  # type: ignore[arg-type]
            assert again.session_present is True
            watcher.expect(1, stays)
            assert time.monotonic() - dropped_at >= 0.9  # not before the delay
            after(1.0)  # two more housekeeping ticks: the cancelled will would be out
            assert watcher.barrier(watcher, returns) == []


# -- takeover and CONNACK properties ------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize("clean", [False, True], ids=["resume", "clean"])
def test_second_connection_takes_over_the_session(
    port: int, publisher: Client, version: int, clean: bool
) -> None:
    cid, topic = unique("takeover"), unique("takeover/t")
    first = Client(port, cid, **persistent(version))  # type: ignore[arg-type]
    try:
        first.subscribe(topic, 1)
        second_options = persistent(version) if not clean else {"version": version, "clean": True}
        with Client(port, cid, **second_options) as second:
            assert second.session_present is (not clean)
            code, _ = first.wait_disconnected()
            if version == V5:
                assert code == 0x8E  # session taken over
            if clean:
                second.subscribe(topic, 1)
            publisher.publish(topic, b"to the new connection", qos=1)
            assert second.expect(1, topic)[0].payload == b"to the new connection"
            assert first.messages(topic) == []
            assert second.paho.is_connected()
    finally:
        first.close()


@pytest.mark.parametrize(("delay", "published"), [(0, True), (60, False)])
def test_v5_takeover_publishes_the_will_unless_delayed(
    port: int, delay: int, published: bool
) -> None:
    cid, topic = unique("takewill"), unique("takewill/t")
    with Client(port, version=V5) as watcher:
        watcher.subscribe(topic, 1)
        first = Client(
            port,
            cid,
            version=V5,
            clean=False,
            session_expiry=300,
            will=(topic, b"taken over", 1, False),
            will_properties=will_properties(WillDelayInterval=delay),
        )
        with Client(port, cid, version=V5, clean=False, session_expiry=300) as second:
            assert second.session_present is True
            assert first.wait_disconnected()[0] == 0x8E
            if published:
                assert watcher.expect(1, topic)[0].payload == b"taken over"
            else:  # the new connection resumed the session within the delay
                assert watcher.barrier(watcher, topic) == []
        first.close()


def test_v5_request_response_information(port: int) -> None:
    asked = PahoProperties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    asked.RequestResponseInformation = 1
    with Client(port, version=V5, properties=asked) as client:
        info = client.wait_connack()[2].ResponseInformation
        assert isinstance(info, str)
        assert info
    with Client(port, version=V5) as client:  # not asked: not given
        assert not hasattr(client.wait_connack()[2], "ResponseInformation")


def test_v5_connack_announces_the_limits(port: int) -> None:
    with Client(port, version=V5) as client:
        props = client.wait_connack()[2]
        assert props.ReceiveMaximum == 1024
        assert props.MaximumPacketSize == 1 << 20
        assert props.TopicAliasMaximum == 1024


# -- $SYS and /metrics ------------------------------------------------------------------


@VERSIONS
def test_sys_topics_are_published_and_hidden_from_wildcards(
    port: int, publisher: Client, version: int
) -> None:
    with Client(port, version=version) as sys_sub, Client(port, version=version) as everything:
        sys_sub.subscribe("$SYS/#")
        everything.subscribe("#")
        everything.subscribe("+/broker/uptime")
        names = [
            "$SYS/broker/clients/connected",
            "$SYS/broker/messages/received",
            "$SYS/broker/uptime",
            "$SYS/broker/version",
        ]
        for name in names:
            sys_sub.expect(1, name)
        # The first value is the retained one from before; updates count us three.
        wait_for(
            lambda: int(sys_sub.messages("$SYS/broker/clients/connected")[-1].payload) >= 3,
            what="clients/connected to count this test's clients",
        )
        assert re.fullmatch(rb"\d+ seconds", sys_sub.messages("$SYS/broker/uptime")[-1].payload)
        # Updated periodically: the received count moves after a publish.
        seen = int(sys_sub.messages("$SYS/broker/messages/received")[-1].payload)
        publisher.publish(unique("sys/bump"), b"x", qos=1)
        wait_for(
            lambda: int(sys_sub.messages("$SYS/broker/messages/received")[-1].payload) > seen,
            what="messages/received to grow",
        )
        assert not [m.topic for m in everything.messages() if m.topic.startswith("$")]


def connection_metrics(process: StrataProcess) -> tuple[float, float]:
    """(open, accepted) MQTT connections from ``/metrics``."""
    return (
        metric(process, "strata_connections", protocol="mqtt"),
        metric(process, "strata_connections_total", protocol="mqtt"),
    )


def test_metrics_count_mqtt_connections(server: StrataProcess, port: int) -> None:
    _, total_before = connection_metrics(server)
    clients = [Client(port, version=v) for v in (V3, V5, V5)]
    try:
        open_now, total_now = connection_metrics(server)
        assert open_now >= 3
        assert total_now >= total_before + 3
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: connection_metrics(server)[0] <= open_now - 3, what="connections closed")

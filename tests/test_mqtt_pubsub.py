"""MQTT publish/subscribe against a real ``strata start``, over real sockets.

Clients are real paho-mqtt clients (both 3.1.1 and 5.0 where the feature
exists in both) or, for exact packet-id flows, :class:`Raw`: a blocking socket
speaking through the project's own codec. One server serves the module; a
second one (:func:`limits`) runs with small limits (packet size, queue,
subscriptions). Every topic and client id is unique, so tests may run in
parallel. Absence is shown with a marker published afterwards
(:meth:`Client.barrier`); only the in-flight window test, where nothing can
overtake the held-back messages, reads the socket for a short quiet period.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from mqtt_support import (
    TIMEOUT,
    V3,
    V5,
    Client,
    Received,
    metric,
    mqtt_port,
    publish_properties,
    start_mqtt_server,
    unique,
    wait_for,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
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
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    encode,
)

P = TypeVar("P")
VERSIONS = [pytest.param(V3, id="v3"), pytest.param(V5, id="v5")]
LEVEL: dict[int, int] = {V3: 4, V5: 5}  # paho's protocol constant -> the codec's protocol level
LIMITS_ENV = {
    "STRATA_MQTT_MAX_PACKET_SIZE": "256",
    "STRATA_MQTT_MAX_QUEUED": "5",
    "STRATA_MQTT_MAX_SUBSCRIPTIONS": "2",
    "STRATA_MQTT_RECEIVE_MAXIMUM": "10",
}


# -- servers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    with start_mqtt_server(tmp_path_factory.mktemp("mqtt-pubsub")) as process:
        yield process


@pytest.fixture(scope="module")
def port(server: StrataProcess) -> int:
    return mqtt_port(server)


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """Packets of 256 B, 5 queued messages, 2 subscriptions per session, Receive Maximum 10."""
    with start_mqtt_server(tmp_path_factory.mktemp("mqtt-limits"), env=LIMITS_ENV) as process:
        yield process


@pytest.fixture
def limits_port(limits: StrataProcess) -> int:
    return mqtt_port(limits)


# -- a raw client --------------------------------------------------------------------


class Raw:
    """A bare MQTT client: packets from ``frontends.mqtt`` over a blocking socket."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        version: int = V5,
        clean: bool = True,
        expiry: int | None = None,
        properties: Properties | None = None,
    ) -> None:
        self.client_id = client_id or unique("raw")
        self.level = LEVEL[version]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.reader = PacketReader(version=self.level)
        props = properties or Properties()
        if expiry is not None:
            props = Properties(
                session_expiry_interval=expiry,
                receive_maximum=props.receive_maximum,
                topic_alias_maximum=props.topic_alias_maximum,
            )
        self.send(Connect(self.client_id, clean, 60, properties=props))
        self.connack = self.expect(Connack)
        assert self.connack.reason_code == 0, self.connack

    def send(self, packet: Packet) -> None:
        self.sock.sendall(encode(packet, self.level))

    def poll(self, timeout: float) -> Packet | None:
        """The next packet; None when nothing came within ``timeout`` s. EOF fails."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                return packet  # type: ignore[return-value]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise AssertionError(f"{self.client_id}: the server closed the connection")
            self.reader.receive_data(data)

    def recv(self, timeout: float = TIMEOUT) -> Packet:
        packet = self.poll(timeout)
        assert packet is not None, f"{self.client_id}: no packet within {timeout} s"
        return packet

    def expect(self, kind: type[P]) -> P:
        packet = self.recv()
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet}"
        return packet

    def until_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Read until the server closes the connection; the packets before that."""
        packets: list[Packet] = []
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                packets.append(packet)  # type: ignore[arg-type]
                continue
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{self.client_id} still open; got {packets}"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return packets
            if not data:
                return packets
            self.reader.receive_data(data)

    def subscribe(self, topic_filter: str, qos: int = 1) -> Suback:
        self.send(Subscribe(1, (Subscription(topic_filter, qos),)))
        suback = self.expect(Suback)
        assert suback.reason_codes == (qos,), suback
        return suback

    def ping(self) -> list[Packet]:
        """A PINGREQ round trip; the packets that arrived before the PINGRESP."""
        self.send(Pingreq())
        before: list[Packet] = []
        while not isinstance(packet := self.recv(), Pingresp):
            before.append(packet)
        return before

    def drop(self) -> None:
        """Close without DISCONNECT, as a crash would."""
        self.sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(Disconnect())
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def payloads(messages: list[Received]) -> list[bytes]:
    return [m.payload for m in messages]


def prop(message: Received, name: str, default: Any = None) -> Any:
    return getattr(message.properties, name, default)


def connect_properties(**values: object) -> PahoProperties:
    props = PahoProperties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


# -- QoS end to end ------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_qos_end_to_end(port: int, version: int, qos: int) -> None:
    topic = unique("qos")
    with Client(port, version=version) as sub, Client(port, version=version) as pub:
        assert [c.value for c in sub.subscribe(topic, 2)] == [2]
        sent = [f"m{i}".encode() for i in range(20)]
        for p in sent:
            pub.publish(topic, p, qos=qos)
        got = sub.expect(len(sent), topic)
        assert payloads(got) == sent
        assert {m.qos for m in got} == {qos}
        assert not any(m.retain or m.dup for m in got)
        assert payloads(sub.barrier(pub, topic, qos=qos)) == sent  # and nothing twice


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_qos1_puback_has_the_packet_id(port: int, version: int) -> None:
    topic = unique("raw1")
    with Client(port) as sub, Raw(port, version=version) as pub:
        sub.subscribe(topic, 1)
        pub.send(Publish(topic, b"one", 1, packet_id=4242))
        ack = pub.expect(Puback)
        assert (ack.packet_id, ack.reason_code) == (4242, 0)
        assert payloads(sub.expect(1, topic)) == [b"one"]


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_qos2_flow_and_dup_resend_delivered_once(port: int, version: int) -> None:
    topic = unique("raw2")
    with Client(port) as sub, Client(port) as marker, Raw(port, version=version) as pub:
        sub.subscribe(topic, 2)
        pub.send(Publish(topic, b"once", 2, packet_id=77))
        assert pub.expect(Pubrec).packet_id == 77
        # The PUBREC was lost (say): the publisher sends the PUBLISH again with DUP.
        pub.send(Publish(topic, b"once", 2, dup=True, packet_id=77))
        rec = pub.expect(Pubrec)
        assert (rec.packet_id, rec.reason_code) == (77, 0)
        pub.send(Pubrel(77))
        comp = pub.expect(Pubcomp)
        assert (comp.packet_id, comp.reason_code) == (77, 0)
        # The id is free again: the same id now carries a new message.
        pub.send(Publish(topic, b"again", 2, packet_id=77))
        assert pub.expect(Pubrec).packet_id == 77
        pub.send(Pubrel(77))
        assert pub.expect(Pubcomp).packet_id == 77
        assert payloads(sub.barrier(marker, topic, qos=2)) == [b"once", b"again"]


def test_raw_pubrel_for_an_unknown_id_v5(port: int) -> None:
    with Raw(port) as pub:
        pub.send(Pubrel(999))
        comp = pub.expect(Pubcomp)
        assert (comp.packet_id, comp.reason_code) == (999, 0x92)


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_outbound_qos2_flow(port: int, version: int) -> None:
    topic = unique("out2")
    with Raw(port, version=version) as sub, Client(port) as pub:
        sub.subscribe(topic, 2)
        pub.publish(topic, b"x", qos=2)
        first = sub.expect(Publish)
        assert (first.payload, first.qos, first.dup) == (b"x", 2, False)
        assert first.packet_id is not None
        sub.send(Pubrec(first.packet_id))
        rel = sub.expect(Pubrel)
        assert (rel.packet_id, rel.reason_code) == (first.packet_id, 0)
        sub.send(Pubcomp(first.packet_id))
        # Completed: the next message arrives, and nothing of the first is resent.
        pub.publish(topic, b"y", qos=2)
        second = sub.expect(Publish)
        assert (second.payload, second.qos) == (b"y", 2)


@pytest.mark.parametrize("version", VERSIONS)
def test_unacked_qos1_resent_with_dup_on_reconnect(port: int, version: int) -> None:
    topic = unique("resend1")
    cid = unique("persist")
    with Client(port) as pub:
        sub = Raw(
            port, cid, version=version, clean=version == V5, expiry=300 if version == V5 else None
        )
        sub.subscribe(topic, 1)
        pub.publish(topic, b"unacked", qos=1)
        first = sub.expect(Publish)
        assert (first.payload, first.dup) == (b"unacked", False)
        sub.drop()  # no PUBACK
        with Raw(
            port, cid, version=version, clean=False, expiry=300 if version == V5 else None
        ) as again:
            assert again.connack.session_present
            resent = again.expect(Publish)
            assert (resent.payload, resent.qos, resent.dup) == (b"unacked", 1, True)
            assert resent.packet_id == first.packet_id
            again.send(Puback(resent.packet_id or 0))
            pub.publish(topic, b"next", qos=1)
            following = again.expect(Publish)
            assert (following.payload, following.dup) == (b"next", False)
            again.send(Puback(following.packet_id or 0))
        # clean up the persistent session
        Raw(port, cid, version=version, clean=True).close()


@pytest.mark.parametrize("version", VERSIONS)
def test_pubrel_resent_on_reconnect_when_pubcomp_missing(port: int, version: int) -> None:
    topic = unique("resend2")
    cid = unique("persist")
    expiry = 300 if version == V5 else None
    with Client(port) as pub:
        sub = Raw(port, cid, version=version, clean=version == V5, expiry=expiry)
        sub.subscribe(topic, 2)
        pub.publish(topic, b"q2", qos=2)
        first = sub.expect(Publish)
        pid = first.packet_id or 0
        sub.send(Pubrec(pid))
        assert sub.expect(Pubrel).packet_id == pid
        sub.drop()  # no PUBCOMP
        with Raw(port, cid, version=version, clean=False, expiry=expiry) as again:
            assert again.connack.session_present
            rel = again.expect(Pubrel)  # the PUBREL again, not the PUBLISH
            assert rel.packet_id == pid
            again.send(Pubcomp(pid))
            pub.publish(topic, b"after", qos=2)
            following = again.expect(Publish)
            assert (following.payload, following.dup) == (b"after", False)
        Raw(port, cid, version=version, clean=True).close()


def test_receive_maximum_limits_inflight(port: int) -> None:
    topic = unique("window")
    with Raw(port, properties=Properties(receive_maximum=2)) as sub, Client(port) as pub:
        sub.subscribe(topic, 1)
        for i in range(6):
            pub.publish(topic, f"w{i}".encode(), qos=1)  # each stored and routed when acked
        held = [sub.expect(Publish), sub.expect(Publish)]
        assert [p.payload for p in held] == [b"w0", b"w1"]
        # Nothing more while two are unacknowledged, even across a round trip.
        assert sub.ping() == []
        assert sub.poll(0.3) is None
        sub.send(Puback(held[0].packet_id or 0))
        third = sub.expect(Publish)
        assert third.payload == b"w2"
        assert sub.ping() == []
        assert sub.poll(0.3) is None
        rest: list[Publish] = []
        for p in (held[1], third):
            sub.send(Puback(p.packet_id or 0))
        while len(rest) < 3:
            p = sub.expect(Publish)
            rest.append(p)
            sub.send(Puback(p.packet_id or 0))
        assert [p.payload for p in rest] == [b"w3", b"w4", b"w5"]


# -- topics and wildcards -----------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards(port: int, version: int) -> None:
    base = unique("wild")
    with (
        Client(port, version=version) as plus,
        Client(port, version=version) as hash_,
        Client(port, version=version) as pub,
    ):
        plus.subscribe(f"{base}/+/x", 1)
        hash_.subscribe(f"{base}/#", 1)
        topics = [base, f"{base}/a/x", f"{base}/a/b/x", f"{base}/b/x", f"{base}/a", f"{base}//x"]
        for t in topics:
            pub.publish(t, t.encode(), qos=1)
        pub.publish(f"{base}/end/x", b"end", qos=1)
        hash_.expect(len(topics) + 1)
        plus.expect(1, f"{base}/end/x")
        assert [m.topic for m in plus.messages()] == [
            f"{base}/a/x",
            f"{base}/b/x",
            f"{base}//x",
            f"{base}/end/x",
        ]
        assert [m.topic for m in hash_.messages()] == [*topics, f"{base}/end/x"]


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_not_matched_by_leading_wildcards(port: int, version: int) -> None:
    with Client(port, version=version) as wild, Client(port, version=version) as sys:
        wild.subscribe("#", 0)
        wild.subscribe("+/broker/uptime", 0)
        sys.subscribe("$SYS/broker/uptime", 0)
        # Two live $SYS updates after both subscriptions (the broker publishes every 0.5 s).
        wait_for(lambda: len([m for m in sys.messages() if not m.retain]) >= 2, what="$SYS")
        assert not [m.topic for m in wild.messages() if m.topic.startswith("$")]


@pytest.mark.parametrize("version", VERSIONS)
def test_client_publish_to_dollar_topic_refused(port: int, version: int) -> None:
    with Client(port, version=version) as bad, Client(port) as other:
        bad.publish(f"$foo/{unique('x')}", b"no", qos=0, wait=False)
        rc, _ = bad.wait_disconnected()
        if version == V5:
            assert rc.value == 0x90  # Topic Name invalid
        else:
            assert rc.value != 0
        # The broker and other clients are unaffected.
        topic = unique("after")
        other.subscribe(topic, 1)
        other.publish(topic, b"ok", qos=1)
        assert payloads(other.expect(1, topic)) == [b"ok"]


@pytest.mark.parametrize(("sub_qos", "pub_qos"), [(0, 2), (1, 2), (0, 1), (2, 1)])
@pytest.mark.parametrize("version", VERSIONS)
def test_granted_qos_downgrade(port: int, version: int, sub_qos: int, pub_qos: int) -> None:
    topic = unique("grant")
    with Client(port, version=version) as sub, Client(port, version=version) as pub:
        assert [c.value for c in sub.subscribe(topic, sub_qos)] == [sub_qos]
        pub.publish(topic, b"down", qos=pub_qos)
        (got,) = sub.expect(1, topic)
        assert got.qos == min(sub_qos, pub_qos)


# -- subscription options (5.0) ------------------------------------------------------


def test_no_local(port: int) -> None:
    topic = unique("nolocal")
    with Client(port) as me, Client(port) as other:
        me.subscribe(topic, 1, no_local=True)
        other.subscribe(topic, 1)
        me.publish(topic, b"mine", qos=1)
        assert payloads(other.expect(1, topic)) == [b"mine"]
        assert me.barrier(other, topic) == []


def test_no_local_off_delivers_own_messages(port: int) -> None:
    topic = unique("local")
    with Client(port) as me:
        me.subscribe(topic, 1)
        me.publish(topic, b"mine", qos=1)
        assert payloads(me.expect(1, topic)) == [b"mine"]


def test_retain_as_published(port: int) -> None:
    topic = unique("rap")
    with Client(port) as rap, Client(port) as plain, Client(port) as pub:
        rap.subscribe(topic, 1, retain_as_published=True)
        plain.subscribe(topic, 1)
        pub.publish(topic, b"live", qos=1, retain=True)
        assert [m.retain for m in rap.expect(1, topic)] == [True]
        assert [m.retain for m in plain.expect(1, topic)] == [False]
        pub.publish(topic, b"", qos=1, retain=True)  # clear


def test_retain_handling(port: int) -> None:
    topic = unique("rh")
    with Client(port) as pub:
        pub.publish(topic, b"kept", qos=1, retain=True)
        with Client(port) as never:
            never.subscribe(topic, 1, retain_handling=2)
            assert never.barrier(pub, topic) == []
        with Client(port) as sub:
            sub.subscribe(topic, 1, retain_handling=1)  # new: sent
            (first,) = sub.expect(1, topic)
            assert (first.payload, first.retain) == (b"kept", True)
            sub.subscribe(topic, 1, retain_handling=1)  # existing: not sent
            assert payloads(sub.barrier(pub, topic)) == [b"kept"]
            sub.subscribe(topic, 1, retain_handling=0)  # always sent
            before = sub.barrier(pub, topic)
            assert [(m.payload, m.retain) for m in before if m.payload == b"kept"] == [
                (b"kept", True),
                (b"kept", True),
            ]
        pub.publish(topic, b"", qos=1, retain=True)


def test_subscription_identifiers(port: int) -> None:
    base = unique("sid")
    with Client(port) as sub, Client(port) as pub:
        sub.subscribe(f"{base}/+", 1, subscription_id=7)
        sub.subscribe(f"{base}/#", 1, subscription_id=900)
        sub.subscribe(f"{base}/only/x", 1)
        pub.publish(f"{base}/a", b"both", qos=1)
        pub.publish(f"{base}/only/x", b"hash", qos=1)
        both = sub.expect(1, f"{base}/a")
        assert len(both) == 1  # one message for overlapping subscriptions
        assert sorted(prop(both[0], "SubscriptionIdentifier", [])) == [7, 900]
        (deep,) = sub.expect(1, f"{base}/only/x")
        assert prop(deep, "SubscriptionIdentifier") == [900]


# -- shared subscriptions ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription_load_balanced(port: int, version: int) -> None:
    topic = unique("shared")
    group = unique("g")
    with (
        Client(port, version=version) as a,
        Client(port, version=version) as b,
        Client(port, version=version) as pub,
    ):
        for member in (a, b):
            member.subscribe(f"$share/{group}/{topic}", 1)
            member.subscribe(f"{topic}/{member.client_id}", 1)
        sent = [f"s{i}".encode() for i in range(20)]
        for p in sent:
            pub.publish(topic, p, qos=1)
        wait_for(lambda: len(a.messages(topic)) + len(b.messages(topic)) >= len(sent))
        for member in (a, b):
            member.barrier(pub, f"{topic}/{member.client_id}")
        got_a, got_b = payloads(a.messages(topic)), payloads(b.messages(topic))
        assert got_a, got_b
        assert got_b, got_a
        assert sorted(got_a + got_b) == sorted(sent)  # together all, none twice


def test_shared_subscription_redelivers_unacked_of_a_leaving_member(port: int) -> None:
    topic = unique("shared")
    group = unique("g")
    shared = f"$share/{group}/{topic}"
    with Client(port) as b, Client(port) as pub:
        a = Raw(port)  # never acknowledges
        a.subscribe(shared, 1)
        b.subscribe(shared, 1)
        b.subscribe(f"{topic}/marker", 1)
        sent = [f"r{i}".encode() for i in range(6)]
        for p in sent:
            pub.publish(topic, p, qos=1)
        held: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while len(held) + len(b.messages(topic)) < len(sent):
            assert time.monotonic() < deadline, (held, b.messages(topic))
            packet = a.poll(0.05)
            if isinstance(packet, Publish):
                held.append(packet.payload)
        assert held, "the raw member got none (no load balancing)"
        a.drop()
        wait_for(lambda: len(b.messages(topic)) >= len(sent), what="redelivery")
        b.barrier(pub, f"{topic}/marker")
        assert sorted(payloads(b.messages(topic))) == sorted(sent)


# -- retained messages -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_replace_clear(port: int, version: int) -> None:
    topic = unique("ret")
    with Client(port, version=version) as pub:
        pub.publish(topic, b"r1", qos=1, retain=True)
        with Client(port, version=version) as s1:
            s1.subscribe(topic, 1)
            (got,) = s1.expect(1, topic)
            assert (got.payload, got.retain, got.qos) == (b"r1", True, 1)
            pub.publish(topic, b"r2", qos=1, retain=True)
            live = s1.expect(2, topic)[1]
            assert (live.payload, live.retain) == (b"r2", False)  # live: retain flag off
        with Client(port, version=version) as s2:
            s2.subscribe(topic, 2)
            assert [(m.payload, m.retain) for m in s2.barrier(pub, topic)] == [(b"r2", True)]
        pub.publish(topic, b"", qos=1, retain=True)  # clear
        with Client(port, version=version) as s3:
            s3.subscribe(topic, 1)
            assert s3.barrier(pub, topic) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_to_wildcard_subscribers(port: int, version: int) -> None:
    base = unique("retw")
    with Client(port, version=version) as pub, Client(port, version=version) as sub:
        retained = {f"{base}/a": b"A", f"{base}/b/c": b"C", f"{base}/d": b"D"}
        for t, p in retained.items():
            pub.publish(t, p, qos=1, retain=True)
        pub.publish(f"{base}/d", b"", qos=1, retain=True)  # cleared again
        sub.subscribe(f"{base}/#", 0)
        sub.subscribe(f"{base}/marker", 0)
        sub.barrier(pub, f"{base}/marker")
        got = {
            m.topic: (m.payload, m.retain) for m in sub.messages() if m.topic != f"{base}/marker"
        }
        assert got == {f"{base}/a": (b"A", True), f"{base}/b/c": (b"C", True)}
        for t in retained:
            pub.publish(t, b"", qos=1, retain=True)


# -- MQTT 5 properties ----------------------------------------------------------------


def test_inbound_topic_alias(port: int) -> None:
    topic = unique("alias-in")
    with Client(port) as sub, Client(port) as pub:
        sub.subscribe(topic, 1)
        pub.publish(topic, b"named", qos=1, properties=publish_properties(TopicAlias=3))
        pub.publish("", b"aliased", qos=1, properties=publish_properties(TopicAlias=3))
        got = sub.expect(2, topic)
        assert payloads(got) == [b"named", b"aliased"]
        assert all(prop(m, "TopicAlias") is None for m in got)  # not forwarded


def test_outbound_topic_alias(port: int) -> None:
    topic = unique("alias-out")
    with Raw(port, properties=Properties(topic_alias_maximum=5)) as sub, Client(port) as pub:
        sub.subscribe(topic, 0)
        pub.publish(topic, b"1", qos=1)
        pub.publish(topic, b"2", qos=1)
        first, second = sub.expect(Publish), sub.expect(Publish)
        assert first.topic == topic
        alias = first.properties.topic_alias
        assert alias is not None
        assert 1 <= alias <= 5
        assert (second.topic, second.properties.topic_alias, second.payload) == ("", alias, b"2")


def test_no_outbound_alias_without_topic_alias_maximum(port: int) -> None:
    topic = unique("alias-none")
    with Raw(port) as sub, Client(port) as pub:
        sub.subscribe(topic, 0)
        pub.publish(topic, b"1", qos=1)
        pub.publish(topic, b"2", qos=1)
        for _ in range(2):
            p = sub.expect(Publish)
            assert (p.topic, p.properties.topic_alias) == (topic, None)


def test_message_expiry(port: int) -> None:
    topic = unique("expiry")
    cid = unique("offline")
    with Client(port, cid, clean=True, session_expiry=300) as sub:
        sub.subscribe(topic, 1)
    with Client(port) as pub:
        pub.publish(topic, b"short", qos=1, properties=publish_properties(MessageExpiryInterval=1))
        pub.publish(topic, b"long", qos=1, properties=publish_properties(MessageExpiryInterval=60))
        sent_at = time.monotonic()
        wait_for(lambda: time.monotonic() > sent_at + 1.5, what="1.5 s of wall clock")
        with Client(port, cid, clean=False, session_expiry=300) as sub:
            assert sub.session_present
            sub.barrier(pub, topic)
            got = [m for m in sub.messages(topic) if m.payload in (b"short", b"long")]
            assert payloads(got) == [b"long"]
            remaining = prop(got[0], "MessageExpiryInterval")
            assert 55 <= remaining <= 60, remaining
            # Live: forwarded with what is left.
            pub.publish(
                topic, b"live", qos=1, properties=publish_properties(MessageExpiryInterval=30)
            )
            wait_for(lambda: [m for m in sub.messages(topic) if m.payload == b"live"])
            (live,) = [m for m in sub.messages(topic) if m.payload == b"live"]
            assert 0 < prop(live, "MessageExpiryInterval") <= 30
        Client(port, cid, clean=True).close()


def test_expired_retained_message_not_delivered(port: int) -> None:
    topic = unique("ret-expiry")
    with Client(port) as pub:
        short = publish_properties(MessageExpiryInterval=1)
        pub.publish(topic, b"short", qos=1, retain=True, properties=short)
        pub.publish(
            f"{topic}/long",
            b"long",
            qos=1,
            retain=True,
            properties=publish_properties(MessageExpiryInterval=60),
        )
        sent_at = time.monotonic()
        with Client(port) as early:
            early.subscribe(topic, 1)
            (got,) = early.expect(1, topic)
            assert (got.payload, got.retain) == (b"short", True)
            assert prop(got, "MessageExpiryInterval") == 1
        wait_for(lambda: time.monotonic() > sent_at + 1.5, what="1.5 s of wall clock")
        with Client(port) as late:
            late.subscribe(f"{topic}/#", 1)
            before = late.barrier(pub, topic)
            assert before == []
            (long,) = late.expect(1, f"{topic}/long")
            assert 55 <= prop(long, "MessageExpiryInterval") <= 59
        pub.publish(f"{topic}/long", b"", qos=1, retain=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_subscriptions_one_copy_at_the_highest_qos(port: int, version: int) -> None:
    base = unique("overlap")
    with Client(port, version=version) as sub, Client(port) as pub:
        sub.subscribe(f"{base}/+", 0)
        sub.subscribe(f"{base}/#", 2)
        sub.subscribe(base, 0)
        pub.publish(f"{base}/a", b"two", qos=2)
        got = sub.barrier(pub, f"{base}/a", qos=2)
        assert [(m.payload, m.qos) for m in got] == [(b"two", 2)]


def test_properties_passed_through(port: int) -> None:
    topic = unique("props")
    user = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "1")]
    with Client(port) as sub, Client(port) as pub, Client(port, version=V3) as old:
        sub.subscribe(topic, 1)
        old.subscribe(topic, 1)
        props = publish_properties(
            PayloadFormatIndicator=1,
            ContentType="application/json; charset=utf-8",
            ResponseTopic=f"{topic}/reply",
            CorrelationData=b"\x00\x01corr\xff",
            UserProperty=user,
        )
        pub.publish(topic, b'{"k": 1}', qos=1, properties=props)
        (got,) = sub.expect(1, topic)
        assert got.payload == b'{"k": 1}'
        assert prop(got, "PayloadFormatIndicator") == 1
        assert prop(got, "ContentType") == "application/json; charset=utf-8"
        assert prop(got, "ResponseTopic") == f"{topic}/reply"
        assert prop(got, "CorrelationData") == b"\x00\x01corr\xff"
        assert prop(got, "UserProperty") == user
        assert payloads(old.expect(1, topic)) == [b'{"k": 1}']  # a 3.1.1 subscriber too


def test_client_maximum_packet_size(port: int) -> None:
    topic = unique("maxpkt")
    with (
        Client(port, properties=connect_properties(MaximumPacketSize=200)) as small,
        Client(port) as big,
        Client(port) as pub,
    ):
        small.subscribe(topic, 1)
        big.subscribe(topic, 1)
        pub.publish(topic, b"x" * 500, qos=1)
        pub.publish(topic, b"fits", qos=1)
        assert payloads(big.expect(2, topic)) == [b"x" * 500, b"fits"]
        assert payloads(small.barrier(pub, topic)) == [b"fits"]


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_over_server_maximum_closes_connection(limits_port: int, version: int) -> None:
    topic = unique("oversize")
    with Client(limits_port) as bystander:
        bystander.subscribe(topic, 1)
        raw = Raw(limits_port, version=version)
        if version == V5:
            assert raw.connack.properties.maximum_packet_size == 256
        raw.send(Publish(topic, b"z" * 400, 1, packet_id=1))
        packets = raw.until_closed()
        raw.drop()
        if version == V5:
            assert len(packets) == 1, packets
            assert isinstance(packets[0], Disconnect), packets
            assert packets[0].reason_code == 0x95  # Packet too large
        else:
            assert packets == []
        bystander.publish(topic, b"small", qos=1)
        assert payloads(bystander.expect(1, topic)) == [b"small"]  # not the oversize one


# -- acknowledgement reason codes -----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_unsuback(port: int, version: int) -> None:
    topic = unique("unsub")
    with Client(port, version=version) as sub, Client(port) as pub:
        sub.subscribe(topic, 1)
        codes = sub.unsubscribe(topic)
        if version == V5:
            assert [c.value for c in codes] == [0x00]
            assert [c.value for c in sub.unsubscribe(topic)] == [0x11]
        sub.subscribe(f"{topic}/marker", 1)
        pub.publish(topic, b"gone", qos=1)
        assert sub.barrier(pub, f"{topic}/marker") == []
        assert sub.messages(topic) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_suback_quota_exceeded(limits_port: int, version: int) -> None:
    base = unique("quota")
    with Client(limits_port, version=version) as sub:
        assert [c.value for c in sub.subscribe(f"{base}/1", 1)] == [1]
        assert [c.value for c in sub.subscribe(f"{base}/2", 0)] == [0]
        assert [c.value for c in sub.subscribe(f"{base}/3", 1)] == [0x97 if version == V5 else 0x80]
        assert [c.value for c in sub.subscribe(f"{base}/1", 2)] == [2]  # replacing is not new


# -- overflow ------------------------------------------------------------------------


def settled(sub: Client, pub: Client, topic: str) -> list[Received]:
    """Like :meth:`Client.barrier`, for a session whose full queue may drop a marker:
    publish markers until one arrives; the messages before the first that did."""
    markers: set[bytes] = set()
    deadline = time.monotonic() + TIMEOUT
    while True:
        marker = unique("marker").encode()
        markers.add(marker)
        pub.publish(topic, marker, qos=1)
        try:
            wait_for(lambda: any(m.payload in markers for m in sub.messages(topic)), 0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "no marker got through"
    before: list[Received] = []
    for m in sub.messages(topic):
        if m.payload in markers:
            return before
        before.append(m)
    raise AssertionError("unreachable")


def _dropped_metric(process: StrataProcess) -> float:
    return metric(process, "strata_mqtt_messages_dropped_total", reason="queue_full")


def _dropped(client: Client) -> list[int]:
    return [int(m.payload) for m in client.messages("$SYS/broker/messages/dropped")]


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_overflow_drops_newest(limits: StrataProcess, version: int) -> None:
    limits_port = mqtt_port(limits)
    topic = unique("overflow")
    cid = unique("offline")
    metric_before = _dropped_metric(limits)
    with Client(limits_port) as sys:
        sys.subscribe("$SYS/broker/messages/dropped", 0)
        before = sys.expect(1, "$SYS/broker/messages/dropped")[-1]
        dropped_before = int(before.payload)
        with Client(limits_port, cid, version=version, clean=False, session_expiry=300) as sub:
            sub.subscribe(topic, 1)
        with Client(limits_port) as pub:
            for i in range(20):
                pub.publish(topic, f"o{i}".encode(), qos=1)
            with Client(limits_port, cid, version=version, clean=False, session_expiry=300) as sub:
                assert sub.session_present
                got = settled(sub, pub, topic)
                assert payloads(got) == [f"o{i}".encode() for i in range(5)]
        wait_for(lambda: _dropped(sys) and _dropped(sys)[-1] >= dropped_before + 15, what="dropped")
        assert _dropped_metric(limits) >= metric_before + 15
        Client(limits_port, cid, version=version, clean=True).close()


def test_outbound_alias_not_taken_by_a_message_too_large_to_send(port: int) -> None:
    topic = unique("alias-big")
    props = Properties(topic_alias_maximum=5, maximum_packet_size=200)
    with Raw(port, properties=props) as sub, Client(port) as pub:
        sub.subscribe(topic, 0)
        pub.publish(topic, b"x" * 500, qos=1)  # not sent: larger than the client accepts
        pub.publish(topic, b"small", qos=1)
        p = sub.expect(Publish)
        assert p.payload == b"small"
        # The client never saw the topic with this alias: it must come with the name.
        assert p.topic == topic, p


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_publish_and_its_dup_in_one_segment_delivered_once(port: int, version: int) -> None:
    topic = unique("dup-batch")
    with Client(port) as sub, Client(port) as marker, Raw(port, version=version) as pub:
        sub.subscribe(topic, 2)
        first = encode(Publish(topic, b"once", 2, packet_id=9), pub.level)
        again = encode(Publish(topic, b"once", 2, dup=True, packet_id=9), pub.level)
        pub.sock.sendall(first + again)  # one read on the server side, most likely
        assert [pub.expect(Pubrec).packet_id, pub.expect(Pubrec).packet_id] == [9, 9]
        pub.send(Pubrel(9))
        assert pub.expect(Pubcomp).packet_id == 9
        assert payloads(sub.barrier(marker, topic, qos=2)) == [b"once"]


def test_outbound_aliases_limited_by_topic_alias_maximum(port: int) -> None:
    base = unique("alias-max")
    with Raw(port, properties=Properties(topic_alias_maximum=1)) as sub, Client(port) as pub:
        sub.subscribe(f"{base}/+", 0)
        for t in ("a", "b", "a", "b"):
            pub.publish(f"{base}/{t}", t.encode(), qos=1)
        got = [sub.expect(Publish) for _ in range(4)]
        seen = [(p.topic, p.properties.topic_alias, p.payload) for p in got]
        assert seen == [
            (f"{base}/a", 1, b"a"),
            (f"{base}/b", None, b"b"),  # no alias left
            ("", 1, b"a"),
            (f"{base}/b", None, b"b"),
        ]


def test_subscription_identifier_on_retained_messages(port: int) -> None:
    base = unique("sid-ret")
    with Client(port) as pub, Client(port) as sub:
        pub.publish(f"{base}/r", b"kept", qos=1, retain=True)
        sub.subscribe(f"{base}/+", 1, subscription_id=11)
        (first,) = sub.expect(1, f"{base}/r")
        assert (first.retain, prop(first, "SubscriptionIdentifier")) == (True, [11])
        sub.subscribe(f"{base}/#", 1, subscription_id=12)
        second = sub.expect(2, f"{base}/r")[1]
        assert (second.retain, prop(second, "SubscriptionIdentifier")) == (True, [12])
        pub.publish(f"{base}/r", b"", qos=1, retain=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription_redelivers_when_a_paho_member_drops(port: int, version: int) -> None:
    topic = unique("shared-paho")
    shared = f"$share/{unique('g')}/{topic}"
    with Client(port, version=version) as b, Client(port) as pub:
        a = Client(port, version=version, auto_ack=False)  # receives, never acknowledges
        a.subscribe(shared, 1)
        b.subscribe(shared, 1)
        b.subscribe(f"{topic}/marker", 1)
        sent = [f"p{i}".encode() for i in range(6)]
        for p in sent:
            pub.publish(topic, p, qos=1)
        wait_for(lambda: len(a.messages(topic)) + len(b.messages(topic)) >= len(sent))
        held = payloads(a.messages(topic))
        assert held, "member a got none (no load balancing)"
        a.drop()
        wait_for(lambda: len(b.messages(topic)) >= len(sent), what="redelivery to b")
        b.barrier(pub, f"{topic}/marker")
        assert sorted(payloads(b.messages(topic))) == sorted(sent)


def test_a_v5_client_beyond_our_receive_maximum_is_disconnected(limits_port: int) -> None:
    raw = Raw(limits_port)
    assert raw.connack.properties.receive_maximum == 10
    topic = unique("recvmax")
    for pid in range(1, 11):  # ten QoS 2 PUBLISHes awaiting PUBREL: the most allowed
        raw.send(Publish(topic, b"x", qos=2, packet_id=pid))
        assert raw.expect(Pubrec).packet_id == pid
    raw.send(Publish(topic, b"x", qos=2, packet_id=11))
    (goodbye,) = raw.until_closed()
    assert isinstance(goodbye, Disconnect)
    assert goodbye.reason_code == 0x93  # Receive Maximum exceeded


@pytest.mark.parametrize("version", VERSIONS)
def test_packets_sent_with_the_connect_are_handled_at_once(port: int, version: int) -> None:
    """A client may pipeline CONNECT, SUBSCRIBE and PUBLISH in one write."""
    level = LEVEL[version]
    topic = unique("pipelined")
    burst = (
        encode(Connect(unique("pipe"), True, 60), level)
        + encode(Subscribe(1, (Subscription(topic, 1),)), level)
        + encode(Publish(topic, b"to myself", qos=1, packet_id=2), level)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(burst)
        reader = PacketReader(version=level)
        got: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 4 and time.monotonic() < deadline:
            packet = reader.next_packet()
            if packet is NEED_DATA:
                reader.receive_data(sock.recv(65536))
            else:
                got.append(packet)
    kinds = sorted(type(p).__name__ for p in got)
    assert kinds == ["Connack", "Puback", "Publish", "Suback"], got
    assert isinstance(got[0], Connack)
    assert next(p for p in got if isinstance(p, Publish)).payload == b"to myself"


# -- limits of a tighter server ---------------------------------------------------------

TIGHT_ENV = {
    "STRATA_MQTT_MAX_CONNECTIONS": "3",
    "STRATA_MQTT_MAX_TOPIC_LEVELS": "3",
    "STRATA_MQTT_MAX_INFLIGHT": "2",
}


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """At most 3 connections, 3 topic levels, 2 deliveries in flight per client."""
    with start_mqtt_server(tmp_path_factory.mktemp("mqtt-tight"), env=TIGHT_ENV) as process:
        yield process


def test_connections_beyond_the_limit_are_closed_and_counted(tight: StrataProcess) -> None:
    port = mqtt_port(tight)
    errors = metric(tight, "strata_protocol_errors_total", protocol="mqtt")
    with Raw(port) as a, Raw(port) as b, Raw(port) as c:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as extra:
            extra.sendall(encode(Connect(unique("extra")), 5))
            with contextlib.suppress(ConnectionResetError):  # closed unread: maybe a reset
                assert extra.recv(16) == b""  # closed, no CONNACK
        for raw in (a, b, c):  # the three admitted ones are unaffected
            assert raw.ping() == []
    assert metric(tight, "strata_protocol_errors_total", protocol="mqtt") == errors + 1
    with Raw(port) as again:  # a place is free again
        assert again.ping() == []


@pytest.mark.parametrize("version", VERSIONS)
def test_topics_and_filters_deeper_than_the_limit_are_refused(
    tight: StrataProcess, version: int
) -> None:
    port = mqtt_port(tight)
    with Raw(port, version=version) as raw:
        raw.send(Subscribe(7, (Subscription("a/b/c/d", 1),)))
        assert raw.expect(Suback).reason_codes == ((0x8F,) if version == V5 else (0x80,))
        raw.subscribe("a/b/+", 1)  # within the limit
        raw.send(Publish("a/b/c/d", b"deep", qos=1, packet_id=1))
        packets = raw.until_closed()
        if version == V5:
            assert [(type(p), getattr(p, "reason_code", None)) for p in packets] == [
                (Disconnect, 0x90)
            ]
        else:
            assert packets == []


def test_the_server_in_flight_cap_applies_without_a_receive_maximum(
    tight: StrataProcess,
) -> None:
    """A 3.1.1 client announces no window: the server's max_inflight (2) is it."""
    port = mqtt_port(tight)
    topic = f"{unique('cap')}/t"
    with Raw(port, version=V3) as sub, Raw(port) as pub:
        sub.subscribe(topic, 1)
        for pid in range(1, 5):
            pub.send(Publish(topic, f"c{pid}".encode(), qos=1, packet_id=pid))
            assert pub.expect(Puback).packet_id == pid
        held = [sub.expect(Publish), sub.expect(Publish)]
        assert sub.ping() == []  # a round trip: nothing else came meanwhile
        sub.send(Puback(held[0].packet_id or 0))
        assert sub.expect(Publish).payload == b"c3"

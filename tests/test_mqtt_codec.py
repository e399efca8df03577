"""Tests for :mod:`frontends.mqtt`, the sans-I/O MQTT 3.1.1 / 5.0 codec.

What is covered:

* byte tables: every packet type in both versions written out by hand from the
  spec, checked against ``encode`` and ``PacketReader`` both ways and fed one
  byte at a time; a few non-canonical (but valid) forms decoded only;
* cross-checks against paho-mqtt's packet builders;
* hypothesis round trips of random valid packets in both versions;
* the fuzzing rule: arbitrary (and mutated valid) bytes fed to readers with and
  without a CONNECT first either decode or raise ``MqttProtocolError``;
* malformed input, each with the reason code the reader must report, and
  packets the encoder must refuse;
* topic validation, matching and shared-subscription parsing.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontends.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    NEED_DATA,
    PROPERTY_TABLE,
    VALID_REASON_CODES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    InvalidTopicError,
    MqttLocalProtocolError,
    MqttProtocolError,
    NeedData,
    Packet,
    PacketReader,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    PropertyContext,
    PropertyType,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReaderState,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    matches,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)
from journal.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, StrataError

R = ReasonCode


def h(text: str) -> bytes:
    """Hex with spaces and ``'ascii'`` quoted runs, for readable byte tables."""
    out = bytearray()
    for i, part in enumerate(text.split("'")):
        out += part.encode() if i % 2 else bytes.fromhex(part)
    return bytes(out)


def decode_all(data: bytes, version: int | None, *, one_byte: bool = False) -> list[Packet]:
    reader = PacketReader(version)
    packets: list[Packet] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if one_byte else [data]
    for chunk in chunks:
        reader.receive_data(chunk)
        while True:
            packet = reader.next_packet()
            if isinstance(packet, NeedData):
                break
            packets.append(packet)
    assert reader.buffered == 0
    return packets


def reader_version(packet: Packet, version: int) -> int | None:
    """CONNECT goes to a server-side reader that learns the version from it."""
    return None if isinstance(packet, Connect) else version


# ------------------------------------------------------------------ byte tables

V4_TABLE: list[tuple[Packet, bytes]] = [
    (Connect("abc"), h("10 0F 0004'MQTT'04 02 003C 0003'abc'")),
    (
        Connect(
            "c",
            clean_start=False,
            keep_alive=10,
            username="u",
            password=b"p",
            will=Will("w", b"x", qos=1, retain=True),
        ),
        h("10 19 0004'MQTT'04 EC 000A 0001'c' 0001'w' 0001'x' 0001'u' 0001'p'"),
    ),
    (Connack(session_present=True), h("20 02 01 00")),
    (Connack(reason_code=5), h("20 02 00 05")),
    (Publish("a/b", b"hi"), h("30 07 0003'a/b' 'hi'")),
    (
        Publish("a/b", b"hi", qos=1, retain=True, dup=True, packet_id=10),
        h("3B 09 0003'a/b' 000A 'hi'"),
    ),
    (Publish("a/b", b"", qos=2, packet_id=0xFFFF), h("34 07 0003'a/b' FFFF")),
    (Puback(10), h("40 02 000A")),
    (Pubrec(10), h("50 02 000A")),
    (Pubrel(10), h("62 02 000A")),
    (Pubcomp(10), h("70 02 000A")),
    (
        Subscribe(1, (Subscription("a/+", 1), Subscription("#", 0))),
        h("82 0C 0001 0003'a/+'01 0001'#'00"),
    ),
    (Suback(1, (1, 0x80)), h("90 04 0001 01 80")),
    (Unsubscribe(2, ("a/+",)), h("A2 07 0002 0003'a/+'")),
    (Unsuback(2), h("B0 02 0002")),
    (Pingreq(), h("C0 00")),
    (Pingresp(), h("D0 00")),
    (Disconnect(), h("E0 00")),
]

V5_TABLE: list[tuple[Packet, bytes]] = [
    (Connect("abc"), h("10 10 0004'MQTT'05 02 003C 00 0003'abc'")),
    (
        Connect(
            "c",
            clean_start=False,
            keep_alive=0,
            will=Will("w", b"x", properties=Properties(will_delay_interval=5)),
            properties=Properties(
                session_expiry_interval=120, receive_maximum=20, user_properties=(("k", "v"),)
            ),
        ),
        h(
            "10 29 0004'MQTT'05 04 0000"
            " 0F 11 00000078 21 0014 26 0001'k' 0001'v'"
            " 0001'c' 05 18 00000005 0001'w' 0001'x'"
        ),
    ),
    (Connack(), h("20 03 00 00 00")),
    (
        Connack(
            session_present=True,
            properties=Properties(
                assigned_client_identifier="id", topic_alias_maximum=10, maximum_qos=1
            ),
        ),
        h("20 0D 01 00 0A 12 0002'id' 22 000A 24 01"),
    ),
    (Connack(reason_code=0x87), h("20 03 00 87 00")),
    (Publish("a/b", b"hi"), h("30 08 0003'a/b' 00 'hi'")),
    (
        Publish(
            "a/b",
            b"hi",
            qos=1,
            packet_id=10,
            properties=Properties(
                payload_format_indicator=1,
                message_expiry_interval=60,
                subscription_identifiers=(1, 200),
                topic_alias=3,
                user_properties=(("a", "1"), ("a", "2")),
            ),
        ),
        h(
            "32 27 0003'a/b' 000A 1D 01 01 02 0000003C 0B 01 0B C801 23 0003"
            " 26 0001'a' 0001'1' 26 0001'a' 0001'2' 'hi'"
        ),
    ),
    (Publish("", b"", properties=Properties(topic_alias=1)), h("30 06 0000 03 23 0001")),
    (Puback(10), h("40 02 000A")),
    (Puback(10, 0x10), h("40 03 000A 10")),
    (
        Puback(10, 0x80, Properties(reason_string="no")),
        h("40 09 000A 80 05 1F 0002'no'"),
    ),
    (Pubrec(10), h("50 02 000A")),
    (Pubrel(10, 0x92), h("62 03 000A 92")),
    (Pubcomp(10), h("70 02 000A")),
    (
        Subscribe(
            1,
            (
                Subscription("a/+", 1, no_local=True, retain_as_published=True, retain_handling=2),
                Subscription("$share/g/x", 2),
            ),
            Properties(subscription_identifiers=(5,)),
        ),
        h("82 18 0001 02 0B 05 0003'a/+' 2D 000A'$share/g/x' 02"),
    ),
    (Suback(1, (1, 2, 0x8F)), h("90 06 0001 00 01 02 8F")),
    (Unsubscribe(2, ("a/+", "b")), h("A2 0B 0002 00 0003'a/+' 0001'b'")),
    (Unsuback(2, (0, 0x11)), h("B0 05 0002 00 00 11")),
    (Pingreq(), h("C0 00")),
    (Pingresp(), h("D0 00")),
    (Disconnect(), h("E0 00")),
    (Disconnect(0x8E), h("E0 01 8E")),
    (Disconnect(0x9C, Properties(server_reference="s")), h("E0 06 9C 04 1C 0001's'")),
    (Auth(), h("F0 00")),
    (
        Auth(0x18, Properties(authentication_method="SCRAM", authentication_data=b"\x01\x02")),
        h("F0 0F 18 0D 15 0005'SCRAM' 16 0002 0102"),
    ),
]

TABLE = [(MQTT_3_1_1, p, b) for p, b in V4_TABLE] + [(MQTT_5, p, b) for p, b in V5_TABLE]
TABLE_IDS = [f"v{v}-{type(p).__name__}-{i}" for i, (v, p, _) in enumerate(TABLE)]


def test_tables_cover_every_packet_type() -> None:
    for version, table in ((MQTT_3_1_1, V4_TABLE), (MQTT_5, V5_TABLE)):
        types = {p.TYPE for p, _ in table}
        expected = set(PacketType) - ({PacketType.AUTH} if version == MQTT_3_1_1 else set())
        assert types == expected


@pytest.mark.parametrize(("version", "packet", "data"), TABLE, ids=TABLE_IDS)
def test_byte_table_encode(version: int, packet: Packet, data: bytes) -> None:
    assert encode(packet, version) == data


@pytest.mark.parametrize(("version", "packet", "data"), TABLE, ids=TABLE_IDS)
@pytest.mark.parametrize("one_byte", [False, True], ids=["whole", "byte-by-byte"])
def test_byte_table_decode(version: int, packet: Packet, data: bytes, one_byte: bool) -> None:
    assert decode_all(data, reader_version(packet, version), one_byte=one_byte) == [packet]


def test_byte_table_as_one_stream() -> None:
    for version, table in ((MQTT_3_1_1, V4_TABLE), (MQTT_5, V5_TABLE)):
        stream = [p for p, _ in table if not isinstance(p, Connect | Disconnect)]
        data = b"".join(encode(p, version) for p in stream)
        assert decode_all(data, version) == stream
        assert decode_all(data, version, one_byte=True) == stream


@pytest.mark.parametrize(
    ("data", "packet"),
    [
        (h("40 03 000A 00"), Puback(10)),
        (h("40 04 000A 00 00"), Puback(10)),
        (h("62 04 000A 92 00"), Pubrel(10, 0x92)),
        (h("E0 01 00"), Disconnect()),
        (h("E0 02 00 00"), Disconnect()),
        (h("F0 01 00"), Auth()),
        (h("30 83 01 0003'a/b' 00") + b"z" * 125, Publish("a/b", b"z" * 125)),
        (
            h("30 10 0001'a' 0C 26 0001'x' 0001'2' 02 00000001"),
            Publish(
                "a",
                properties=Properties(message_expiry_interval=1, user_properties=(("x", "2"),)),
            ),
        ),
    ],
)
def test_v5_decode_only_forms(data: bytes, packet: Packet) -> None:
    """Valid forms the encoder does not choose (long acks, other property order)."""
    assert decode_all(data, MQTT_5) == [packet]
    assert decode_all(data, MQTT_5, one_byte=True) == [packet]


def test_publish_payload_is_bytes_not_a_view() -> None:
    packet = decode_all(encode(Publish("t", b"payload"), MQTT_5), MQTT_5)[0]
    assert isinstance(packet, Publish)
    assert type(packet.payload) is bytes
    assert packet.payload == b"payload"


def test_reader_learns_version_from_connect() -> None:
    for version in (MQTT_3_1_1, MQTT_5):
        reader = PacketReader()
        assert reader.version is None
        assert reader.state is ReaderState.AWAIT_CONNECT
        reader.receive_data(encode(Connect("x"), version) + encode(Pingreq(), version))
        assert reader.next_packet() == Connect("x")
        assert reader.version == version
        assert reader.state is ReaderState.CONNECTED
        assert reader.next_packet() == Pingreq()
        assert reader.next_packet() is NEED_DATA


# ---------------------------------------------------------- paho cross-checks


def _paho_capture(version: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[bytes]]:
    client_mod: Any = importlib.import_module("paho.mqtt.client")
    proto = client_mod.MQTTv5 if version == MQTT_5 else client_mod.MQTTv311
    kwargs: dict[str, Any] = {"client_id": "paho", "protocol": proto}
    if version == MQTT_3_1_1:
        kwargs["clean_session"] = True
    client = client_mod.Client(client_mod.CallbackAPIVersion.VERSION2, **kwargs)
    sent: list[bytes] = []

    def capture(command: int, packet: bytes, mid: int, qos: int, info: Any = None) -> int:
        sent.append(bytes(packet))
        return 0

    monkeypatch.setattr(client, "_packet_queue", capture)
    monkeypatch.setattr(client, "_sock", object())
    return client, sent


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_paho_packets_decode_and_match(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    client, sent = _paho_capture(version, monkeypatch)
    client.username_pw_set("user", "pw")
    client.will_set("will/t", b"bye", qos=1, retain=True)
    client._send_connect(30)
    client._send_publish(7, b"a/b", b"payload", qos=1, retain=True)
    client._send_publish(0, b"a/c", b"", qos=0)
    client._send_command_with_mid(0x40, 7, 0)
    client._send_command_with_mid(0x62, 8, 0)
    client._send_simple_command(0xC0)
    expected: list[Packet] = [
        Connect(
            "paho",
            clean_start=True,
            keep_alive=30,
            username="user",
            password=b"pw",
            will=Will("will/t", b"bye", qos=1, retain=True),
        ),
        Publish("a/b", b"payload", qos=1, retain=True, packet_id=7),
        Publish("a/c", b""),
        Puback(7),
        Pubrel(8),
        Pingreq(),
    ]
    data = b"".join(sent)
    assert decode_all(data, None) == expected
    assert b"".join(encode(p, version) for p in expected) == data


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_paho_subscribe_unsubscribe(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    client, sent = _paho_capture(version, monkeypatch)
    if version == MQTT_5:
        opts: Any = importlib.import_module("paho.mqtt.subscribeoptions")
        topics: list[tuple[bytes, Any]] = [
            (b"a/+", opts.SubscribeOptions(qos=1, noLocal=True, retainHandling=1)),
            (b"#", opts.SubscribeOptions(qos=2)),
        ]
        subs = (Subscription("a/+", 1, no_local=True, retain_handling=1), Subscription("#", 2))
    else:
        topics = [(b"a/+", 1), (b"#", 2)]
        subs = (Subscription("a/+", 1), Subscription("#", 2))
    _, mid = client._send_subscribe(0, topics)
    _, mid2 = client._send_unsubscribe(0, [b"a/+", b"#"])
    expected: list[Packet] = [Subscribe(mid, subs), Unsubscribe(mid2, ("a/+", "#"))]
    assert decode_all(b"".join(sent), version) == expected
    assert [encode(p, version) for p in expected] == sent


def test_paho_v5_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    client, sent = _paho_capture(MQTT_5, monkeypatch)
    props_mod: Any = importlib.import_module("paho.mqtt.properties")
    types_mod: Any = importlib.import_module("paho.mqtt.packettypes")
    props = props_mod.Properties(types_mod.PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 60
    props.ContentType = "text/plain"
    props.ResponseTopic = "re/ply"
    props.CorrelationData = b"\x00\x01"
    props.TopicAlias = 4
    props.UserProperty = [("k", "1"), ("k", "2"), ("a", "b")]
    client._send_publish(3, b"t", b"hello", qos=2, properties=props)
    expected = Publish(
        "t",
        b"hello",
        qos=2,
        packet_id=3,
        properties=Properties(
            payload_format_indicator=1,
            message_expiry_interval=60,
            content_type="text/plain",
            response_topic="re/ply",
            correlation_data=b"\x00\x01",
            topic_alias=4,
            user_properties=(("k", "1"), ("k", "2"), ("a", "b")),
        ),
    )
    assert decode_all(sent[0], MQTT_5) == [expected]
    assert decode_all(encode(expected, MQTT_5), MQTT_5) == [expected]


# ---------------------------------------------------------------- strategies

_CHARS = st.characters(codec="utf-8", blacklist_characters="\x00")
texts = st.text(_CHARS, max_size=12)
_LEVEL = st.text(st.characters(codec="utf-8", blacklist_characters="\x00+#/"), max_size=6)
topic_names = st.lists(_LEVEL, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(_LEVEL, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    if not result:
        return "#"
    if draw(st.integers(0, 4)) == 0:
        group = draw(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1))
        return f"$share/{group}/{result}"
    return result


_BOOLEAN = {
    "payload_format_indicator",
    "request_problem_information",
    "request_response_information",
    "maximum_qos",
    "retain_available",
    "wildcard_subscription_available",
    "subscription_identifier_available",
    "shared_subscription_available",
}
_NONZERO = {"receive_maximum", "topic_alias", "maximum_packet_size"}


def _value_strategy(name: str, typ: PropertyType) -> st.SearchStrategy[Any]:
    low = 1 if name in _NONZERO else 0
    if typ is PropertyType.BYTE:
        return st.integers(0, 1 if name in _BOOLEAN else 255)
    if typ is PropertyType.U16:
        return st.integers(low, 0xFFFF)
    if typ is PropertyType.U32:
        return st.integers(low, 0xFFFF_FFFF)
    if typ is PropertyType.VARINT:
        return st.integers(1, 268_435_455)
    if typ is PropertyType.STR:
        return texts
    if typ is PropertyType.BINARY:
        return st.binary(max_size=12)
    return st.tuples(texts, texts)


@st.composite
def properties(draw: st.DrawFn, ctx: PropertyContext, version: int) -> Properties:
    if version != MQTT_5 or draw(st.integers(0, 3)) == 0:
        return Properties()
    values: dict[str, Any] = {}
    for spec in PROPERTY_TABLE.values():
        if ctx not in spec.allowed or draw(st.integers(0, 3)) != 0:
            continue
        value = _value_strategy(spec.name, spec.type)
        if spec.multiple:
            top = 1 if ctx is PropertyContext.SUBSCRIBE else 3
            values[spec.name] = tuple(draw(st.lists(value, min_size=1, max_size=top)))
        else:
            values[spec.name] = draw(value)
    return Properties(**values)


def _payload(draw: st.DrawFn, props: Properties) -> bytes:
    if props.payload_format_indicator == 1:
        return draw(texts).encode()
    return draw(st.binary(max_size=40))


def _reason(draw: st.DrawFn, version: int, ptype: PacketType) -> int:
    codes = VALID_REASON_CODES.get((version, ptype), frozenset({0}))
    return draw(st.sampled_from(sorted(codes)))


_pids = st.integers(1, 0xFFFF)
_ACK_CLASSES: dict[PacketType, type[Puback | Pubrec | Pubrel | Pubcomp]] = {
    PacketType.PUBACK: Puback,
    PacketType.PUBREC: Pubrec,
    PacketType.PUBREL: Pubrel,
    PacketType.PUBCOMP: Pubcomp,
}


@st.composite
def packets(draw: st.DrawFn, version: int) -> Packet:
    v5 = version == MQTT_5
    kinds = [t for t in PacketType if v5 or t is not PacketType.AUTH]
    ptype = draw(st.sampled_from(kinds))
    C = PropertyContext
    if ptype is PacketType.CONNECT:
        will = None
        if draw(st.booleans()):
            wprops = draw(properties(C.WILL, version))
            will = Will(
                draw(topic_names), _payload(draw, wprops), draw(st.integers(0, 2)),
                draw(st.booleans()), wprops,
            )  # fmt: skip
        username = draw(st.none() | texts)
        password = draw(st.none() | st.binary(max_size=10))
        if not v5 and username is None:
            password = None
        client_id = draw(texts)
        return Connect(
            client_id,
            draw(st.booleans()) if client_id or v5 else True,
            draw(st.integers(0, 0xFFFF)),
            username,
            password,
            will,
            draw(properties(C.CONNECT, version)),
        )
    if ptype is PacketType.CONNACK:
        code = _reason(draw, version, ptype)
        return Connack(
            draw(st.booleans()) if code == 0 else False, code, draw(properties(C.CONNACK, version))
        )
    if ptype is PacketType.PUBLISH:
        props = draw(properties(C.PUBLISH, version))
        qos = draw(st.integers(0, 2))
        topic = draw(topic_names)
        if props.topic_alias is not None and draw(st.booleans()):
            topic = ""
        return Publish(
            topic,
            _payload(draw, props),
            qos,
            draw(st.booleans()),
            draw(st.booleans()) if qos else False,
            draw(_pids) if qos else None,
            props,
        )
    if ptype in (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP):
        cls = _ACK_CLASSES[ptype]
        return cls(
            draw(_pids), _reason(draw, version, ptype), draw(properties(C[ptype.name], version))
        )
    if ptype is PacketType.SUBSCRIBE:
        subs = []
        for topic_filter in draw(st.lists(topic_filters(), min_size=1, max_size=3)):
            if not v5:
                subs.append(Subscription(topic_filter, draw(st.integers(0, 2))))
                continue
            shared = topic_filter.startswith("$share/")
            subs.append(
                Subscription(
                    topic_filter,
                    draw(st.integers(0, 2)),
                    False if shared else draw(st.booleans()),
                    draw(st.booleans()),
                    draw(st.integers(0, 2)),
                )
            )
        return Subscribe(draw(_pids), tuple(subs), draw(properties(C.SUBSCRIBE, version)))
    if ptype is PacketType.SUBACK:
        codes = draw(st.lists(st.just(0), min_size=1, max_size=4))
        codes = [_reason(draw, version, ptype) for _ in codes]
        return Suback(draw(_pids), tuple(codes), draw(properties(C.SUBACK, version)))
    if ptype is PacketType.UNSUBSCRIBE:
        filters = tuple(draw(st.lists(topic_filters(), min_size=1, max_size=3)))
        return Unsubscribe(draw(_pids), filters, draw(properties(C.UNSUBSCRIBE, version)))
    if ptype is PacketType.UNSUBACK:
        if not v5:
            return Unsuback(draw(_pids))
        n = draw(st.integers(1, 4))
        codes = [_reason(draw, version, ptype) for _ in range(n)]
        return Unsuback(draw(_pids), tuple(codes), draw(properties(C.UNSUBACK, version)))
    if ptype is PacketType.PINGREQ:
        return Pingreq()
    if ptype is PacketType.PINGRESP:
        return Pingresp()
    if ptype is PacketType.DISCONNECT:
        return Disconnect(_reason(draw, version, ptype), draw(properties(C.DISCONNECT, version)))
    return Auth(_reason(draw, version, ptype), draw(properties(C.AUTH, version)))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_round_trip(version: int, data: st.DataObject) -> None:
    packet = data.draw(packets(version))
    raw = encode(packet, version)
    assert decode_all(raw, version) == [packet]
    if isinstance(packet, Connect):
        assert decode_all(raw, None) == [packet]
    # Encoding is canonical: decode(encode(p)) encodes to the same bytes.
    assert encode(decode_all(raw, version)[0], version) == raw


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_round_trip_stream_byte_by_byte(version: int, data: st.DataObject) -> None:
    stream = data.draw(
        st.lists(packets(version), max_size=5).map(
            lambda ps: [p for p in ps if not isinstance(p, Connect | Disconnect)]
        )
    )
    raw = b"".join(encode(p, version) for p in stream)
    assert decode_all(raw, version, one_byte=True) == stream


# ------------------------------------------------------------------ fuzzing


def _feed(reader: PacketReader, data: bytes, chunk: int) -> None:
    """The rule: packets or MqttProtocolError; the buffer stays capped; packets re-encode."""
    error: MqttProtocolError | None = None
    try:
        for i in range(0, len(data), chunk):
            reader.receive_data(data[i : i + chunk])
            assert reader.buffered <= reader.max_buffer_size
            while not isinstance(packet := reader.next_packet(), NeedData):
                # Whatever decodes also encodes, and back to the same packet.
                assert reader.version is not None
                assert decode_all(encode(packet, reader.version), reader.version) == [packet]
    except MqttProtocolError as exc:
        error = exc
    if error is None:
        return
    assert isinstance(error.reason_code, ReasonCode)
    # A failed reader stays failed, with the same kind of error.
    assert reader.state is ReaderState.ERROR
    with pytest.raises(MqttProtocolError):
        reader.next_packet()
    with pytest.raises(MqttProtocolError):
        reader.receive_data(b"\x00")


@st.composite
def fuzz_input(draw: st.DrawFn) -> tuple[int | None, bytes, bytes]:
    """(reader version, prefix, bytes): random, or a valid stream with mutations."""
    version = draw(st.sampled_from([MQTT_3_1_1, MQTT_5]))
    prefix = b""
    reader_v: int | None = version
    mode = draw(st.sampled_from(["raw", "after-connect", "mutated"]))
    if mode == "raw":
        return draw(st.sampled_from([None, MQTT_3_1_1, MQTT_5])), b"", draw(st.binary())
    if mode == "after-connect":
        prefix = encode(draw(packets(version).filter(lambda p: isinstance(p, Connect))), version)
        reader_v = None
    stream = bytearray(b"".join(encode(p, version) for p in draw(st.lists(packets(version)))))
    for _ in range(draw(st.integers(0, 4))):
        if not stream:
            break
        at = draw(st.integers(0, len(stream) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            stream[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            stream.insert(at, draw(st.integers(0, 255)))
        else:
            del stream[at]
    return reader_v, prefix, bytes(stream)


@settings(max_examples=500, deadline=None)
@given(fuzz=fuzz_input(), chunk=st.integers(1, 64), limit=st.sampled_from([64, 1 << 20]))
def test_fuzzing_rule(fuzz: tuple[int | None, bytes, bytes], chunk: int, limit: int) -> None:
    version, prefix, data = fuzz
    reader = PacketReader(version, max_packet_size=max(limit, len(prefix)))
    if prefix:
        reader.receive_data(prefix)
        assert isinstance(reader.next_packet(), Connect)
    _feed(reader, data, chunk)


# ----------------------------------------------------------------- malformed

CONNECT_V4 = h("10 0F 0004'MQTT'04 02 003C 0003'abc'")

MALFORMED: list[tuple[str, int | None, bytes, ReasonCode]] = [
    ("packet type 0", MQTT_5, h("00 00"), R.MALFORMED_PACKET),
    ("AUTH in 3.1.1", MQTT_3_1_1, h("F0 00"), R.MALFORMED_PACKET),
    ("5-byte remaining length", MQTT_5, h("30 FF FF FF FF 7F"), R.MALFORMED_PACKET),
    ("over-long remaining length", MQTT_5, h("C0 80 00"), R.MALFORMED_PACKET),
    ("over-long 3-byte length", MQTT_5, h("30 82 80 00"), R.MALFORMED_PACKET),
    ("remaining length too long", MQTT_3_1_1, h("40 03 000A 00"), R.MALFORMED_PACKET),
    ("string past the end", MQTT_3_1_1, h("30 03 0005 61"), R.MALFORMED_PACKET),
    ("PINGREQ with a body", MQTT_5, h("C0 01 00"), R.MALFORMED_PACKET),
    ("invalid UTF-8", MQTT_3_1_1, h("30 03 0001 FF"), R.MALFORMED_PACKET),
    ("UTF-8 surrogate", MQTT_5, h("30 06 0003 EDA080 00"), R.MALFORMED_PACKET),
    ("over-long UTF-8", MQTT_3_1_1, h("30 04 0002 C0AF"), R.MALFORMED_PACKET),
    ("U+0000 in topic", MQTT_3_1_1, h("30 05 0003 61 00 62"), R.MALFORMED_PACKET),
    ("'#' in PUBLISH topic", MQTT_3_1_1, h("30 05 0003'a/#'"), R.TOPIC_NAME_INVALID),
    ("'+' in PUBLISH topic", MQTT_5, h("30 06 0003'a/+' 00"), R.TOPIC_NAME_INVALID),
    ("empty topic, no alias", MQTT_5, h("30 03 0000 00"), R.TOPIC_NAME_INVALID),
    ("empty topic in 3.1.1", MQTT_3_1_1, h("30 02 0000"), R.TOPIC_NAME_INVALID),
    ("PUBLISH QoS 3", MQTT_3_1_1, h("36 07 0003'a/b' 0001"), R.MALFORMED_PACKET),
    ("DUP on QoS 0", MQTT_3_1_1, h("38 05 0003'a/b'"), R.PROTOCOL_ERROR),
    ("PUBACK flags", MQTT_3_1_1, h("41 02 000A"), R.MALFORMED_PACKET),
    ("PUBREL flags 0", MQTT_5, h("60 02 000A"), R.MALFORMED_PACKET),
    ("SUBSCRIBE flags 0", MQTT_3_1_1, h("80 06 0001 0001'a' 00"), R.MALFORMED_PACKET),
    ("PINGREQ flags", MQTT_5, h("C1 00"), R.MALFORMED_PACKET),
    ("PUBLISH packet id 0", MQTT_3_1_1, h("32 07 0003'a/b' 0000"), R.PROTOCOL_ERROR),
    ("PUBACK packet id 0", MQTT_5, h("40 02 0000"), R.PROTOCOL_ERROR),
    ("SUBSCRIBE packet id 0", MQTT_3_1_1, h("82 06 0000 0001'a' 00"), R.PROTOCOL_ERROR),
    ("SUBSCRIBE without filters", MQTT_3_1_1, h("82 02 0001"), R.PROTOCOL_ERROR),
    ("bad topic filter", MQTT_3_1_1, h("82 0A 0001 0005'a/#/b' 00"), R.TOPIC_FILTER_INVALID),
    ("'+' inside a level", MQTT_5, h("82 08 0001 00 0002'a+' 00"), R.TOPIC_FILTER_INVALID),
    ("v4 reserved option bits", MQTT_3_1_1, h("82 06 0001 0001'a' 04"), R.MALFORMED_PACKET),
    ("v5 reserved option bits", MQTT_5, h("82 07 0001 00 0001'a' 40"), R.MALFORMED_PACKET),
    ("subscription QoS 3", MQTT_5, h("82 07 0001 00 0001'a' 03"), R.MALFORMED_PACKET),
    ("retain handling 3", MQTT_5, h("82 07 0001 00 0001'a' 30"), R.PROTOCOL_ERROR),
    (
        "no local on a shared subscription",
        MQTT_5,
        h("82 10 0001 00 000A'$share/g/x' 04"),
        R.PROTOCOL_ERROR,
    ),
    ("UNSUBSCRIBE without filters", MQTT_5, h("A2 03 0001 00"), R.PROTOCOL_ERROR),
    (
        "duplicate property",
        MQTT_5,
        h("30 0E 0001'a' 0A 02 00000001 02 00000002"),
        R.PROTOCOL_ERROR,
    ),
    (
        "property not allowed in PUBLISH",
        MQTT_5,
        h("30 09 0001'a' 05 11 00000001"),
        R.MALFORMED_PACKET,
    ),
    ("unknown property", MQTT_5, h("30 06 0001'a' 02 05 00"), R.MALFORMED_PACKET),
    ("property past its block", MQTT_5, h("30 06 0001'a' 02 23 00"), R.MALFORMED_PACKET),
    ("topic alias 0", MQTT_5, h("30 07 0001'a' 03 23 0000"), R.TOPIC_ALIAS_INVALID),
    ("payload format 2", MQTT_5, h("30 06 0001'a' 02 01 02"), R.PROTOCOL_ERROR),
    ("payload not UTF-8", MQTT_5, h("30 07 0001'a' 02 01 01 FF"), R.PAYLOAD_FORMAT_INVALID),
    ("two SUBSCRIBE ids", MQTT_5, h("82 0B 0001 04 0B01 0B02 0001'a' 00"), R.PROTOCOL_ERROR),
    ("subscription id 0", MQTT_5, h("82 09 0001 02 0B00 0001'a' 00"), R.PROTOCOL_ERROR),
    ("PUBACK reason 0x92", MQTT_5, h("40 03 000A 92"), R.PROTOCOL_ERROR),
    ("PUBREL reason 0x10", MQTT_5, h("62 03 000A 10"), R.PROTOCOL_ERROR),
    ("SUBACK reason 0x03", MQTT_3_1_1, h("90 03 0001 03"), R.PROTOCOL_ERROR),
    ("CONNACK return code 6", MQTT_3_1_1, h("20 02 00 06"), R.PROTOCOL_ERROR),
    ("CONNACK reserved flags", MQTT_3_1_1, h("20 02 02 00"), R.MALFORMED_PACKET),
    ("session present on refusal", MQTT_5, h("20 03 01 87 00"), R.PROTOCOL_ERROR),
    ("DISCONNECT reason 0x01", MQTT_5, h("E0 01 01"), R.PROTOCOL_ERROR),
    ("AUTH reason 0x80", MQTT_5, h("F0 01 80"), R.PROTOCOL_ERROR),
    ("v4 UNSUBACK with codes", MQTT_3_1_1, h("B0 03 0001 00"), R.MALFORMED_PACKET),
    ("v5 UNSUBACK without codes", MQTT_5, h("B0 03 0001 00"), R.PROTOCOL_ERROR),
    ("receive maximum 0", MQTT_5, h("10 10 0004'MQTT'05 02 003C 03 210000 0000"), R.PROTOCOL_ERROR),
    ("first packet not CONNECT", None, h("C0 00"), R.PROTOCOL_ERROR),
    ("second CONNECT", None, CONNECT_V4 + CONNECT_V4, R.PROTOCOL_ERROR),
    ("bytes after DISCONNECT", MQTT_5, h("E0 00 C0 00"), R.PROTOCOL_ERROR),
    (
        "MQTT 3.1 (MQIsdp)",
        None,
        h("10 10 0006'MQIsdp'03 02 003C 0002'ab'"),
        R.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    ("level 6", None, h("10 0C 0004'MQTT'06 02 003C 0000"), R.UNSUPPORTED_PROTOCOL_VERSION),
    ("protocol name", None, h("10 0C 0004'MQTX'04 02 003C 0000"), R.UNSUPPORTED_PROTOCOL_VERSION),
    ("CONNECT reserved flag", None, h("10 0C 0004'MQTT'04 03 003C 0000"), R.MALFORMED_PACKET),
    ("will QoS 3", None, h("10 11 0004'MQTT'04 1E 003C 0000 0001'w' 0000"), R.MALFORMED_PACKET),
    ("will QoS without will", None, h("10 0C 0004'MQTT'04 0A 003C 0000"), R.MALFORMED_PACKET),
    (
        "will topic wildcard",
        None,
        h("10 11 0004'MQTT'04 06 003C 0000 0001'#' 0000"),
        R.TOPIC_NAME_INVALID,
    ),
    (
        "v4 password, no user",
        None,
        h("10 10 0004'MQTT'04 42 003C 0000 0002'pw'"),
        R.MALFORMED_PACKET,
    ),
    (
        "v4 empty id, no clean session",
        None,
        h("10 0C 0004'MQTT'04 00 003C 0000"),
        R.CLIENT_IDENTIFIER_NOT_VALID,
    ),
    ("CONNECT body too short", None, h("10 07 0004'MQTT'04"), R.MALFORMED_PACKET),
]


@pytest.mark.parametrize(
    ("version", "data", "code"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
@pytest.mark.parametrize("one_byte", [False, True], ids=["whole", "byte-by-byte"])
def test_malformed(version: int | None, data: bytes, code: ReasonCode, one_byte: bool) -> None:
    with pytest.raises(MqttProtocolError) as info:
        decode_all(data, version, one_byte=one_byte)
    assert info.value.code == code
    assert info.value.reason_code is code


def test_error_hierarchy() -> None:
    assert issubclass(MqttProtocolError, RemoteProtocolError)
    assert issubclass(MqttLocalProtocolError, LocalProtocolError)
    assert issubclass(InvalidTopicError, StrataError)
    assert issubclass(InvalidTopicError, ValueError)
    err = MqttProtocolError("x", code=R.PACKET_TOO_LARGE)
    assert isinstance(err, ProtocolError)
    assert err.code == 0x95


def test_oversize_packet_rejected_before_the_body() -> None:
    reader = PacketReader(MQTT_5, max_packet_size=100)
    reader.receive_data(h("30 FF 7F"))  # remaining length 16383: only the header is here
    with pytest.raises(MqttProtocolError) as info:
        reader.next_packet()
    assert info.value.code == R.PACKET_TOO_LARGE
    assert reader.buffered == 3
    assert reader.state is ReaderState.ERROR


def test_packet_exactly_at_the_limit() -> None:
    data = encode(Publish("t", b"x" * 50), MQTT_5)
    reader = PacketReader(MQTT_5, max_packet_size=len(data))
    reader.receive_data(data)
    assert reader.next_packet() == Publish("t", b"x" * 50)
    reader = PacketReader(MQTT_5, max_packet_size=len(data) - 1)
    reader.receive_data(data[:2])
    with pytest.raises(MqttProtocolError):
        reader.next_packet()


def test_buffer_is_capped() -> None:
    reader = PacketReader(MQTT_5, max_packet_size=64, max_buffer_size=100)
    reader.receive_data(b"\xc0\x00" * 50)
    with pytest.raises(MqttProtocolError) as info:
        reader.receive_data(b"\xc0")
    assert info.value.code == R.PACKET_TOO_LARGE


def test_reader_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="level"):
        PacketReader(3)
    with pytest.raises(ValueError, match="max_packet_size"):
        PacketReader(MQTT_5, max_packet_size=1)


# -------------------------------------------------------------- local errors

LOCAL_ERRORS: list[tuple[str, int, Packet, ReasonCode]] = [
    ("wildcard topic", MQTT_5, Publish("a/#"), R.TOPIC_NAME_INVALID),
    ("empty topic", MQTT_3_1_1, Publish(""), R.TOPIC_NAME_INVALID),
    (
        "alias in 3.1.1",
        MQTT_3_1_1,
        Publish("", properties=Properties(topic_alias=1)),
        R.MALFORMED_PACKET,
    ),
    ("QoS 3", MQTT_5, Publish("a", qos=3, packet_id=1), R.MALFORMED_PACKET),
    ("QoS 1 without id", MQTT_5, Publish("a", qos=1), R.PROTOCOL_ERROR),
    ("QoS 0 with id", MQTT_5, Publish("a", packet_id=1), R.PROTOCOL_ERROR),
    ("packet id 0", MQTT_3_1_1, Puback(0), R.PROTOCOL_ERROR),
    ("packet id 65536", MQTT_3_1_1, Puback(65536), R.PROTOCOL_ERROR),
    ("reason in 3.1.1", MQTT_3_1_1, Puback(1, 0x10), R.PROTOCOL_ERROR),
    (
        "properties in 3.1.1",
        MQTT_3_1_1,
        Disconnect(properties=Properties(reason_string="x")),
        R.MALFORMED_PACKET,
    ),
    ("AUTH in 3.1.1", MQTT_3_1_1, Auth(), R.MALFORMED_PACKET),
    (
        "property not allowed",
        MQTT_5,
        Puback(1, properties=Properties(topic_alias=2)),
        R.MALFORMED_PACKET,
    ),
    (
        "boolean property 2",
        MQTT_5,
        Connack(properties=Properties(retain_available=2)),
        R.PROTOCOL_ERROR,
    ),
    (
        "u16 property overflow",
        MQTT_5,
        Connack(properties=Properties(server_keep_alive=1 << 16)),
        R.PROTOCOL_ERROR,
    ),
    ("bad filter", MQTT_5, Unsubscribe(1, ("a#",)), R.TOPIC_FILTER_INVALID),
    ("bad share", MQTT_5, Subscribe(1, (Subscription("$share/g"),)), R.TOPIC_FILTER_INVALID),
    (
        "v5 options in 3.1.1",
        MQTT_3_1_1,
        Subscribe(1, (Subscription("a", no_local=True),)),
        R.MALFORMED_PACKET,
    ),
    ("SUBACK reason", MQTT_5, Suback(1, (0x11,)), R.PROTOCOL_ERROR),
    ("will QoS 3", MQTT_5, Connect("c", will=Will("w", qos=3)), R.MALFORMED_PACKET),
    ("keep alive", MQTT_5, Connect("c", keep_alive=70000), R.MALFORMED_PACKET),
]


@pytest.mark.parametrize(
    ("version", "packet", "code"),
    [e[1:] for e in LOCAL_ERRORS],
    ids=[e[0] for e in LOCAL_ERRORS],
)
def test_encode_refuses(version: int, packet: Packet, code: ReasonCode) -> None:
    with pytest.raises(MqttLocalProtocolError) as info:
        encode(packet, version)
    assert info.value.code == code


@pytest.mark.parametrize(
    "packet",
    [
        Connect("\ud800"),
        Connect("a\x00b"),
        Publish("t", properties=Properties(content_type="x" * 70000)),
        Publish("t", properties=Properties(correlation_data=b"x" * 70000)),
    ],
    ids=["surrogate", "nul", "long string", "long binary"],
)
def test_encode_refuses_strings(packet: Packet) -> None:
    with pytest.raises(MqttLocalProtocolError):
        encode(packet, MQTT_5)


def test_encode_refuses_unknown_version_and_objects() -> None:
    with pytest.raises(MqttLocalProtocolError) as info:
        encode(Pingreq(), 3)
    assert info.value.code == R.UNSUPPORTED_PROTOCOL_VERSION
    with pytest.raises(MqttLocalProtocolError):
        encode("PINGREQ", MQTT_5)  # type: ignore[arg-type]


# -------------------------------------------------------------------- topics

MATCHES: list[tuple[str, str, bool]] = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("sport/#", "sports", False),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "sport", True),
    ("+", "/sport", False),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+/tennis/#", "sport/tennis", True),
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),
    ("a/b", "a/b/c", False),
    ("a//b", "a//b", True),
    ("+/+/+", "a//b", True),
    ("#", "$SYS/broker/uptime", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    validate_topic_filter(topic_filter)
    validate_topic_name(topic)
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/group/#", ("group", "#")),
        ("$share/g/+/x", ("g", "+/x")),
        ("$share/g//", ("g", "/")),
        ("$share/g", None),
        ("$share/g/", None),
        ("$share//a", None),
        ("$share/+/a", None),
        ("$share/g#/a", None),
        ("$share/g/a#", None),
        ("$shared/g/a", None),
        ("a/b", None),
    ],
)
def test_parse_shared(topic_filter: str, expected: tuple[str, str] | None) -> None:
    assert parse_shared(topic_filter) == expected


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "a/+/b", "a/#", "/", "+/+", "$SYS/#", "$share/g/#", "a//b", "a b/ü"],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter", ["", "a#", "a/#/b", "#/a", "a+", "a/+b/c", "++", "a\x00b", "$share/g", "\ud800"]
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.code == R.TOPIC_FILTER_INVALID


@pytest.mark.parametrize("topic", ["", "a/+", "#", "a/#", "a\x00", "\udfff", "x" * 65536])
def test_invalid_topic_names(topic: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_name(topic)
    assert info.value.code == R.TOPIC_NAME_INVALID


def test_topic_name_limit_is_in_bytes() -> None:
    validate_topic_name("x" * 65535)
    with pytest.raises(InvalidTopicError):
        validate_topic_name("é" * 32768)

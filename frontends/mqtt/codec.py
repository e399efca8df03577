"""The MQTT 3.1.1 / 5.0 codec: packets to bytes and bytes to packets, no I/O.

How it works. :func:`encode` turns a packet from :mod:`.packets` into the bytes
of one control packet for a protocol level (4 = 3.1.1, 5 = 5.0). A
:class:`PacketReader` is fed bytes with ``receive_data`` and hands out packets
from ``next_packet`` (or :data:`NEED_DATA`). A reader made without a version
expects CONNECT first and takes the level from it (the server side); a reader
made with a version (the client side, or tests) decodes anything.

The reader checks the fixed header as soon as its bytes arrive: the packet
type against the reader's state table, the reserved flag bits, and the
remaining length (at most four bytes, minimal encoding) against
``max_packet_size`` *before* the body is buffered. The body is decoded from a
memoryview over the buffer; a PUBLISH payload is copied out exactly once.

Semantic rules shared by both directions (reason codes valid for the packet,
packet identifiers non-zero, topic names and filters, QoS, properties allowed
in the packet and their values) live in :func:`_validate`, which raises
:class:`MqttProtocolError` on decode and :class:`MqttLocalProtocolError` on
encode. Every error carries the v5 reason code the front end should answer with.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any

from .errors import (
    InvalidTopicError,
    MqttLocalProtocolError,
    MqttProtocolError,
    ReasonCode,
)
from .packets import (
    NO_PROPERTIES,
    PROPERTY_TABLE,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
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
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from .topics import parse_shared, validate_topic_filter, validate_topic_name

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "MQTT_3_1_1",
    "MQTT_5",
    "NEED_DATA",
    "PROTOCOL_LEVELS",
    "VALID_REASON_CODES",
    "NeedData",
    "PacketReader",
    "ReaderState",
    "encode",
]

MQTT_3_1_1 = 4
MQTT_5 = 5
PROTOCOL_LEVELS = (MQTT_3_1_1, MQTT_5)
MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable byte integer
DEFAULT_MAX_PACKET_SIZE = 1 << 20
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFF_FFFF

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

_Err = type[MqttProtocolError] | type[MqttLocalProtocolError]
_R = ReasonCode
_PT = PacketType


class NeedData:
    """The type of :data:`NEED_DATA` (for ``isinstance`` and annotations)."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()
"""``next_packet`` has no complete packet yet: feed more bytes."""


# ------------------------------------------------------------------ reason codes

_ACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_REL_CODES = frozenset({0x00, 0x92})
VALID_REASON_CODES: dict[tuple[int, PacketType], frozenset[int]] = {
    (MQTT_3_1_1, _PT.CONNACK): frozenset(range(6)),
    (MQTT_3_1_1, _PT.SUBACK): frozenset({0x00, 0x01, 0x02, 0x80}),
    (MQTT_5, _PT.CONNACK): frozenset(
        {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C}
        | {0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
    ),
    (MQTT_5, _PT.PUBACK): _ACK_CODES,
    (MQTT_5, _PT.PUBREC): _ACK_CODES,
    (MQTT_5, _PT.PUBREL): _REL_CODES,
    (MQTT_5, _PT.PUBCOMP): _REL_CODES,
    (MQTT_5, _PT.SUBACK): frozenset(
        {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
    ),
    (MQTT_5, _PT.UNSUBACK): frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    (MQTT_5, _PT.DISCONNECT): frozenset(
        {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90}
        | set(range(0x93, 0xA3))
    ),
    (MQTT_5, _PT.AUTH): frozenset({0x00, 0x18, 0x19}),
}
"""Reason (3.1.1: return) codes each packet may carry; absent: only 0."""

# Fixed-header flags every packet type but PUBLISH must carry (spec 2.1.3).
_FIXED_FLAGS: dict[PacketType, int] = {t: 0 for t in PacketType}
_FIXED_FLAGS.update({_PT.PUBREL: 2, _PT.SUBSCRIBE: 2, _PT.UNSUBSCRIBE: 2})

_BOOLEAN_PROPERTIES = frozenset(
    {
        "payload_format_indicator",
        "request_problem_information",
        "request_response_information",
        "maximum_qos",
        "retain_available",
        "wildcard_subscription_available",
        "subscription_identifier_available",
        "shared_subscription_available",
    }
)
_NONZERO_PROPERTIES = frozenset({"receive_maximum", "topic_alias", "maximum_packet_size"})
_NO_PROPERTIES = NO_PROPERTIES  # the shared instance: is_empty() is then an identity check


# ----------------------------------------------------------------- reader state


class ReaderState(enum.Enum):
    AWAIT_CONNECT = "await_connect"  # server side, before CONNECT
    CONNECTED = "connected"  # server side, after CONNECT
    OPEN = "open"  # version known from the start: any packet
    CLOSED = "closed"  # after DISCONNECT: nothing may follow
    ERROR = "error"  # a packet failed; the stream is out of step


_S = ReaderState
_TRANSITIONS: dict[tuple[ReaderState, PacketType], ReaderState] = {
    (_S.AWAIT_CONNECT, _PT.CONNECT): _S.CONNECTED,
    **{(_S.CONNECTED, t): _S.CONNECTED for t in PacketType if t is not _PT.CONNECT},
    (_S.CONNECTED, _PT.DISCONNECT): _S.CLOSED,
    **{(_S.OPEN, t): _S.OPEN for t in PacketType},
    (_S.OPEN, _PT.DISCONNECT): _S.CLOSED,
}
"""Packets each reader state accepts, and the state after; anything else is 0x82."""


# ------------------------------------------------------------------- validation


def _check_packet_id(packet_id: int | None, err: _Err) -> None:
    if packet_id is None or not 0 < packet_id <= _MAX_U16:
        raise err(f"packet identifier {packet_id!r} not in 1..65535", code=_R.PROTOCOL_ERROR)


def _check_reason(code: int, ptype: PacketType, version: int, err: _Err) -> None:
    allowed = VALID_REASON_CODES.get((version, ptype), frozenset({0}))
    if code not in allowed:
        raise err(f"reason code {code:#04x} not valid in {ptype.name}", code=_R.PROTOCOL_ERROR)


def _check_qos(qos: int, err: _Err) -> None:
    if qos not in (0, 1, 2):
        raise err(f"QoS {qos} is not 0, 1 or 2", code=_R.MALFORMED_PACKET)


def _check_properties(props: Properties, ctx: PropertyContext, version: int, err: _Err) -> None:
    if props is _NO_PROPERTIES:
        return
    if version != MQTT_5:
        if not props.is_empty():
            raise err("MQTT 3.1.1 packets carry no properties", code=_R.MALFORMED_PACKET)
        return
    for spec in PROPERTY_TABLE.values():
        value = getattr(props, spec.name)
        if value is None or value == ():
            continue
        if ctx not in spec.allowed:
            raise err(
                f"property {spec.id.name} not allowed in {ctx.value}", code=_R.MALFORMED_PACKET
            )
        values = value if spec.multiple else (value,)
        for v in values:
            _check_property_value(spec.name, spec.type, v, err)
    if ctx is PropertyContext.SUBSCRIBE and len(props.subscription_identifiers) > 1:
        raise err("SUBSCRIBE carries at most one subscription identifier", code=_R.PROTOCOL_ERROR)


def _check_property_value(name: str, typ: PropertyType, v: Any, err: _Err) -> None:
    if typ is PropertyType.BYTE:
        limit = 1 if name in _BOOLEAN_PROPERTIES else 0xFF
        if not 0 <= v <= limit:
            raise err(f"property {name} = {v} out of range 0..{limit}", code=_R.PROTOCOL_ERROR)
    elif typ is PropertyType.U16 or typ is PropertyType.U32:
        top = _MAX_U16 if typ is PropertyType.U16 else _MAX_U32
        low = 1 if name in _NONZERO_PROPERTIES else 0
        if not low <= v <= top:
            # a topic alias of 0 has its own code (spec 3.3.2.3.4)
            code = _R.TOPIC_ALIAS_INVALID if name == "topic_alias" else _R.PROTOCOL_ERROR
            raise err(f"property {name} = {v} out of range {low}..{top}", code=code)
    elif typ is PropertyType.VARINT and not 0 < v <= MAX_REMAINING_LENGTH:
        raise err(f"subscription identifier {v} out of range", code=_R.PROTOCOL_ERROR)


def _check_topic_name(topic: str, err: _Err) -> None:
    try:
        validate_topic_name(topic)
    except InvalidTopicError as exc:
        raise err(str(exc), code=exc.code) from None


def _check_topic_filter(topic_filter: str, err: _Err) -> None:
    try:
        validate_topic_filter(topic_filter)
    except InvalidTopicError as exc:
        raise err(str(exc), code=exc.code) from None


def _validate(packet: Packet, version: int, err: _Err) -> None:
    """The rules both directions share; raise ``err`` with a reason code."""
    if isinstance(packet, Pingreq | Pingresp):
        return
    ctx = PropertyContext[packet.TYPE.name]
    if isinstance(packet, Publish):
        _check_qos(packet.qos, err)
        if packet.qos:
            _check_packet_id(packet.packet_id, err)
        elif packet.packet_id is not None:
            raise err("QoS 0 PUBLISH has no packet identifier", code=_R.PROTOCOL_ERROR)
        elif packet.dup:
            raise err("DUP set on a QoS 0 PUBLISH", code=_R.PROTOCOL_ERROR)
        _check_properties(packet.properties, ctx, version, err)
        if packet.topic or packet.properties.topic_alias is None:
            _check_topic_name(packet.topic, err)
        if packet.properties.payload_format_indicator == 1:
            try:
                packet.payload.decode("utf-8")
            except UnicodeDecodeError:
                raise err("payload is not UTF-8", code=_R.PAYLOAD_FORMAT_INVALID) from None
        return
    if isinstance(packet, Puback | Pubrec | Pubrel | Pubcomp):
        _check_packet_id(packet.packet_id, err)
        _check_reason(packet.reason_code, packet.TYPE, version, err)
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Connect):
        if not 0 <= packet.keep_alive <= _MAX_U16:
            raise err("keep alive out of range", code=_R.MALFORMED_PACKET)
        if version == MQTT_3_1_1:
            if packet.password is not None and packet.username is None:
                raise err("3.1.1: password without user name", code=_R.MALFORMED_PACKET)
            if not packet.client_id and not packet.clean_start:
                raise err(
                    "3.1.1: empty client id needs clean session",
                    code=_R.CLIENT_IDENTIFIER_NOT_VALID,
                )
        if packet.will is not None:
            _check_qos(packet.will.qos, err)
            _check_topic_name(packet.will.topic, err)
            _check_properties(packet.will.properties, PropertyContext.WILL, version, err)
            if packet.will.properties.payload_format_indicator == 1:
                try:
                    packet.will.payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise err("will payload is not UTF-8", code=_R.PAYLOAD_FORMAT_INVALID) from None
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Connack):
        _check_reason(packet.reason_code, packet.TYPE, version, err)
        if packet.session_present and packet.reason_code:
            raise err("session present on a refused CONNACK", code=_R.PROTOCOL_ERROR)
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Subscribe):
        _check_packet_id(packet.packet_id, err)
        if not packet.subscriptions:
            raise err("SUBSCRIBE without topic filters", code=_R.PROTOCOL_ERROR)
        for sub in packet.subscriptions:
            _check_topic_filter(sub.topic_filter, err)
            _check_qos(sub.qos, err)
            if version == MQTT_3_1_1:
                if sub.no_local or sub.retain_as_published or sub.retain_handling:
                    raise err("3.1.1 subscriptions have only a QoS", code=_R.MALFORMED_PACKET)
            elif sub.retain_handling not in (0, 1, 2):
                raise err("retain handling must be 0, 1 or 2", code=_R.PROTOCOL_ERROR)
            elif sub.no_local and parse_shared(sub.topic_filter) is not None:
                raise err("no local on a shared subscription", code=_R.PROTOCOL_ERROR)
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Suback):
        _check_packet_id(packet.packet_id, err)
        if not packet.reason_codes:
            raise err("SUBACK without reason codes", code=_R.PROTOCOL_ERROR)
        for code in packet.reason_codes:
            _check_reason(code, packet.TYPE, version, err)
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Unsubscribe):
        _check_packet_id(packet.packet_id, err)
        if not packet.topic_filters:
            raise err("UNSUBSCRIBE without topic filters", code=_R.PROTOCOL_ERROR)
        for topic_filter in packet.topic_filters:
            _check_topic_filter(topic_filter, err)
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Unsuback):
        _check_packet_id(packet.packet_id, err)
        if version == MQTT_3_1_1:
            if packet.reason_codes:
                raise err("3.1.1 UNSUBACK has no reason codes", code=_R.MALFORMED_PACKET)
        elif not packet.reason_codes:
            raise err("UNSUBACK without reason codes", code=_R.PROTOCOL_ERROR)
        for code in packet.reason_codes:
            _check_reason(code, packet.TYPE, version, err)
        _check_properties(packet.properties, ctx, version, err)
    elif isinstance(packet, Disconnect | Auth):
        if version == MQTT_3_1_1 and isinstance(packet, Auth):
            raise err("AUTH does not exist in 3.1.1", code=_R.MALFORMED_PACKET)
        _check_reason(packet.reason_code, packet.TYPE, version, err)
        _check_properties(packet.properties, ctx, version, err)


# --------------------------------------------------------------------- encoding


def _put_varint(out: bytearray, n: int) -> None:
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise MqttLocalProtocolError(f"{n} does not fit a variable byte integer")
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _put_u16(out: bytearray, n: int) -> None:
    if not 0 <= n <= _MAX_U16:
        raise MqttLocalProtocolError(f"{n} does not fit two bytes")
    out += _U16.pack(n)


def _put_binary(out: bytearray, data: bytes) -> None:
    if len(data) > _MAX_U16:
        raise MqttLocalProtocolError(f"{len(data)} bytes of binary data, more than 65535")
    out += _U16.pack(len(data))
    out += data


def _put_str(out: bytearray, s: str) -> None:
    if "\x00" in s:
        raise MqttLocalProtocolError(f"string {s!r} contains U+0000")
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        raise MqttLocalProtocolError(f"string {s!r} is not valid Unicode") from None
    _put_binary(out, raw)


def _put_properties(out: bytearray, props: Properties, version: int) -> None:
    if version != MQTT_5:
        return
    if props is _NO_PROPERTIES or props.is_empty():
        out.append(0)
        return
    block = bytearray()
    for spec in PROPERTY_TABLE.values():
        value = getattr(props, spec.name)
        if value is None or value == ():
            continue
        for v in value if spec.multiple else (value,):
            block.append(spec.id)
            typ = spec.type
            if typ is PropertyType.BYTE:
                block.append(v)
            elif typ is PropertyType.U16:
                block += _U16.pack(v)
            elif typ is PropertyType.U32:
                block += _U32.pack(v)
            elif typ is PropertyType.VARINT:
                _put_varint(block, v)
            elif typ is PropertyType.STR:
                _put_str(block, v)
            elif typ is PropertyType.BINARY:
                _put_binary(block, v)
            else:
                _put_str(block, v[0])
                _put_str(block, v[1])
    _put_varint(out, len(block))
    out += block


def _enc_connect(p: Connect, version: int, out: bytearray) -> int:
    _put_str(out, "MQTT")
    out.append(version)
    flags = 0x02 if p.clean_start else 0
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
    if p.password is not None:
        flags |= 0x40
    if p.username is not None:
        flags |= 0x80
    out.append(flags)
    out += _U16.pack(p.keep_alive)
    _put_properties(out, p.properties, version)
    _put_str(out, p.client_id)
    if p.will is not None:
        _put_properties(out, p.will.properties, version)
        _put_str(out, p.will.topic)
        _put_binary(out, p.will.payload)
    if p.username is not None:
        _put_str(out, p.username)
    if p.password is not None:
        _put_binary(out, p.password)
    return 0


def _enc_connack(p: Connack, version: int, out: bytearray) -> int:
    out.append(1 if p.session_present else 0)
    out.append(p.reason_code)
    _put_properties(out, p.properties, version)
    return 0


def _enc_publish(p: Publish, version: int, out: bytearray) -> int:
    _put_str(out, p.topic)
    if p.packet_id is not None:
        out += _U16.pack(p.packet_id)
    _put_properties(out, p.properties, version)
    out += p.payload
    return (0x08 if p.dup else 0) | (p.qos << 1) | (1 if p.retain else 0)


def _enc_ack(p: Puback | Pubrec | Pubrel | Pubcomp, version: int, out: bytearray) -> int:
    out += _U16.pack(p.packet_id)
    if version == MQTT_5 and (p.reason_code or not p.properties.is_empty()):
        out.append(p.reason_code)
        if not p.properties.is_empty():
            _put_properties(out, p.properties, version)
    return _FIXED_FLAGS[p.TYPE]


def _enc_subscribe(p: Subscribe, version: int, out: bytearray) -> int:
    out += _U16.pack(p.packet_id)
    _put_properties(out, p.properties, version)
    for sub in p.subscriptions:
        _put_str(out, sub.topic_filter)
        options = sub.qos
        if sub.no_local:
            options |= 0x04
        if sub.retain_as_published:
            options |= 0x08
        out.append(options | (sub.retain_handling << 4))
    return 2


def _enc_suback(p: Suback | Unsuback, version: int, out: bytearray) -> int:
    out += _U16.pack(p.packet_id)
    _put_properties(out, p.properties, version)
    out += bytes(p.reason_codes)
    return 0


def _enc_unsubscribe(p: Unsubscribe, version: int, out: bytearray) -> int:
    out += _U16.pack(p.packet_id)
    _put_properties(out, p.properties, version)
    for topic_filter in p.topic_filters:
        _put_str(out, topic_filter)
    return 2


def _enc_empty(p: Pingreq | Pingresp, version: int, out: bytearray) -> int:
    return 0


def _enc_disconnect(p: Disconnect | Auth, version: int, out: bytearray) -> int:
    if version == MQTT_5 and (p.reason_code or not p.properties.is_empty()):
        out.append(p.reason_code)
        if not p.properties.is_empty():
            _put_properties(out, p.properties, version)
    return 0


_ENCODERS: dict[type[Any], Callable[[Any, int, bytearray], int]] = {
    Connect: _enc_connect,
    Connack: _enc_connack,
    Publish: _enc_publish,
    Puback: _enc_ack,
    Pubrec: _enc_ack,
    Pubrel: _enc_ack,
    Pubcomp: _enc_ack,
    Subscribe: _enc_subscribe,
    Suback: _enc_suback,
    Unsubscribe: _enc_unsubscribe,
    Unsuback: _enc_suback,
    Pingreq: _enc_empty,
    Pingresp: _enc_empty,
    Disconnect: _enc_disconnect,
    Auth: _enc_disconnect,
}


def encode(packet: Packet, version: int) -> bytes:
    """The bytes of ``packet`` at protocol level ``version`` (4 or 5).

    Raises :class:`MqttLocalProtocolError` if the packet breaks the spec or
    uses something that level cannot express.
    """
    if version not in PROTOCOL_LEVELS:
        raise MqttLocalProtocolError(
            f"protocol level {version!r} is not 4 (3.1.1) or 5 (5.0)",
            code=_R.UNSUPPORTED_PROTOCOL_VERSION,
        )
    encoder = _ENCODERS.get(type(packet))
    if encoder is None:
        raise MqttLocalProtocolError(f"{packet!r} is not an MQTT packet")
    _validate(packet, version, MqttLocalProtocolError)
    body = bytearray()
    flags = encoder(packet, version, body)
    out = bytearray(((packet.TYPE << 4) | flags,))
    _put_varint(out, len(body))
    out += body
    return bytes(out)


def encode_properties(props: Properties) -> bytes:
    """A v5 property block (length included), for :func:`encode_publish`."""
    out = bytearray()
    _put_properties(out, props, MQTT_5)
    return bytes(out)


def encode_ack(packet_type: PacketType, packet_id: int) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP with reason 0 and no properties: 4 bytes in both versions."""
    return bytes(
        ((packet_type << 4) | _FIXED_FLAGS[packet_type], 2, packet_id >> 8, packet_id & 0xFF)
    )


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: bytes | None,
) -> bytes:
    """A PUBLISH without :func:`encode`'s checks, for a server forwarding messages.

    The caller vouches for the fields: ``topic`` is a valid UTF-8 topic name,
    ``packet_id`` is 1..65535 when ``qos`` > 0, and ``properties`` is a v5
    block from :func:`encode_properties` (None at level 4). A hypothesis test
    keeps it byte-identical to :func:`encode`.
    """
    n = len(topic)
    head = bytes((n >> 8, n & 0xFF)) + topic
    if qos:
        head += bytes((packet_id >> 8, packet_id & 0xFF))
    if properties is not None:
        head += properties
    remaining = len(head) + len(payload)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    if remaining < 0x80:
        return bytes((first, remaining)) + head + payload
    fixed = bytearray((first,))
    _put_varint(fixed, remaining)
    return bytes(fixed) + head + payload


# --------------------------------------------------------------------- decoding


def _malformed(message: str) -> MqttProtocolError:
    return MqttProtocolError(message, code=_R.MALFORMED_PACKET)


class _Cursor:
    """Reads fields from a packet body; running past the end is malformed."""

    __slots__ = ("end", "mv", "pos")

    def __init__(self, mv: memoryview, pos: int, end: int) -> None:
        self.mv = mv
        self.pos = pos
        self.end = end

    def _take(self, n: int) -> int:
        start = self.pos
        if start + n > self.end:
            raise _malformed("packet ends in the middle of a field")
        self.pos = start + n
        return start

    def u8(self) -> int:
        return self.mv[self._take(1)]

    def u16(self) -> int:
        return int(_U16.unpack_from(self.mv, self._take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack_from(self.mv, self._take(4))[0])

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise _malformed("variable byte integer is not minimally encoded")
                return value
        raise _malformed("variable byte integer longer than four bytes")

    def binary(self) -> bytes:
        n = self.u16()
        start = self._take(n)
        return bytes(self.mv[start : start + n])

    def string(self) -> str:
        n = self.u16()
        start = self._take(n)
        try:
            s = str(self.mv[start : start + n], "utf-8")
        except UnicodeDecodeError:
            raise _malformed("string is not well-formed UTF-8") from None
        if "\x00" in s:
            raise _malformed("string contains U+0000")
        return s

    def rest(self) -> bytes:
        start = self.pos
        self.pos = self.end
        return bytes(self.mv[start : self.end])

    @property
    def remaining(self) -> int:
        return self.end - self.pos


def _read_properties(cur: _Cursor, ctx: PropertyContext) -> Properties:
    length = cur.varint()
    if length == 0:
        return _NO_PROPERTIES
    end = cur._take(length) + length
    inner = _Cursor(cur.mv, end - length, end)
    found: dict[str, Any] = {}
    while inner.remaining:
        pid = inner.varint()
        spec = PROPERTY_TABLE.get(pid)
        if spec is None:
            raise _malformed(f"unknown property identifier {pid:#04x}")
        if ctx not in spec.allowed:
            raise _malformed(f"property {spec.id.name} not allowed in {ctx.value}")
        typ = spec.type
        value: Any
        if typ is PropertyType.BYTE:
            value = inner.u8()
        elif typ is PropertyType.U16:
            value = inner.u16()
        elif typ is PropertyType.U32:
            value = inner.u32()
        elif typ is PropertyType.VARINT:
            value = inner.varint()
        elif typ is PropertyType.STR:
            value = inner.string()
        elif typ is PropertyType.BINARY:
            value = inner.binary()
        else:
            value = (inner.string(), inner.string())
        if spec.multiple:
            found.setdefault(spec.name, []).append(value)
        elif spec.name in found:
            raise MqttProtocolError(
                f"property {spec.id.name} appears twice", code=_R.PROTOCOL_ERROR
            )
        else:
            found[spec.name] = value
    for name in ("user_properties", "subscription_identifiers"):
        if name in found:
            found[name] = tuple(found[name])
    return Properties(**found)


def _dec_connect(cur: _Cursor, flags: int, version: int) -> Connect:
    name = cur.string()
    level = cur.u8()
    if name != "MQTT" or level not in PROTOCOL_LEVELS:
        raise MqttProtocolError(
            f"protocol {name!r} level {level} is not MQTT 3.1.1 or 5.0",
            code=_R.UNSUPPORTED_PROTOCOL_VERSION,
        )
    cflags = cur.u8()
    if cflags & 0x01:
        raise _malformed("reserved CONNECT flag set")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    if not will_flag and (will_qos or will_retain):
        raise _malformed("will QoS or retain without a will")
    if will_qos == 3:
        raise _malformed("will QoS 3")
    keep_alive = cur.u16()
    props = _read_properties(cur, PropertyContext.CONNECT) if level == MQTT_5 else _NO_PROPERTIES
    client_id = cur.string()
    will = None
    if will_flag:
        will_props = (
            _read_properties(cur, PropertyContext.WILL) if level == MQTT_5 else _NO_PROPERTIES
        )
        topic = cur.string()
        will = Will(topic, cur.binary(), will_qos, will_retain, will_props)
    username = cur.string() if cflags & 0x80 else None
    password = cur.binary() if cflags & 0x40 else None
    return Connect(client_id, bool(cflags & 0x02), keep_alive, username, password, will, props)


def _dec_connack(cur: _Cursor, flags: int, version: int) -> Connack:
    ack_flags = cur.u8()
    if ack_flags & 0xFE:
        raise _malformed("reserved CONNACK flag set")
    code = cur.u8()
    props = _read_properties(cur, PropertyContext.CONNACK) if version == MQTT_5 else _NO_PROPERTIES
    return Connack(bool(ack_flags), code, props)


def _dec_publish(cur: _Cursor, flags: int, version: int) -> Publish:
    qos = (flags >> 1) & 0x03
    topic = cur.string()
    packet_id = cur.u16() if qos else None
    props = _read_properties(cur, PropertyContext.PUBLISH) if version == MQTT_5 else _NO_PROPERTIES
    return Publish(topic, cur.rest(), qos, bool(flags & 1), bool(flags & 8), packet_id, props)


def _dec_ack(cur: _Cursor, ptype: PacketType, version: int) -> tuple[int, int, Properties]:
    packet_id = cur.u16()
    code = 0
    props = _NO_PROPERTIES
    if version == MQTT_5 and cur.remaining:
        code = cur.u8()
        if cur.remaining:
            props = _read_properties(cur, PropertyContext[ptype.name])
    return packet_id, code, props


def _dec_puback(cur: _Cursor, flags: int, version: int) -> Puback:
    return Puback(*_dec_ack(cur, _PT.PUBACK, version))


def _dec_pubrec(cur: _Cursor, flags: int, version: int) -> Pubrec:
    return Pubrec(*_dec_ack(cur, _PT.PUBREC, version))


def _dec_pubrel(cur: _Cursor, flags: int, version: int) -> Pubrel:
    return Pubrel(*_dec_ack(cur, _PT.PUBREL, version))


def _dec_pubcomp(cur: _Cursor, flags: int, version: int) -> Pubcomp:
    return Pubcomp(*_dec_ack(cur, _PT.PUBCOMP, version))


def _dec_subscribe(cur: _Cursor, flags: int, version: int) -> Subscribe:
    packet_id = cur.u16()
    v5 = version == MQTT_5
    props = _read_properties(cur, PropertyContext.SUBSCRIBE) if v5 else _NO_PROPERTIES
    subs = []
    while cur.remaining:
        topic_filter = cur.string()
        options = cur.u8()
        if options & (0xC0 if v5 else 0xFC):
            raise _malformed("reserved subscription option bits set")
        if options & 0x03 == 3:
            raise _malformed("subscription QoS 3")
        subs.append(
            Subscription(
                topic_filter,
                options & 0x03,
                bool(options & 0x04),
                bool(options & 0x08),
                (options >> 4) & 0x03,
            )
        )
    return Subscribe(packet_id, tuple(subs), props)


def _dec_suback(cur: _Cursor, flags: int, version: int) -> Suback:
    packet_id = cur.u16()
    props = _read_properties(cur, PropertyContext.SUBACK) if version == MQTT_5 else _NO_PROPERTIES
    return Suback(packet_id, tuple(cur.rest()), props)


def _dec_unsubscribe(cur: _Cursor, flags: int, version: int) -> Unsubscribe:
    packet_id = cur.u16()
    v5 = version == MQTT_5
    props = _read_properties(cur, PropertyContext.UNSUBSCRIBE) if v5 else _NO_PROPERTIES
    filters = []
    while cur.remaining:
        filters.append(cur.string())
    return Unsubscribe(packet_id, tuple(filters), props)


def _dec_unsuback(cur: _Cursor, flags: int, version: int) -> Unsuback:
    packet_id = cur.u16()
    if version != MQTT_5:
        return Unsuback(packet_id)
    props = _read_properties(cur, PropertyContext.UNSUBACK)
    return Unsuback(packet_id, tuple(cur.rest()), props)


def _dec_pingreq(cur: _Cursor, flags: int, version: int) -> Pingreq:
    return Pingreq()


def _dec_pingresp(cur: _Cursor, flags: int, version: int) -> Pingresp:
    return Pingresp()


def _dec_reason_props(cur: _Cursor, ctx: PropertyContext, version: int) -> tuple[int, Properties]:
    if version != MQTT_5 or not cur.remaining:
        return 0, _NO_PROPERTIES
    code = cur.u8()
    return code, (_read_properties(cur, ctx) if cur.remaining else _NO_PROPERTIES)


def _dec_disconnect(cur: _Cursor, flags: int, version: int) -> Disconnect:
    return Disconnect(*_dec_reason_props(cur, PropertyContext.DISCONNECT, version))


def _dec_auth(cur: _Cursor, flags: int, version: int) -> Auth:
    return Auth(*_dec_reason_props(cur, PropertyContext.AUTH, version))


_DECODERS: dict[PacketType, Callable[[_Cursor, int, int], Packet]] = {
    _PT.CONNECT: _dec_connect,
    _PT.CONNACK: _dec_connack,
    _PT.PUBLISH: _dec_publish,
    _PT.PUBACK: _dec_puback,
    _PT.PUBREC: _dec_pubrec,
    _PT.PUBREL: _dec_pubrel,
    _PT.PUBCOMP: _dec_pubcomp,
    _PT.SUBSCRIBE: _dec_subscribe,
    _PT.SUBACK: _dec_suback,
    _PT.UNSUBSCRIBE: _dec_unsubscribe,
    _PT.UNSUBACK: _dec_unsuback,
    _PT.PINGREQ: _dec_pingreq,
    _PT.PINGRESP: _dec_pingresp,
    _PT.DISCONNECT: _dec_disconnect,
    _PT.AUTH: _dec_auth,
}


_TYPES: tuple[PacketType | None, ...] = (None, *(PacketType(t) for t in range(1, 16)))
_SHORT_ACKS: dict[PacketType, type[Puback | Pubrec | Pubrel | Pubcomp]] = {
    _PT.PUBACK: Puback,
    _PT.PUBREC: Pubrec,
    _PT.PUBREL: Pubrel,
    _PT.PUBCOMP: Pubcomp,
}


def _fast_publish(
    buf: bytearray, start: int, end: int, flags: int, version: int | None
) -> Publish | None:
    """The common PUBLISH (no properties) decoded and checked without the generic path.

    Returns None for anything else, valid or not: the generic decoder then
    decides, so errors and their reason codes stay the generic ones.
    """
    if end - start < 2:
        return None
    pos = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if pos > end:
        return None
    try:
        topic = buf[start + 2 : pos].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not topic or "\x00" in topic or "+" in topic or "#" in topic:
        return None
    qos = (flags >> 1) & 0x03
    packet_id = None
    if qos:
        if pos + 2 > end:
            return None
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            return None
        pos += 2
    elif flags & 0x08:  # DUP on QoS 0
        return None
    if version == MQTT_5:
        if pos >= end or buf[pos]:  # properties present: the generic path reads them
            return None
        pos += 1
    return Publish(
        topic, bytes(buf[pos:end]), qos, bool(flags & 1), bool(flags & 8), packet_id, NO_PROPERTIES
    )


class PacketReader:
    """Bytes in, packets out; one per connection direction.

    ``version=None`` (the server side) expects CONNECT first and takes the
    protocol level from it; 4 or 5 decodes any packet at that level.
    ``max_packet_size`` bounds a whole packet (fixed header included) and is
    checked from the fixed header alone; ``max_buffer_size`` bounds what
    ``receive_data`` will hold (default: the packet limit plus 64 KiB).
    After any :class:`MqttProtocolError` the reader refuses further use.
    """

    def __init__(
        self,
        version: int | None = None,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_buffer_size: int | None = None,
    ) -> None:
        if version is not None and version not in PROTOCOL_LEVELS:
            raise ValueError(f"protocol level {version!r} is not 4 or 5")
        if not 2 <= max_packet_size <= MAX_REMAINING_LENGTH + 5:
            raise ValueError(f"max_packet_size {max_packet_size} out of range")
        self._version = version
        self._state = _S.AWAIT_CONNECT if version is None else _S.OPEN
        self.max_packet_size = max_packet_size
        self.max_buffer_size = (
            max_buffer_size if max_buffer_size is not None else max_packet_size + (64 << 10)
        )
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already decoded (dropped by the next receive_data)

    @property
    def version(self) -> int | None:
        """The protocol level: given, or announced by CONNECT; None before it."""
        return self._version

    @property
    def state(self) -> ReaderState:
        return self._state

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _fail(self, exc: MqttProtocolError) -> MqttProtocolError:
        self._state = _S.ERROR
        return exc

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._state is _S.ERROR:
            raise MqttProtocolError("reader failed earlier", code=_R.PROTOCOL_ERROR)
        if self._pos:  # one compaction per receive, not one per packet
            del self._buf[: self._pos]
            self._pos = 0
        if len(self._buf) + len(data) > self.max_buffer_size:
            raise self._fail(
                MqttProtocolError(
                    f"more than {self.max_buffer_size} bytes buffered",
                    code=_R.PACKET_TOO_LARGE,
                )
            )
        self._buf += data

    def next_packet(self) -> Packet | NeedData:
        if self._state is _S.ERROR:
            raise MqttProtocolError("reader failed earlier", code=_R.PROTOCOL_ERROR)
        try:
            return self._next_packet()
        except MqttProtocolError as exc:
            raise self._fail(exc) from None

    def _next_packet(self) -> Packet | NeedData:
        buf = self._buf
        p = self._pos  # packets before it are decoded; compacted in receive_data
        n = len(buf) - p
        if not n:
            return NEED_DATA
        first = buf[p]
        ptype = _TYPES[first >> 4]
        if ptype is None:
            raise _malformed("packet type 0 is reserved")
        version = self._version
        if ptype is _PT.AUTH and version == MQTT_3_1_1:
            raise _malformed("packet type 15 is reserved in 3.1.1")
        new_state = _TRANSITIONS.get((self._state, ptype))
        if new_state is None:
            raise MqttProtocolError(
                f"{ptype.name} not allowed in state {self._state.value}", code=_R.PROTOCOL_ERROR
            )
        flags = first & 0x0F
        if ptype is _PT.PUBLISH:
            if flags & 0x06 == 0x06:
                raise _malformed("PUBLISH with QoS 3")
        elif flags != _FIXED_FLAGS[ptype]:
            raise _malformed(f"reserved flags {flags:#x} on {ptype.name}")
        remaining = 0
        header = 0
        for i, shift in ((1, 0), (2, 7), (3, 14), (4, 21)):
            if i >= n:
                return NEED_DATA
            byte = buf[p + i]
            remaining |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise _malformed("remaining length is not minimally encoded")
                header = i + 1
                break
        else:
            raise _malformed("remaining length longer than four bytes")
        total = header + remaining
        if total > self.max_packet_size:
            raise MqttProtocolError(
                f"{ptype.name} of {total} bytes exceeds the limit of {self.max_packet_size}",
                code=_R.PACKET_TOO_LARGE,
            )
        if n < total:
            return NEED_DATA
        if self._state is _S.CONNECTED or self._state is _S.OPEN:
            if ptype is _PT.PUBLISH:
                fast = _fast_publish(buf, p + header, p + total, flags, version)
                if fast is not None:
                    self._pos = p + total
                    return fast
            elif remaining == 2 and ptype in _SHORT_ACKS:  # id only: reason 0, no properties
                packet_id = (buf[p + 2] << 8) | buf[p + 3]
                if packet_id:
                    self._pos = p + total
                    return _SHORT_ACKS[ptype](packet_id)
        if version is None:  # only CONNECT gets here (see the table)
            version = MQTT_5 if self._peek_level(p + header, p + total) == MQTT_5 else MQTT_3_1_1
        with memoryview(buf) as mv:
            cur = _Cursor(mv, p + header, p + total)
            packet = _DECODERS[ptype](cur, flags, version)
            if cur.pos != p + total:
                raise _malformed(f"{p + total - cur.pos} bytes left over after {ptype.name}")
            del cur
        if ptype is _PT.CONNECT:
            if self._version is not None and version != self._version:
                raise MqttProtocolError(
                    "CONNECT protocol level differs from the reader's",
                    code=_R.UNSUPPORTED_PROTOCOL_VERSION,
                )
            self._version = version
        _validate(packet, version, MqttProtocolError)
        self._pos = p + total
        self._state = new_state
        return packet

    def _peek_level(self, header: int, total: int) -> int:
        # CONNECT starts with the string "MQTT" (2 + 4 bytes) and then the level.
        # ``header`` and ``total`` are positions in the buffer.
        at = header + 6
        return self._buf[at] if at < total else 0

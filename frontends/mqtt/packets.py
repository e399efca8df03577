"""MQTT control packets as frozen dataclasses, and MQTT 5.0 properties.

One class per control packet type; the same classes serve 3.1.1 (protocol
level 4) and 5.0 (level 5). Fields that only 5.0 can carry (properties, reason
codes on acks, subscription options beyond QoS) keep their defaults in 3.1.1;
encoding a 3.1.1 packet with anything else set is a local protocol error.

:class:`Properties` has one field per 5.0 property identifier. Properties that
may appear several times are tuples: ``user_properties`` holds ``(name,
value)`` pairs in wire order, duplicates kept; ``subscription_identifiers``
holds the identifiers in wire order. :data:`PROPERTY_TABLE` says, per
identifier, the field, the wire type and the packets (or the will) that may
carry it; the codec walks it both ways.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "PROPERTY_TABLE",
    "Auth",
    "Connack",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "PropertyContext",
    "PropertyId",
    "PropertySpec",
    "PropertyType",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
]


class PacketType(enum.IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class PropertyId(enum.IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class PropertyType(enum.Enum):
    BYTE = "byte"
    U16 = "u16"
    U32 = "u32"
    VARINT = "varint"
    STR = "str"
    BINARY = "binary"
    STR_PAIR = "str_pair"


class PropertyContext(enum.Enum):
    """Where a property block sits: a packet type, or the will in CONNECT."""

    CONNECT = "CONNECT"
    WILL = "WILL"
    CONNACK = "CONNACK"
    PUBLISH = "PUBLISH"
    PUBACK = "PUBACK"
    PUBREC = "PUBREC"
    PUBREL = "PUBREL"
    PUBCOMP = "PUBCOMP"
    SUBSCRIBE = "SUBSCRIBE"
    SUBACK = "SUBACK"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    UNSUBACK = "UNSUBACK"
    DISCONNECT = "DISCONNECT"
    AUTH = "AUTH"


@dataclass(frozen=True, slots=True)
class PropertySpec:
    id: PropertyId
    name: str  # the Properties field
    type: PropertyType
    allowed: frozenset[PropertyContext]
    multiple: bool = False  # True: a tuple field, may repeat on the wire


_C = PropertyContext
_T = PropertyType
_MESSAGE = frozenset({_C.PUBLISH, _C.WILL})
_ACKS = frozenset(
    {
        _C.CONNACK,
        _C.PUBACK,
        _C.PUBREC,
        _C.PUBREL,
        _C.PUBCOMP,
        _C.SUBACK,
        _C.UNSUBACK,
        _C.DISCONNECT,
        _C.AUTH,
    }
)


def _spec(
    pid: PropertyId, name: str, typ: PropertyType, *allowed: PropertyContext, multiple: bool = False
) -> PropertySpec:
    return PropertySpec(pid, name, typ, frozenset(allowed), multiple)


P = PropertyId
PROPERTY_TABLE: dict[int, PropertySpec] = {
    s.id: s
    for s in (
        _spec(P.PAYLOAD_FORMAT_INDICATOR, "payload_format_indicator", _T.BYTE, *_MESSAGE),
        _spec(P.MESSAGE_EXPIRY_INTERVAL, "message_expiry_interval", _T.U32, *_MESSAGE),
        _spec(P.CONTENT_TYPE, "content_type", _T.STR, *_MESSAGE),
        _spec(P.RESPONSE_TOPIC, "response_topic", _T.STR, *_MESSAGE),
        _spec(P.CORRELATION_DATA, "correlation_data", _T.BINARY, *_MESSAGE),
        _spec(
            P.SUBSCRIPTION_IDENTIFIER,
            "subscription_identifiers",
            _T.VARINT,
            _C.PUBLISH,
            _C.SUBSCRIBE,
            multiple=True,
        ),
        _spec(
            P.SESSION_EXPIRY_INTERVAL,
            "session_expiry_interval",
            _T.U32,
            _C.CONNECT,
            _C.CONNACK,
            _C.DISCONNECT,
        ),
        _spec(P.ASSIGNED_CLIENT_IDENTIFIER, "assigned_client_identifier", _T.STR, _C.CONNACK),
        _spec(P.SERVER_KEEP_ALIVE, "server_keep_alive", _T.U16, _C.CONNACK),
        _spec(
            P.AUTHENTICATION_METHOD,
            "authentication_method",
            _T.STR,
            _C.CONNECT,
            _C.CONNACK,
            _C.AUTH,
        ),
        _spec(
            P.AUTHENTICATION_DATA, "authentication_data", _T.BINARY, _C.CONNECT, _C.CONNACK, _C.AUTH
        ),
        _spec(P.REQUEST_PROBLEM_INFORMATION, "request_problem_information", _T.BYTE, _C.CONNECT),
        _spec(P.WILL_DELAY_INTERVAL, "will_delay_interval", _T.U32, _C.WILL),
        _spec(P.REQUEST_RESPONSE_INFORMATION, "request_response_information", _T.BYTE, _C.CONNECT),
        _spec(P.RESPONSE_INFORMATION, "response_information", _T.STR, _C.CONNACK),
        _spec(P.SERVER_REFERENCE, "server_reference", _T.STR, _C.CONNACK, _C.DISCONNECT),
        _spec(P.REASON_STRING, "reason_string", _T.STR, *_ACKS),
        _spec(P.RECEIVE_MAXIMUM, "receive_maximum", _T.U16, _C.CONNECT, _C.CONNACK),
        _spec(P.TOPIC_ALIAS_MAXIMUM, "topic_alias_maximum", _T.U16, _C.CONNECT, _C.CONNACK),
        _spec(P.TOPIC_ALIAS, "topic_alias", _T.U16, _C.PUBLISH),
        _spec(P.MAXIMUM_QOS, "maximum_qos", _T.BYTE, _C.CONNACK),
        _spec(P.RETAIN_AVAILABLE, "retain_available", _T.BYTE, _C.CONNACK),
        _spec(P.USER_PROPERTY, "user_properties", _T.STR_PAIR, *PropertyContext, multiple=True),
        _spec(P.MAXIMUM_PACKET_SIZE, "maximum_packet_size", _T.U32, _C.CONNECT, _C.CONNACK),
        _spec(
            P.WILDCARD_SUBSCRIPTION_AVAILABLE,
            "wildcard_subscription_available",
            _T.BYTE,
            _C.CONNACK,
        ),
        _spec(
            P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            "subscription_identifier_available",
            _T.BYTE,
            _C.CONNACK,
        ),
        _spec(
            P.SHARED_SUBSCRIPTION_AVAILABLE, "shared_subscription_available", _T.BYTE, _C.CONNACK
        ),
    )
}
del P


@dataclass(frozen=True, slots=True)
class Properties:
    """MQTT 5.0 properties; None (or an empty tuple) means absent."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def is_empty(self) -> bool:
        return self is NO_PROPERTIES or self == NO_PROPERTIES


NO_PROPERTIES = Properties()  # shared: most packets carry none
_NO_PROPERTIES = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Will:
    """The will message inside CONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Connect:
    TYPE: ClassVar[PacketType] = PacketType.CONNECT
    client_id: str = ""
    clean_start: bool = True  # "clean session" in 3.1.1
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Connack:
    TYPE: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    reason_code: int = 0  # a 3.1.1 return code (0..5) or a 5.0 reason code
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Publish:
    TYPE: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present exactly when qos > 0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Puback:
    TYPE: ClassVar[PacketType] = PacketType.PUBACK
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Pubrec:
    TYPE: ClassVar[PacketType] = PacketType.PUBREC
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Pubrel:
    TYPE: ClassVar[PacketType] = PacketType.PUBREL
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Pubcomp:
    TYPE: ClassVar[PacketType] = PacketType.PUBCOMP
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE, with its options (all but QoS are 5.0 only)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    TYPE: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Suback:
    TYPE: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    TYPE: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Unsuback:
    TYPE: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # always empty in 3.1.1, never in 5.0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Pingreq:
    TYPE: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class Pingresp:
    TYPE: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    TYPE: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Auth:
    """5.0 only."""

    TYPE: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = 0
    properties: Properties = field(default=NO_PROPERTIES)


Packet = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)

"""MQTT reason codes and the codec's two error classes.

Every MQTT error is a :class:`journal.errors.ProtocolError` carrying the v5
reason code (``code``) that the front end puts in its CONNACK or DISCONNECT.
:class:`MqttProtocolError` means the peer sent bytes that break the spec;
:class:`MqttLocalProtocolError` means we were asked to encode a packet the spec
cannot express (in that version). An MQTT 3.1.1 front end maps the code onto
the nearest v3 CONNACK return code, or just closes the connection, as 3.1.1
has no DISCONNECT reason.
"""

from __future__ import annotations

import enum

from journal.errors import LocalProtocolError, RemoteProtocolError, StrataError

__all__ = [
    "ConnectReturnCode",
    "InvalidTopicError",
    "MqttLocalProtocolError",
    "MqttProtocolError",
    "ReasonCode",
]


class ReasonCode(enum.IntEnum):
    """MQTT 5.0 reason codes (spec section 2.4); a few share a value."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnectReturnCode(enum.IntEnum):
    """MQTT 3.1.1 CONNACK return codes (spec section 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class MqttProtocolError(RemoteProtocolError):
    """A peer sent bytes that break MQTT; ``code`` is the v5 reason code to answer with."""

    code = ReasonCode.MALFORMED_PACKET

    @property
    def reason_code(self) -> ReasonCode:
        return ReasonCode(self.code)


class MqttLocalProtocolError(LocalProtocolError):
    """We were asked to encode a packet MQTT (in that version) cannot express."""

    code = ReasonCode.MALFORMED_PACKET

    @property
    def reason_code(self) -> ReasonCode:
        return ReasonCode(self.code)


class InvalidTopicError(StrataError, ValueError):
    """A topic name or filter breaks the spec's rules; ``code`` is 0x90 or 0x8F."""

    def __init__(self, message: str, *, code: ReasonCode) -> None:
        super().__init__(message)
        self.code = code

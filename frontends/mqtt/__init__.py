"""MQTT 3.1.1 and 5.0 front end: for now the sans-I/O codec, topic utilities
and the subscription index.

``encode(packet, version)`` turns a packet into bytes; a :class:`PacketReader`
turns bytes into packets. Errors are :class:`MqttProtocolError` (the peer) and
:class:`MqttLocalProtocolError` (us), both carrying a v5 :class:`ReasonCode`.
"""

from .broker import Broker, BrokerSettings, BrokerStatistics, ConnectRefused
from .codec import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_REMAINING_LENGTH,
    MQTT_3_1_1,
    MQTT_5,
    NEED_DATA,
    PROTOCOL_LEVELS,
    VALID_REASON_CODES,
    NeedData,
    PacketReader,
    ReaderState,
    encode,
)
from .connection import Connection
from .errors import (
    ConnectReturnCode,
    InvalidTopicError,
    MqttLocalProtocolError,
    MqttProtocolError,
    ReasonCode,
)
from .listeners import serve_mqtt
from .messages import Message
from .packets import (
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
    PropertyId,
    PropertySpec,
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
from .store import SessionStore, ShardLog
from .subscriptions import SubscriptionIndex
from .topics import matches, parse_shared, validate_topic_filter, validate_topic_name

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "MQTT_3_1_1",
    "MQTT_5",
    "NEED_DATA",
    "PROPERTY_TABLE",
    "PROTOCOL_LEVELS",
    "VALID_REASON_CODES",
    "Auth",
    "Broker",
    "BrokerSettings",
    "BrokerStatistics",
    "Connack",
    "Connect",
    "ConnectRefused",
    "ConnectReturnCode",
    "Connection",
    "Disconnect",
    "InvalidTopicError",
    "Message",
    "MqttLocalProtocolError",
    "MqttProtocolError",
    "NeedData",
    "Packet",
    "PacketReader",
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
    "ReaderState",
    "ReasonCode",
    "SessionStore",
    "ShardLog",
    "Suback",
    "Subscribe",
    "Subscription",
    "SubscriptionIndex",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "encode",
    "matches",
    "parse_shared",
    "serve_mqtt",
    "validate_topic_filter",
    "validate_topic_name",
]

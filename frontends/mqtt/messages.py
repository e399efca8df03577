"""An application message as the broker routes it, and its journal record form.

A :class:`Message` is what a PUBLISH (or a will) carries that outlives the
packet: topic, payload, QoS, retain flag, the MQTT 5 properties that travel
with it, when it expires and which client sent it. The per-connection parts
(packet id, DUP, topic alias, subscription identifiers) are not in it.

In the journal a message is a record whose key is the topic and whose value is
the payload; everything else is a header, and only when it differs from the
default, so a plain QoS 0 message costs no header bytes at all
(``docs/mqtt-storage.md`` has the table). No I/O here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from journal.records import Header, Record

from .packets import NO_PROPERTIES, Properties, Publish

__all__ = ["Message", "message_from_record", "message_to_record"]

H_QOS = "mqtt.qos"
H_RETAIN = "mqtt.retain"
H_CLIENT = "mqtt.client"
H_EXPIRY = "mqtt.expiry_at"
H_FORMAT = "mqtt.payload_format"
H_CONTENT_TYPE = "mqtt.content_type"
H_RESPONSE_TOPIC = "mqtt.response_topic"
H_CORRELATION = "mqtt.correlation_data"
USER_PREFIX = "u:"

_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Message:
    """One application message; ``properties`` holds only what is forwarded."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=Properties)
    expiry_at: int | None = None  # wall-clock ms after which it is not delivered
    origin: str = ""  # the publishing client id, for no-local

    @classmethod
    def from_publish(cls, packet: Publish, topic: str, origin: str, now_ms: int) -> Message:
        """The message of a PUBLISH whose topic (alias resolved) is ``topic``."""
        props = packet.properties
        if props is NO_PROPERTIES:  # the common case, without keywords
            return cls(topic, packet.payload, packet.qos, packet.retain, props, None, origin)
        expiry = props.message_expiry_interval
        forwarded = (
            Properties(
                payload_format_indicator=props.payload_format_indicator,
                content_type=props.content_type,
                response_topic=props.response_topic,
                correlation_data=props.correlation_data,
                user_properties=props.user_properties,
            )
            if not props.is_empty()
            else props
        )
        return cls(
            topic=topic,
            payload=packet.payload,
            qos=packet.qos,
            retain=packet.retain,
            properties=forwarded,
            expiry_at=None if expiry is None else now_ms + expiry * 1000,
            origin=origin,
        )

    def expired(self, now_ms: int) -> bool:
        return self.expiry_at is not None and now_ms >= self.expiry_at

    def remaining_expiry(self, now_ms: int) -> int | None:
        """Seconds left, rounded up, for the Message Expiry Interval sent onwards."""
        if self.expiry_at is None:
            return None
        return max(0, -(-(self.expiry_at - now_ms) // 1000))

    def with_qos(self, qos: int) -> Message:
        return self if qos == self.qos else replace(self, qos=qos)


def message_to_record(message: Message) -> Record:
    """The record of ``message``; a QoS 0 message does not name its publisher.

    The publisher is kept for no-local when a QoS 1/2 message is routed again
    from the journal after a power loss (QoS 0 messages never are), and with
    retained messages.
    """
    qos = message.qos
    plain = not qos and not message.retain and message.expiry_at is None
    if plain and message.properties.is_empty():
        return Record(value=message.payload, key=message.topic.encode(), headers=[])
    headers: list[Header] = []
    if qos:
        headers.append((H_QOS, bytes((qos,))))
    if message.retain:
        headers.append((H_RETAIN, b"\x01"))
    if message.origin and (qos or message.retain):
        headers.append((H_CLIENT, message.origin.encode()))
    if message.expiry_at is not None:
        headers.append((H_EXPIRY, _U64.pack(message.expiry_at)))
    props = message.properties
    if not props.is_empty():
        if props.payload_format_indicator is not None:
            headers.append((H_FORMAT, bytes((props.payload_format_indicator,))))
        if props.content_type is not None:
            headers.append((H_CONTENT_TYPE, props.content_type.encode()))
        if props.response_topic is not None:
            headers.append((H_RESPONSE_TOPIC, props.response_topic.encode()))
        if props.correlation_data is not None:
            headers.append((H_CORRELATION, props.correlation_data))
        headers.extend((USER_PREFIX + k, v.encode()) for k, v in props.user_properties)
    return Record(value=message.payload, key=message.topic.encode(), headers=headers)


def message_from_record(record: Record) -> Message:
    """The message a record holds; a record this module did not write raises ValueError."""
    if record.key is None:
        raise ValueError(f"record {record.offset} has no topic key")
    qos = 0
    retain = False
    origin = ""
    expiry_at = None
    fmt = content_type = response_topic = None
    correlation = None
    user: list[tuple[str, str]] = []
    for name, value in record.headers:
        value = value or b""
        if name.startswith(USER_PREFIX):
            user.append((name[len(USER_PREFIX) :], value.decode()))
        elif name == H_QOS:
            qos = value[0]
        elif name == H_RETAIN:
            retain = True
        elif name == H_CLIENT:
            origin = value.decode()
        elif name == H_EXPIRY:
            expiry_at = _U64.unpack(value)[0]
        elif name == H_FORMAT:
            fmt = value[0]
        elif name == H_CONTENT_TYPE:
            content_type = value.decode()
        elif name == H_RESPONSE_TOPIC:
            response_topic = value.decode()
        elif name == H_CORRELATION:
            correlation = value
    return Message(
        topic=record.key.decode(),
        payload=record.value or b"",
        qos=qos,
        retain=retain,
        properties=Properties(
            payload_format_indicator=fmt,
            content_type=content_type,
            response_topic=response_topic,
            correlation_data=correlation,
            user_properties=tuple(user),
        ),
        expiry_at=expiry_at,
        origin=origin,
    )

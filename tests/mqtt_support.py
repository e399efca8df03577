"""Real paho-mqtt clients against a real ``strata start``, for the MQTT tests.

:func:`mqtt_port` reads a listener's port from a :class:`StrataProcess`.
:class:`Client` wraps a paho client (callback API 2, its own network thread)
and records what arrives in thread-safe lists; every wait polls with a
deadline. To show that something did *not* arrive, publish a marker after it
and wait for the marker (:meth:`Client.barrier`): MQTT keeps one publisher's
messages in order on a topic, so anything that was coming came first.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client.parser import text_string_to_metric_families
from strata_process import StrataProcess, poll

__all__ = [
    "V3",
    "V5",
    "Client",
    "Received",
    "metric",
    "mqtt_port",
    "paho_properties",
    "publish_properties",
    "start_mqtt_server",
    "unique",
    "wait_for",
]

V3 = paho.MQTTv311
V5 = paho.MQTTv5
TIMEOUT = 20.0
# Fast $SYS updates and a low keep-alive ceiling, so tests need not wait long.
TEST_ENV = {"STRATA_MQTT_SYS_INTERVAL": "0.5"}

_counter = itertools.count()


def unique(prefix: str = "t") -> str:
    """A name no other test (or parallel worker) uses: client ids and topics."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{time.monotonic_ns() % 1_000_000}"


def start_mqtt_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> StrataProcess:
    """``strata start`` with every listener on a free port, waited until ready."""
    process = StrataProcess(data_dir, *args, env={**TEST_ENV, **(env or {})})
    try:
        process.wait_ready()
    except BaseException:
        process.__exit__(None, None, None)
        raise
    return process


def metric(process: StrataProcess, name: str, **labels: str) -> float:
    """One sample of the server's ``/metrics``, by name and exact labels."""
    with process.http() as http:
        text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no {name}{labels} in /metrics")


def mqtt_port(process: StrataProcess, listener: str = "mqtt") -> int:
    return int(process.addresses[listener].rsplit(":", 1)[1])


def wait_for(check: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Poll ``check()`` often until truthy; fail naming ``what`` after ``timeout`` s."""
    return poll(check, timeout, 0.01, what)


@dataclass(frozen=True)
class Received:
    """One message as the subscribing client saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    properties: Any  # paho Properties (v5) or None


def paho_properties(packet_type: int = PacketTypes.PUBLISH, **values: Any) -> Properties:
    """paho properties of ``packet_type`` from keyword arguments (``UserProperty=[(k, v)]``)."""
    props = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def publish_properties(**values: Any) -> Properties:
    return paho_properties(PacketTypes.PUBLISH, **values)


@dataclass
class _Events:
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[Received] = field(default_factory=list)
    connacks: list[tuple[ReasonCode, bool, Any]] = field(default_factory=list)
    disconnects: list[tuple[ReasonCode, Any]] = field(default_factory=list)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    unsubacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    published: set[int] = field(default_factory=set)


class Client:
    """A paho client with its network loop on a thread and recorded events.

    ``version`` is :data:`V5` or :data:`V3`; ``transport`` "tcp" or
    "websockets". Extra keyword arguments go to paho's ``connect``
    (``clean_start``, ``properties``...). Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        version: int = V5,
        clean: bool = True,
        transport: str = "tcp",
        keepalive: int = 60,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: Properties | None = None,
        properties: Properties | None = None,
        session_expiry: int | None = None,
        tls: dict[str, Any] | None = None,
        max_inflight: int = 20,
        auto_ack: bool = True,
        wait: bool = True,
    ) -> None:
        self.client_id = client_id if client_id is not None else unique("c")
        self.version = version
        self.events = _Events()
        kwargs: dict[str, Any] = {"client_id": self.client_id, "protocol": version}
        if version != V5:
            kwargs["clean_session"] = clean
        # a client the server disconnects stays disconnected (paho would redial in 1 s)
        kwargs["reconnect_on_failure"] = False
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            transport=transport,  # type: ignore[arg-type]
            **kwargs,
        )
        if transport == "websockets":
            self.paho.ws_set_options(path="/mqtt")
        if tls is not None:
            self.paho.tls_set(**tls)
        if username is not None:
            self.paho.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.paho.will_set(topic, payload, qos, retain, properties=will_properties)
        self.paho.max_inflight_messages_set(max_inflight)
        self.paho.manual_ack_set(not auto_ack)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe
        self.paho.on_publish = self._on_publish
        connect_args: dict[str, Any] = {"keepalive": keepalive}
        if version == V5:
            if properties is None and session_expiry is not None:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if session_expiry is not None:
                assert properties is not None
                properties.SessionExpiryInterval = session_expiry
            connect_args["clean_start"] = clean
            connect_args["properties"] = properties
        self.paho.connect("127.0.0.1", port, **connect_args)
        self.paho.loop_start()
        if wait:
            self.wait_connack()

    # -- paho callbacks (network thread) ------------------------------------------

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        with self.events.lock:
            self.events.connacks.append((rc, bool(flags.session_present), props))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        with self.events.lock:
            self.events.disconnects.append((rc, props))

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        received = Received(
            msg.topic,
            bytes(msg.payload),
            msg.qos,
            bool(msg.retain),
            bool(msg.dup),
            msg.mid,
            getattr(msg, "properties", None),
        )
        with self.events.lock:
            self.events.messages.append(received)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        with self.events.lock:
            self.events.subacks[mid] = list(codes)

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self.events.lock:
            self.events.unsubacks[mid] = list(codes) if isinstance(codes, list) else [codes]

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self.events.lock:
            self.events.published.add(mid)

    # -- actions -------------------------------------------------------------------

    def wait_connack(self, timeout: float = TIMEOUT) -> tuple[ReasonCode, bool, Any]:
        """The CONNACK: (reason code, session present, properties)."""
        wait_for(lambda: self.events.connacks, timeout, f"CONNACK for {self.client_id}")
        return self.events.connacks[-1]

    @property
    def session_present(self) -> bool:
        return self.wait_connack()[1]

    def subscribe(
        self,
        topic_filter: str,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_id: int | None = None,
    ) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK; returns its reason codes."""
        if self.version == V5:
            options = SubscribeOptions(
                qos=qos,
                noLocal=no_local,
                retainAsPublished=retain_as_published,
                retainHandling=retain_handling,
            )
            props = None
            if subscription_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
                props.SubscriptionIdentifier = subscription_id
            rc, mid = self.paho.subscribe(topic_filter, options=options, properties=props)
        else:
            rc, mid = self.paho.subscribe(topic_filter, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        assert mid is not None
        return wait_for(lambda: self.events.subacks.get(mid), what=f"SUBACK {topic_filter}")  # type: ignore[no-any-return]

    def unsubscribe(self, topic_filter: str) -> list[ReasonCode]:
        rc, mid = self.paho.unsubscribe(topic_filter)
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        assert mid is not None
        # Wait for the UNSUBACK itself (3.1.1's has no reason codes: an empty list).
        wait_for(lambda: mid in self.events.unsubacks, what=f"UNSUBACK {topic_filter}")
        return self.events.unsubacks[mid]

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *,
        wait: bool = True,
    ) -> paho.MQTTMessageInfo:
        """Publish; with ``wait`` return once acknowledged (QoS 1/2) or written (QoS 0)."""
        info = self.paho.publish(topic, payload, qos, retain, properties=properties)
        if wait:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), f"{topic} not acknowledged"
        return info

    def messages(self, topic: str | None = None) -> list[Received]:
        with self.events.lock:
            return [m for m in self.events.messages if topic is None or m.topic == topic]

    def expect(
        self, count: int, topic: str | None = None, timeout: float = TIMEOUT
    ) -> list[Received]:
        """Wait until at least ``count`` messages (on ``topic``) arrived; return them all."""
        wait_for(
            lambda: len(self.messages(topic)) >= count, timeout, f"{count} messages on {topic}"
        )
        return self.messages(topic)

    def barrier(self, publisher: Client, topic: str, qos: int = 1) -> list[Received]:
        """Publish a marker on ``topic`` (which this client subscribes to) and wait for it.

        Returns the messages on ``topic`` that arrived before the marker. paho
        hands a QoS 2 message to the application only at PUBREL, so a QoS 1
        marker can overtake QoS 2 messages sent before it: use ``qos=2`` then.
        """
        marker = unique("marker").encode()
        publisher.publish(topic, marker, qos=qos)
        wait_for(lambda: any(m.payload == marker for m in self.messages(topic)), what="marker")
        before = []
        for m in self.messages(topic):
            if m.payload == marker:
                break
            before.append(m)
        return before

    def wait_disconnected(self, timeout: float = TIMEOUT) -> tuple[ReasonCode, Any]:
        """The server's (or the loss's) disconnect reason."""
        wait_for(lambda: self.events.disconnects, timeout, f"disconnect of {self.client_id}")
        return self.events.disconnects[-1]

    def close(self) -> None:
        """A normal DISCONNECT, then stop the network thread."""
        if self.paho.is_connected():
            self.paho.disconnect()
            wait_for(lambda: not self.paho.is_connected() or self.events.disconnects, what="closed")
        self.paho.loop_stop()

    def drop(self) -> None:
        """End the connection without DISCONNECT, as a crash or lost network would."""
        self.paho.loop_stop()
        sock = self.paho.socket()
        if sock is not None:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_payloads(messages: Sequence[Received]) -> Iterator[bytes]:
    return (m.payload for m in messages)

"""One client connection: the codec on a trio stream, dispatching to the broker.

The reader task receives, feeds the :class:`~frontends.mqtt.codec.PacketReader`
and handles what comes out. It hands the PUBLISHes of one receive to
:meth:`Broker.submit` as one group, so a burst costs a few appends, and
reads on; the acker task sends their PUBACKs/PUBRECs in order as each group
becomes durable. The writer task owns the socket's sending side: it drains
the control packets queued for it and the session's deliveries, up to the
client's Receive Maximum in flight, into one ``send_all``. The acker and the
writer run only while they have work (an idle connection is one task), and
the broker's housekeeping enforces keep alive from ``last_seen``.

A protocol error closes only this connection: a v5 client gets a DISCONNECT
(or CONNACK) with the reason code first, a 3.1.1 client just the close. The
will is published unless the client said DISCONNECT normally.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import trio

from journal.errors import StrataError, leaf_exceptions

from .broker import Broker, ConnectRefused
from .codec import (
    MQTT_5,
    NEED_DATA,
    PacketReader,
    encode,
    encode_ack,
    encode_properties,
    encode_publish,
)
from .errors import ConnectReturnCode, MqttProtocolError, ReasonCode
from .messages import Message
from .packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
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
    Unsuback,
    Unsubscribe,
)
from .sessions import Delivery, DeliveryState, Session
from .store import Receipt, Submission

__all__ = ["Connection"]

log = logging.getLogger("strata.mqtt")

RECEIVE_SIZE = 64 << 10
PUBLISH_GROUP = 64  # PUBLISHes handled before other tasks get a turn (latency under load)
MAX_OUTBOX = 1 << 20  # control bytes queued before the reader waits for the writer
SEND_BATCH = 256 << 10  # bytes of deliveries per send_all
CLOSE_LINGER = 1.0  # seconds to read after our last packet, so the peer sees it

_V3_REFUSALS = {
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION: ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID: ConnectReturnCode.IDENTIFIER_REJECTED,
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD,
    ReasonCode.NOT_AUTHORIZED: ConnectReturnCode.NOT_AUTHORIZED,
}

_V3_CONNACK_ERRORS = (
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
)


_ACK_TYPES = {1: PacketType.PUBACK, 2: PacketType.PUBREC}


class _Closed(Exception):
    """The connection ends; ``will`` says whether the will is published."""

    def __init__(self, will: bool) -> None:
        self.will = will


class Connection:
    """The server side of one MQTT connection over any byte stream."""

    __slots__ = (
        "_acking",
        "_acks",
        "_aliases_in",
        "_aliases_out",
        "_connect_expiry",
        "_detached",
        "_drained",
        "_gone",
        "_kicked",
        "_nursery",
        "_outbox",
        "_pending_qos2",
        "_retire",
        "_scope",
        "_sent_recently",
        "_unacked",
        "_wakeup",
        "_writing",
        "broker",
        "client_alias_max",
        "client_max_packet",
        "keep_alive",
        "last_seen",
        "reader",
        "session",
        "stream",
        "version",
        "will",
        "will_delay",
        "window",
    )

    def __init__(self, broker: Broker, stream: trio.abc.Stream) -> None:
        self.broker = broker
        self.stream = stream
        settings = broker.settings
        self.reader = PacketReader(max_packet_size=settings.max_packet_size)
        self.version = 4
        self.session: Session | None = None
        self._detached: trio.Event | None = None  # made only if someone waits (takeover)
        self._gone = False
        self.keep_alive = 0
        self.last_seen = trio.current_time()  # of the last bytes received
        self.will: Message | None = None
        self.will_delay = 0
        self.window = settings.max_inflight
        self.client_max_packet = 0  # 0: no limit
        self.client_alias_max = 0
        self._aliases_in: dict[int, str] = {}
        self._aliases_out: dict[str, int] = {}
        self._outbox = bytearray()
        self._wakeup = trio.Event()
        self._drained: trio.Event | None = None
        self._scope: trio.CancelScope | None = None  # the nursery's, once serving
        self._nursery: trio.Nursery | None = None  # where wake() starts the writer
        self._writing = False
        self._sent_recently = False
        self._retire = False
        self._acks: list[tuple[Receipt, Sequence[Publish]]] = []  # a list: idle, it is small
        self._acking = False
        self._unacked = 0  # QoS 1/2 PUBLISHes received and not acknowledged yet
        self._pending_qos2: set[int] | None = None  # made at the first QoS 2 PUBLISH
        self._kicked: tuple[ReasonCode, str] | None = None
        self._connect_expiry = 0

    # -- called by the broker ----------------------------------------------------

    def wake(self) -> None:
        """Something to send: wake the writer, starting it if it is not running."""
        self._wakeup.set()
        if not self._writing and self._nursery is not None:
            self._writing = True
            self._nursery.start_soon(self._writer)

    async def wait_detached(self) -> None:
        """Return once this connection has left its session."""
        if not self._gone:
            if self._detached is None:
                self._detached = trio.Event()
            await self._detached.wait()

    def kick(self, code: ReasonCode, reason: str) -> None:
        """End this connection from elsewhere (takeover, shutdown) with ``code``."""
        if self._kicked is None:
            self._kicked = (code, reason)
        if self._scope is not None:
            self._scope.cancel()

    # -- the connection's life -------------------------------------------------

    async def run(self) -> None:
        counters = self.broker.counters
        counters.connections_open += 1
        counters.connections_total += 1
        will = False
        try:
            will = await self._serve()
            if self._kicked is not None:
                code, reason = self._kicked
                # a takeover publishes the will; a server stopping does not (it cannot
                # store it any more, and the client did nothing wrong)
                will = code is not ReasonCode.SERVER_SHUTTING_DOWN
                await self._say_goodbye(code, reason)
        except MqttProtocolError as exc:
            if exc.reason_code is not ReasonCode.KEEP_ALIVE_TIMEOUT:
                counters.protocol_errors += 1
            if self.session is None and self.reader.version is not None:
                self.version = self.reader.version  # a v5 CONNECT that failed its checks
            will = True
            log.debug("protocol error from an MQTT client: %s", exc)
            await self._say_goodbye(exc.reason_code, str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            will = True
        except StrataError as exc:  # the journal failed under a 3.1.1 client: no way to say so
            will = True
            log.warning("closing an MQTT connection: %s", exc)
        finally:
            counters.connections_open -= 1
            if self.session is not None:
                self.broker.detach(self.session, self, self.will if will else None, self.will_delay)
            self._gone = True
            if self._detached is not None:
                self._detached.set()
            await trio.aclose_forcefully(self.stream)

    async def _serve(self) -> bool:
        """Run the protocol; True if the will should be published."""
        with trio.fail_after(self.broker.settings.connect_timeout):
            packet = await self._first_packet()
        if packet is None:
            return False
        await self._connect(packet)
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope  # kick() cancels it
                    if self._kicked is not None:
                        return False  # kicked while connecting
                    assert self.session is not None
                    await self._resend(self.session)
                    self._nursery = nursery
                    try:
                        if self.session.queue:
                            self.wake()
                        await self._read_loop()
                    finally:
                        self._nursery = None  # closing: goodbyes are sent directly
            except BaseExceptionGroup as group:  # the reader's or the writer's end
                leaves = leaf_exceptions(group)
                first = next((e for e in leaves if not isinstance(e, trio.Cancelled)), leaves[0])
                raise first from None
        except _Closed as closed:
            return closed.will
        return False

    async def _first_packet(self) -> Connect | None:
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                assert isinstance(packet, Connect), "the reader allows only CONNECT first"
                self.version = self.reader.version or 4
                return packet
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return None
            self.broker.counters.bytes_received += len(data)
            self.reader.receive_data(data)

    async def _connect(self, packet: Connect) -> None:
        broker = self.broker
        settings = broker.settings
        props = packet.properties
        v5 = self.version == MQTT_5
        try:
            if props.authentication_method is not None:
                raise ConnectRefused(
                    ReasonCode.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported"
                )
            session, present, assigned = await broker.attach(self, packet, self.version)
        except ConnectRefused as refused:
            await self._refuse(refused.code, str(refused))
            raise _Closed(will=False) from None
        self.session = session
        self._connect_expiry = session.expiry
        self.keep_alive = packet.keep_alive
        server_keep_alive = None
        if settings.max_keep_alive and not 0 < self.keep_alive <= settings.max_keep_alive:
            self.keep_alive = server_keep_alive = settings.max_keep_alive
        if packet.will is not None:
            w = packet.will
            self.will = Message.from_publish(
                Publish(w.topic, w.payload, w.qos, w.retain, properties=w.properties),
                w.topic,
                session.client_id,
                broker._wall_ms(),
            )
            self.will_delay = w.properties.will_delay_interval or 0
        if v5:
            self.window = min(settings.max_inflight, props.receive_maximum or 65535)
            self.client_max_packet = props.maximum_packet_size or 0
            self.client_alias_max = props.topic_alias_maximum or 0
        requested_expiry = props.session_expiry_interval or 0
        ack_props = Properties()
        if v5:
            ack_props = Properties(
                session_expiry_interval=(
                    session.expiry if session.expiry != requested_expiry else None
                ),
                receive_maximum=settings.receive_maximum,
                maximum_packet_size=settings.max_packet_size,
                topic_alias_maximum=settings.topic_alias_maximum or None,
                assigned_client_identifier=assigned,
                server_keep_alive=server_keep_alive,
                response_information=(
                    f"$response/{session.client_id}/"
                    if props.request_response_information
                    else None
                ),
            )
        self._queue(Connack(session_present=present, reason_code=0, properties=ack_props))
        await self._flush()

    async def _refuse(self, code: ReasonCode, reason: str) -> None:
        if self.version == MQTT_5:
            ack = Connack(reason_code=code, properties=Properties(reason_string=reason))
        else:
            v3 = _V3_REFUSALS.get(code, ConnectReturnCode.SERVER_UNAVAILABLE)
            ack = Connack(reason_code=v3)
        self._queue(ack)
        await self._flush()
        await self._linger()

    async def _say_goodbye(self, code: ReasonCode, reason: str) -> None:
        """Tell the client why it is being disconnected, if it can hear it."""
        with trio.move_on_after(CLOSE_LINGER):
            try:
                self._outbox.clear()
                if self.session is None:
                    # 3.1.1 too answers these two with a CONNACK return code (3.1.3-8, 3.1.2-2).
                    if code in _V3_CONNACK_ERRORS or self.version == MQTT_5:
                        await self._refuse(code, reason)
                elif self.version == MQTT_5:
                    self._queue(Disconnect(code, Properties(reason_string=reason[:200])))
                    await self._flush()
                    await self._linger()
            except (trio.BrokenResourceError, trio.ClosedResourceError, MqttProtocolError):
                pass

    async def _linger(self) -> None:
        """Half-close and read until EOF, so our last packet is not lost to a reset."""
        send_eof = getattr(self.stream, "send_eof", None)
        with trio.move_on_after(CLOSE_LINGER):
            try:
                if send_eof is not None:
                    await send_eof()
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # -- reading ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Receive and handle until the end; the broker enforces the keep alive.

        (It compares ``last_seen`` once a second: a deadline per receive cost
        more CPU than anything else at low message rates.)
        """
        reader = self.reader
        counters = self.broker.counters
        stream = self.stream
        while True:
            await self._handle_buffered()  # first: what came with the CONNECT
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise _Closed(will=True)
            self.last_seen = trio.current_time()
            counters.bytes_received += len(data)
            reader.receive_data(data)

    async def _handle_buffered(self) -> None:
        """Handle every whole packet the reader holds, consecutive PUBLISHes as one group."""
        reader = self.reader
        publishes: list[Publish] = []
        while True:
            packet = reader.next_packet()
            if packet is NEED_DATA:
                break
            if isinstance(packet, Publish):
                publishes.append(packet)
                if len(publishes) >= PUBLISH_GROUP:
                    await self._publishes(publishes)
                    publishes = []
                    await trio.lowlevel.checkpoint()  # let the writers send meanwhile
                continue
            if publishes:
                await self._publishes(publishes)
                publishes = []
            await self._handle(packet)  # type: ignore[arg-type]
        if publishes:
            await self._publishes(publishes)

    async def _publishes(self, packets: Sequence[Publish]) -> None:
        """Hand a group of PUBLISHes to the broker; their acks follow once stored.

        The reader does not wait for the append: it reads on, so the next
        PUBLISHes join the next append while this one is being fsynced. The
        acker sends the acknowledgements in order as each group becomes durable.
        """
        session = self.session
        assert session is not None
        now = self.broker._wall_ms()
        entries: list[Submission] = []
        acked = 0
        levels = self.broker.settings.max_topic_levels
        for p in packets:
            topic = self._resolve_topic(p)
            if topic.startswith("$"):
                raise MqttProtocolError(
                    f"clients may not publish to {topic!r}", code=ReasonCode.TOPIC_NAME_INVALID
                )
            if len(topic) >= levels and topic.count("/") + 1 > levels:
                raise MqttProtocolError(
                    f"topic has more than {levels} levels", code=ReasonCode.TOPIC_NAME_INVALID
                )
            if p.qos:
                acked += 1
                if p.qos == 2:
                    pending_qos2 = self._pending_qos2  # ids of stored-soon QoS 2 PUBLISHes
                    if pending_qos2 is None:
                        pending_qos2 = self._pending_qos2 = set()
                    if p.packet_id in session.inbound or p.packet_id in pending_qos2:
                        continue  # a resent QoS 2 PUBLISH already stored: only PUBREC again
                    pending_qos2.add(p.packet_id)  # type: ignore[arg-type]
            message = Message.from_publish(p, topic, session.client_id, now)
            entries.append(Submission(message, p.packet_id or 0 if p.qos == 2 else 0, session))
        if self.version == MQTT_5:
            self._check_receive_maximum(session, acked)
        receipt = await self.broker.submit(entries)
        if acked:
            self._unacked += acked
            self._acks.append((receipt, packets))
            if not self._acking and self._nursery is not None:
                self._acking = True
                self._nursery.start_soon(self._acker)
        await self._flushed_enough()

    async def _acker(self) -> None:
        """PUBACK/PUBREC each group once it is durable, in the order received."""
        acks = self._acks
        try:
            while acks:
                receipt, packets = acks[0]
                code = ReasonCode.SUCCESS
                try:
                    await receipt.wait()
                except StrataError:
                    if self.version != MQTT_5:
                        raise  # 3.1.1 has no negative acknowledgement: close, the client resends
                    code = ReasonCode.UNSPECIFIED_ERROR
                    log.warning("MQTT publish failed", exc_info=True)
                del acks[0]
                outbox = self._outbox
                for p in packets:
                    if p.qos and p.packet_id:
                        self._unacked -= 1
                        if p.qos == 2 and self._pending_qos2 is not None:
                            self._pending_qos2.discard(p.packet_id)
                        if code:
                            ack = Puback if p.qos == 1 else Pubrec
                            outbox += encode(ack(p.packet_id, code), self.version)
                        else:
                            outbox += encode_ack(_ACK_TYPES[p.qos], p.packet_id)
                self.wake()
        finally:
            self._acking = False

    def _check_receive_maximum(self, session: Session, new: int) -> None:
        """v5: the client may not have more QoS 1/2 PUBLISHes unacknowledged than we allow.

        Those not acknowledged yet, these ``new`` ones, and the QoS 2 ones still
        awaiting PUBREL.
        """
        limit = self.broker.settings.receive_maximum
        unacked = self._unacked + new + len(session.inbound)
        if unacked > limit:
            raise MqttProtocolError(
                f"{unacked} QoS 1/2 PUBLISHes unacknowledged, more than Receive Maximum {limit}",
                code=ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
            )

    def _resolve_topic(self, p: Publish) -> str:
        alias = p.properties.topic_alias
        if alias is None:
            if not p.topic:
                raise MqttProtocolError("PUBLISH without a topic", code=ReasonCode.PROTOCOL_ERROR)
            return p.topic
        if alias > self.broker.settings.topic_alias_maximum:
            raise MqttProtocolError(
                f"topic alias {alias} above the maximum", code=ReasonCode.TOPIC_ALIAS_INVALID
            )
        if p.topic:
            self._aliases_in[alias] = p.topic
            return p.topic
        topic = self._aliases_in.get(alias)
        if topic is None:
            raise MqttProtocolError(f"unknown topic alias {alias}", code=ReasonCode.PROTOCOL_ERROR)
        return topic

    async def _handle(self, packet: Packet) -> None:
        broker = self.broker
        session = self.session
        assert session is not None
        v5 = self.version == MQTT_5
        if isinstance(packet, Puback):
            if broker.complete(session, packet.packet_id, 1) is not None:
                self.wake()
        elif isinstance(packet, Pubrec):
            d = broker.received(session, packet.packet_id, packet.reason_code >= 0x80)
            if d is None:
                if v5:
                    self._queue(Pubrel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            elif packet.reason_code < 0x80:
                self._queue(Pubrel(packet.packet_id))
            else:
                self.wake()
        elif isinstance(packet, Pubcomp):
            if broker.complete(session, packet.packet_id, 2) is not None:
                self.wake()
        elif isinstance(packet, Pubrel):
            known = broker.release_inbound(session, packet.packet_id)
            code = ReasonCode.SUCCESS if known or not v5 else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
            self._queue(Pubcomp(packet.packet_id, code))
        elif isinstance(packet, Subscribe):
            codes, retained = await broker.subscribe(session, packet)
            if not v5:
                codes = [c if c < 0x80 else 0x80 for c in codes]
            self._queue(Suback(packet.packet_id, tuple(codes)))
            broker.enqueue_retained(session, retained)
        elif isinstance(packet, Unsubscribe):
            codes = await broker.unsubscribe(session, packet)
            self._queue(Unsuback(packet.packet_id, tuple(codes) if v5 else ()))
        elif isinstance(packet, Pingreq):
            self._queue(Pingresp())
        elif isinstance(packet, Disconnect):
            await self._disconnect(packet)
        elif isinstance(packet, Auth):
            raise MqttProtocolError(
                "AUTH without enhanced authentication", code=ReasonCode.PROTOCOL_ERROR
            )
        else:
            raise MqttProtocolError(
                f"{type(packet).__name__} is not sent to a server", code=ReasonCode.PROTOCOL_ERROR
            )
        await self._flushed_enough()

    async def _disconnect(self, packet: Disconnect) -> None:
        session = self.session
        assert session is not None
        expiry = packet.properties.session_expiry_interval
        if expiry is not None:
            if self._connect_expiry == 0 and expiry != 0:
                raise MqttProtocolError(
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                    code=ReasonCode.PROTOCOL_ERROR,
                )
            expiry = min(expiry, self.broker.settings.max_session_expiry)
            if expiry != session.expiry:
                await self.broker.set_expiry(session, expiry)
        raise _Closed(will=packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE)

    # -- writing ---------------------------------------------------------------

    def _queue(self, packet: Packet) -> None:
        self._outbox += encode(packet, self.version)
        self.wake()

    async def _flushed_enough(self) -> None:
        while len(self._outbox) > MAX_OUTBOX:
            drained = self._drained = trio.Event()
            await drained.wait()
            self._drained = None

    async def _flush(self) -> None:
        """Send the queued control packets now (before the writer runs, or instead of it)."""
        if self._outbox:
            data = bytes(self._outbox)
            self._outbox.clear()
            await self._send(data)

    async def _send(self, data: bytes | bytearray) -> None:
        await self.stream.send_all(data)
        self.broker.counters.bytes_sent += len(data)

    async def _writer(self) -> None:
        """Send what is queued; ends when :meth:`retire_idle_writer` finds it idle.

        :meth:`wake` starts it again. An idle connection then has one task,
        not two: that is most of the memory an idle connection costs.
        """
        session = self.session
        assert session is not None
        try:
            while True:
                out = self._outbox
                self._outbox = bytearray()
                if self._drained is not None:
                    self._drained.set()
                sent = await self._take_deliveries(session, out)
                if out:
                    self._sent_recently = True
                    await self._send(out)
                    self.broker.counters.messages_sent += sent
                elif not self._outbox:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    if self._retire:
                        self._retire = False
                        if not self._outbox:
                            return
        finally:
            self._writing = False

    def retire_idle_writer(self) -> None:
        """Called every second or so: end the writer if it sent nothing since last time.

        (A timeout on each wait cost more CPU than the rest of a wake-up.)
        """
        if self._writing:
            if self._sent_recently:
                self._sent_recently = False
            else:
                self._retire = True
                self._wakeup.set()

    async def _resend(self, session: Session) -> None:
        """After a reconnect: unacknowledged PUBLISHes again with DUP, and PUBRELs.

        Within the new connection's limits: beyond its Receive Maximum they go
        back to the head of the queue (to get new packet ids), and one larger
        than its Maximum Packet Size is dropped, as for any delivery.
        """
        pending = list(session.inflight.values())
        await self.broker.load_messages([d for d in pending if d.message is None])
        out = bytearray()
        requeue: list[Delivery] = []
        sent = 0
        for d in pending:
            if d.state is DeliveryState.RELEASED:
                out += encode_ack(PacketType.PUBREL, d.packet_id)
                sent += 1
                continue
            del session.inflight[d.packet_id]
            if d.message is None:  # removed by retention meanwhile
                self.broker.forget(session, d)
            elif sent >= self.window:
                d.state, d.packet_id = DeliveryState.QUEUED, 0
                requeue.append(d)
            else:
                data = self._encode_publish(d, dup=True)
                if self.client_max_packet and len(data) > self.client_max_packet:
                    self.broker.counters.dropped_too_large += 1
                    self.broker.forget(session, d)
                    continue
                session.inflight[d.packet_id] = d
                out += data
                sent += 1
        session.queue[:0] = requeue
        if out:
            await self._send(out)

    async def _take_deliveries(self, session: Session, out: bytearray) -> int:
        """Encode queued deliveries into ``out`` while the window and SEND_BATCH allow."""
        queue = session.queue
        inflight = session.inflight
        taken: list[Delivery] = []
        now = self.broker._wall_ms()
        i = 0
        try:
            while i < len(queue) and len(out) < SEND_BATCH:
                d = queue[i]
                if d.qos and len(inflight) >= self.window:
                    break
                i += 1
                if d.message is None:
                    later = [q for q in queue[i : i + 255] if q.message is None]
                    await self.broker.load_messages([d, *later])
                    if d.message is None:
                        self.broker.forget(session, d)  # removed by retention meanwhile
                        continue
                if d.message.expiry_at is not None and d.message.expired(now):
                    self.broker.counters.dropped_expired += 1
                    self.broker.forget(session, d)
                    continue
                if d.qos:
                    d.packet_id = session.allocate_packet_id()
                    d.state = DeliveryState.SENT
                    inflight[d.packet_id] = d
                aliases = len(self._aliases_out)
                data = self._encode_publish(d, dup=False)
                if self.client_max_packet and len(data) > self.client_max_packet:
                    # the spec: discard it, as if it had been delivered
                    self.broker.counters.dropped_too_large += 1
                    if len(self._aliases_out) > aliases:  # the client never saw this alias
                        del self._aliases_out[d.message.topic]
                    if d.qos:
                        del inflight[d.packet_id]
                    self.broker.forget(session, d)
                    continue
                out += data
                taken.append(d)
        finally:
            del queue[:i]  # one move for the batch, not one per delivery
        self.broker.record_sent(session, [d for d in taken if d.seq])
        return len(taken)

    def _encode_publish(self, d: Delivery, *, dup: bool) -> bytes:
        message = d.message
        assert message is not None
        topic = message.topic
        if self.version != MQTT_5:
            return encode_publish(
                topic.encode(), message.payload, d.qos, d.retain, dup, d.packet_id, None
            )
        props = message.properties
        expiry = message.remaining_expiry(self.broker._wall_ms())
        alias = None
        if self.client_alias_max:
            alias = self._aliases_out.get(topic)
            if alias is not None:
                topic = ""
            elif len(self._aliases_out) < self.client_alias_max:
                alias = self._aliases_out[topic] = len(self._aliases_out) + 1
        if expiry is not None or d.subscription_ids or alias is not None:
            props = replace(
                props,
                message_expiry_interval=expiry,
                subscription_identifiers=d.subscription_ids,
                topic_alias=alias,
            )
        block = b"\x00" if props.is_empty() else encode_properties(props)
        return encode_publish(
            topic.encode(), message.payload, d.qos, d.retain, dup, d.packet_id, block
        )

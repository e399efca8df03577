"""The broker: sessions, the subscription index, retained messages and routing.

How a message travels (``docs/mqtt-storage.md``): a connection hands its
PUBLISHes to :meth:`Broker.publish`. QoS 0 messages are routed to connected
subscribers at once and stored in the background; QoS 1/2 messages are
stored first, and routed by :meth:`_on_stored` when their shard's append is
durable, which also writes the derived state (retained messages, persistent
sessions' delivery pointers, inbound QoS 2 ids, the shard's routed offset) in
one RocksDB batch. Only then does the publisher get its PUBACK/PUBREC.
Routing never reads from the journal: a connected subscriber's delivery
carries the message object itself.

At start :meth:`run` loads the session store and re-applies each shard from
its routed offset, so state derived from acknowledged messages is never
behind the journal.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import trio
from rocksdict import WriteBatch

from journal.config import FsyncPolicy, StreamConfig
from journal.errors import StorageError
from journal.service import JournalService
from meta.users import UserStore

from .errors import ReasonCode
from .messages import Message
from .packets import Connect, Subscribe, Unsubscribe
from .retained import RetainedMessages
from .sessions import NEVER, Delivery, DeliveryState, Session, SubOptions
from .store import Receipt, SessionStore, ShardLog, StoredDelivery, Submission
from .subscriptions import SubscriptionIndex
from .topics import parse_shared

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Broker", "BrokerSettings", "BrokerStatistics", "ConnectRefused"]

log = logging.getLogger("strata.mqtt")

# subscriber -> its matching (filter, options); (group, filter) -> members
_Matches = tuple[
    dict[str, list[tuple[str, SubOptions]]], dict[tuple[str, str], list[tuple[str, SubOptions]]]
]

_MATCH_CACHE_SIZE = 4096
_TAKEOVER_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Limits and choices of one broker (``[mqtt]`` in ``strata.toml``)."""

    shards: int = 1
    fsync: FsyncPolicy = "always"  # the shard streams' fsync policy
    max_packet_size: int = 1 << 20
    receive_maximum: int = 1024  # QoS 1/2 PUBLISHes a client may have unacknowledged
    max_inflight: int = 64  # outbound window, at most the client's Receive Maximum
    max_queued: int = 1000  # deliveries per session (queued + in flight); newest dropped
    max_subscriptions: int = 1000  # per session
    max_topic_levels: int = 128
    topic_alias_maximum: int = 1024
    max_keep_alive: int = 0  # 0: any; else clients asking more get this (Server Keep Alive)
    max_session_expiry: int = NEVER
    sys_interval: float = 10.0
    connect_timeout: float = 10.0
    allow_anonymous: bool | None = None  # None: only while the user store is empty
    max_connections: int = 100_000


@dataclass(slots=True)
class BrokerStatistics:
    """Counters and sizes of one broker, read by ``/metrics`` and ``$SYS``."""

    connections_open: int = 0
    connections_total: int = 0
    protocol_errors: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    dropped_queue_full: int = 0
    dropped_expired: int = 0
    dropped_too_large: int = 0
    sessions: int = 0
    subscriptions: int = 0
    retained: int = 0
    store_appends: int = 0
    store_failures: int = 0


class ConnectRefused(Exception):
    """CONNECT refused with a v5 reason code (the connection maps it for 3.1.1)."""

    def __init__(self, code: ReasonCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(slots=True)
class _PendingWill:
    due: float  # monotonic
    message: Message


class Broker:
    """One broker's state over a :class:`~journal.service.JournalService`."""

    def __init__(
        self,
        journal: JournalService,
        store: SessionStore,
        users: UserStore | None = None,
        settings: BrokerSettings | None = None,
        *,
        version: str = "",
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.settings = settings or BrokerSettings()
        self.journal = journal
        self.store = store
        self.users = users
        self.version = version
        self._wall_ms = wall_ms
        self.shard_log = ShardLog(
            journal,
            self.settings.shards,
            self._on_stored,
            stream_config=StreamConfig(fsync=self.settings.fsync),
        )
        self.sessions: dict[str, Session] = {}
        self.index: SubscriptionIndex[str, SubOptions] = SubscriptionIndex()
        self.retained = RetainedMessages()
        self.counters = BrokerStatistics()  # the counting fields; sizes in statistics()
        self._match_cache: dict[str, _Matches] = {}
        self._wills: dict[str, _PendingWill] = {}
        self._round_robin: dict[tuple[str, str], int] = {}
        self._started = time.monotonic()
        self._nursery: trio.Nursery | None = None
        self.ready = False

    # -- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load and recover the state, then serve until cancelled."""
        made_with = self.store.shards(self.settings.shards)
        if made_with != self.settings.shards:
            raise StorageError(
                f"mqtt.shards is {self.settings.shards} but this broker's data was made with "
                f"{made_with} shards: topics would move between shards and lose their order; "
                f"set mqtt.shards = {made_with}"
            )
        await self.shard_log.create_streams()
        self._load()
        await self._recover()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.shard_log.run)
            nursery.start_soon(self._housekeeping)
            self.ready = True
            task_status.started()

    def _load(self) -> None:
        now = time.monotonic()
        wall_now = self._wall_ms()
        for cid, stored in self.store.sessions().items():
            doc = stored.doc
            session = Session(cid, int(doc["version"]), int(doc["expiry"]))
            # expiry counts from the disconnect, across restarts; a session that was
            # connected when the broker stopped (0) counts from now
            session.disconnected_ms = int(doc.get("disconnected_ms", 0))
            offline_ms = (
                max(0, wall_now - session.disconnected_ms) if session.disconnected_ms else 0
            )
            session.disconnected_at = now - offline_ms / 1000
            for topic_filter, raw in doc["subs"].items():
                options = SubOptions.from_json(raw)
                session.subscriptions[topic_filter] = options
                self.index.add(topic_filter, cid, options)
            for d in stored.deliveries:
                delivery = Delivery(
                    None, d.qos, d.retain, d.subscription_ids, d.shard, d.offset, d.seq,
                    d.packet_id, DeliveryState(d.state),
                )  # fmt: skip
                if delivery.state is DeliveryState.QUEUED:
                    session.queue.append(delivery)
                else:
                    session.inflight[d.packet_id] = delivery
                session.next_seq = max(session.next_seq, d.seq + 1)
            session.inbound = stored.inbound
            self.sessions[cid] = session
        for cid, (due_ms, will) in self.store.wills().items():  # still waiting out a delay
            self._wills[cid] = _PendingWill(now + max(0, due_ms - wall_now) / 1000, will)
        for message in self.store.retained().values():
            self.retained.set(message)

    async def _recover(self) -> None:
        """Re-apply what the journal holds beyond each shard's routed offset."""
        for shard in range(self.shard_log.shards):
            chunk: list[Submission] = []
            base = -1
            async for offset, message in self.shard_log.replay(shard, self.store.routed(shard)):
                if base < 0:
                    base = offset
                chunk.append(Submission(message))
                if len(chunk) >= 1000:
                    self._on_stored(shard, base, chunk, replay=True)
                    chunk, base = [], -1
            if chunk:
                self._on_stored(shard, base, chunk, replay=True)

    async def _housekeeping(self) -> None:
        next_sys = time.monotonic()
        while True:
            now = time.monotonic()
            for cid, will in list(self._wills.items()):
                if will.due <= now:
                    self._drop_will(cid)
                    await self._publish_will(will.message)
            clock = trio.current_time()
            for session in list(self.sessions.values()):
                conn = session.connection
                if conn is None:
                    ends = session.expires_at()
                    if ends is not None and ends <= now:
                        await self._end_session(session)
                    continue
                conn.retire_idle_writer()
                if conn.keep_alive and clock - conn.last_seen > 1.5 * conn.keep_alive:
                    conn.kick(  # checked here, not with a deadline per receive: cheaper
                        ReasonCode.KEEP_ALIVE_TIMEOUT,
                        f"nothing received for {1.5 * conn.keep_alive:g} s "
                        f"(keep alive {conn.keep_alive} s)",
                    )
            if self.settings.sys_interval and now >= next_sys:
                next_sys = now + self.settings.sys_interval
                self.publish_sys()
            await trio.sleep(min(1.0, self.settings.sys_interval or 1.0))

    # -- statistics ------------------------------------------------------------

    def statistics(self) -> BrokerStatistics:
        """The counters, with the sizes of now filled in (a copy)."""
        return replace(
            self.counters,
            sessions=len(self.sessions),
            subscriptions=len(self.index),
            retained=len(self.retained),
            store_appends=self.shard_log.appends,
            store_failures=self.shard_log.failures,
        )

    def publish_sys(self) -> None:
        """Publish ``$SYS/broker/...`` (retained, in memory only) from :meth:`statistics`."""
        st = self.statistics()
        values = {
            "version": f"StrataMQ {self.version}",
            "uptime": f"{int(time.monotonic() - self._started)} seconds",
            "clients/connected": st.connections_open,
            "clients/total": st.connections_total,
            "clients/sessions": st.sessions,
            "clients/maximum": self.settings.max_connections,
            "messages/received": st.messages_received,
            "messages/sent": st.messages_sent,
            "messages/dropped": st.dropped_queue_full + st.dropped_expired + st.dropped_too_large,
            "bytes/received": st.bytes_received,
            "bytes/sent": st.bytes_sent,
            "subscriptions/count": st.subscriptions,
            "retained messages/count": st.retained,
        }
        now = self._wall_ms()
        for name, value in values.items():
            message = Message(f"$SYS/broker/{name}", str(value).encode(), retain=True)
            self.retained.set(message)
            self._route(message, -1, -1, None, now)

    # -- connections -----------------------------------------------------------

    def allows_anonymous(self) -> bool:
        if self.settings.allow_anonymous is not None:
            return self.settings.allow_anonymous
        return self.users is None or len(self.users) == 0

    async def authenticate(self, packet: Connect) -> None:
        if packet.username is None:
            if not self.allows_anonymous():
                raise ConnectRefused(
                    ReasonCode.NOT_AUTHORIZED, "a user name and password are needed"
                )
            return
        if self.users is None or packet.password is None:
            raise ConnectRefused(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad user name or password")
        try:
            password = packet.password.decode()
        except UnicodeDecodeError:
            password = ""
        if not await self.users.verify_async(packet.username, password):
            raise ConnectRefused(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad user name or password")

    async def attach(
        self, conn: Connection, packet: Connect, version: int
    ) -> tuple[Session, bool, str | None]:
        """Give ``conn`` its session: (session, session present, assigned client id)."""
        cid = packet.client_id
        assigned = None
        if not cid:
            if version == 4 and not packet.clean_start:
                raise ConnectRefused(
                    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    "an empty client id needs clean session",
                )
            cid = assigned = f"strata-{secrets.token_hex(8)}"
        await self.authenticate(packet)
        if version == 5:
            expiry = packet.properties.session_expiry_interval or 0
        else:
            expiry = 0 if packet.clean_start else NEVER
        expiry = min(expiry, self.settings.max_session_expiry)
        existing = self.sessions.get(cid)
        if existing is not None and existing.connection is not None:
            old = existing.connection
            old.kick(ReasonCode.SESSION_TAKEN_OVER, "another connection took over the session")
            with trio.move_on_after(_TAKEOVER_TIMEOUT):
                await old.wait_detached()
            existing = self.sessions.get(cid)
            if existing is not None and existing.connection is not None:
                raise ConnectRefused(ReasonCode.SERVER_BUSY, "the previous connection did not end")
        if existing is not None and existing.connection is None:
            ends = existing.expires_at()
            if ends is not None and ends <= time.monotonic():  # before housekeeping saw it
                await self._end_session(existing)
                existing = None
        self._drop_will(cid)  # reconnected before the will delay ran out
        if existing is not None and packet.clean_start:
            await self._end_session(existing, will=False)
            existing = None
        if existing is None:
            session = Session(cid, version, expiry)
            self.sessions[cid] = session
            present = False
        else:
            session = existing
            session.version = version
            present = True
        was_persistent = present and session.persistent
        session.expiry = expiry
        session.disconnected_ms = 0
        if session.persistent:
            await trio.to_thread.run_sync(self.store.put_session, cid, session.document())
        elif was_persistent:
            await trio.to_thread.run_sync(self.store.delete_session, cid)
            self._forget_deliveries(session)
        session.connection = conn
        return session, present, assigned

    async def set_expiry(self, session: Session, expiry: int) -> None:
        """A DISCONNECT changed the session expiry interval."""
        was_persistent = session.persistent
        session.expiry = expiry
        if session.persistent:
            await trio.to_thread.run_sync(
                self.store.put_session, session.client_id, session.document()
            )
        elif was_persistent:
            await trio.to_thread.run_sync(self.store.delete_session, session.client_id)
            self._forget_deliveries(session)

    def shutdown(self) -> None:
        """Disconnect every client with "server shutting down" (v5)."""
        for session in list(self.sessions.values()):
            if session.connection is not None:
                session.connection.kick(ReasonCode.SERVER_SHUTTING_DOWN, "the server is stopping")

    def detach(
        self, session: Session, conn: Connection, will: Message | None, will_delay: int
    ) -> None:
        """``conn`` is gone; publish or schedule its will, end or keep the session."""
        if session.connection is not conn:
            return
        session.connection = None
        session.disconnected_at = time.monotonic()
        self._hand_over_shared(session)
        if not session.persistent:
            self._drop_session(session)
            will_delay = 0
        elif session.expiry != NEVER:
            will_delay = min(will_delay, session.expiry)
            session.disconnected_ms = self._wall_ms()  # not synced: at worst it lives longer
            self.store.put_session(session.client_id, session.document(), sync=False)
        if will is not None:
            if will_delay <= 0:
                self._spawn(self._publish_will, will)
            else:
                self._wills[session.client_id] = _PendingWill(time.monotonic() + will_delay, will)
                due_ms = self._wall_ms() + will_delay * 1000
                self.store.put_will(session.client_id, due_ms, will)  # kept across a restart

    def _drop_will(self, client_id: str) -> _PendingWill | None:
        will = self._wills.pop(client_id, None)
        if will is not None:
            self.store.delete_will(client_id)
        return will

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    async def _publish_will(self, message: Message) -> None:
        try:
            await self.publish([Submission(message)])
        except Exception:  # the journal is down: nobody was promised a will
            log.exception("could not publish the will on %s", message.topic)

    async def _end_session(self, session: Session, *, will: bool = True) -> None:
        pending = self._drop_will(session.client_id)
        if will and pending is not None:
            await self._publish_will(pending.message)
        if session.persistent:
            await trio.to_thread.run_sync(self.store.delete_session, session.client_id)
        self._drop_session(session)

    def _drop_session(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if self.index.remove_all(session.client_id):
            self._match_cache.clear()

    def _forget_deliveries(self, session: Session) -> None:
        for d in (*session.queue, *session.inflight.values()):
            d.seq = 0

    def _hand_over_shared(self, session: Session) -> None:
        """Give a leaving member's shared-subscription deliveries to another member."""
        moved = [d for d in (*session.inflight.values(), *session.queue) if d.share is not None]
        if not moved:
            return
        batch = self.store.batch()
        for d in moved:
            if d.message is None or d.share is None:
                continue  # not read back yet (after a restart): it stays with this member
            group, topic_filter = d.share
            members = self.index.shared_match(d.message.topic).get((group, topic_filter), [])
            others = [(cid, o) for cid, o in members if cid != session.client_id]
            target = self._pick_member(group, topic_filter, others)
            if target is None:
                continue
            if d.seq:
                self.store.delete_delivery(batch, session.client_id, d.seq)
            if d.packet_id in session.inflight and session.inflight[d.packet_id] is d:
                del session.inflight[d.packet_id]
            else:
                session.queue.remove(d)
            copy = Delivery(
                d.message, d.qos, d.retain, d.subscription_ids, d.shard, d.offset, share=d.share
            )
            self._enqueue(self.sessions[target], copy, batch)
        self.store.write(batch)

    # -- publishing ------------------------------------------------------------

    async def submit(self, entries: list[Submission]) -> Receipt:
        """Route QoS 0 messages now and queue everything for storing.

        The receipt's ``wait()`` returns once the QoS 1/2 (and retained)
        messages are durable and routed: then they may be acknowledged.
        """
        self.counters.messages_received += len(entries)
        now = self._wall_ms()
        for entry in entries:
            message = entry.message
            if message.retain:  # in arrival order; stored by _on_stored
                self._retain(message)
            if message.qos == 0:
                self._route(message, -1, -1, None, now)
        return await self.shard_log.submit(entries)

    async def publish(self, entries: list[Submission]) -> None:
        """:meth:`submit` and wait for the receipt."""
        await (await self.submit(entries)).wait()

    def _on_stored(
        self, shard: int, base: int, entries: list[Submission], *, replay: bool = False
    ) -> None:
        batch = self.store.batch()
        now = self._wall_ms()
        for i, entry in enumerate(entries):
            message = entry.message
            if message.retain:
                if replay:
                    self._retain(message)
                self.store.put_retained(batch, message)
            if message.qos:
                self._route(message, shard, base + i, batch, now)
                if entry.packet_id and entry.session is not None:
                    entry.session.inbound.add(entry.packet_id)
                    if entry.session.persistent:
                        self.store.put_inbound(batch, entry.session.client_id, entry.packet_id)
        self.store.put_routed(batch, shard, base + len(entries))
        self.store.write(batch)

    def _retain(self, message: Message) -> None:
        self.retained.set(message)  # an empty payload clears

    def _matches(self, topic: str) -> _Matches:
        found = self._match_cache.get(topic)
        if found is None:
            if len(self._match_cache) >= _MATCH_CACHE_SIZE:
                self._match_cache.clear()
            found = (self.index.match(topic), self.index.shared_match(topic))
            self._match_cache[topic] = found
        return found

    def _route(
        self, message: Message, shard: int, offset: int, batch: WriteBatch | None, now: int
    ) -> None:
        if message.expiry_at is not None and message.expired(now):
            self.counters.dropped_expired += 1
            return
        plain, shared = self._matches(message.topic)
        for cid, pairs in plain.items():
            qos = -1
            ids: list[int] = []
            as_published = False
            for _, options in pairs:
                if options.no_local and cid == message.origin:
                    continue
                qos = max(qos, min(options.qos, message.qos))
                if options.subscription_id:
                    ids.append(options.subscription_id)
                as_published = as_published or options.retain_as_published
            if qos < 0:
                continue
            delivery = Delivery(
                message, qos, message.retain and as_published, tuple(ids), shard, offset
            )
            self._enqueue(self.sessions[cid], delivery, batch)
        for (group, topic_filter), members in shared.items():
            target = self._pick_member(group, topic_filter, members)
            if target is None:
                continue
            options = next(o for c, o in members if c == target)
            delivery = Delivery(
                message,
                min(options.qos, message.qos),
                message.retain and options.retain_as_published,
                (options.subscription_id,) if options.subscription_id else (),
                shard,
                offset,
                share=(group, topic_filter),
            )
            self._enqueue(self.sessions[target], delivery, batch)

    def _pick_member(
        self, group: str, topic_filter: str, members: list[tuple[str, SubOptions]]
    ) -> str | None:
        """Round robin over connected members with room; else any persistent member."""
        if not members:
            return None
        key = (group, topic_filter)
        start = self._round_robin.get(key, 0)
        n = len(members)
        fallback = None
        for i in range(n):
            cid = members[(start + i) % n][0]
            session = self.sessions[cid]
            if session.connection is not None and session.backlog < self.settings.max_queued:
                self._round_robin[key] = start + i + 1
                return cid
            if fallback is None and session.persistent:
                fallback = cid
        return fallback

    def _enqueue(self, session: Session, d: Delivery, batch: WriteBatch | None) -> None:
        if session.connection is None and d.qos == 0:
            return  # QoS 0 is not queued for offline sessions
        if session.backlog >= self.settings.max_queued:
            self.counters.dropped_queue_full += 1
            return
        if session.persistent and d.qos and d.shard >= 0 and batch is not None:
            d.seq = session.take_seq()
            self.store.put_delivery(batch, session.client_id, _stored(d))
        session.queue.append(d)
        if session.connection is not None:
            session.connection.wake()

    def enqueue_retained(self, session: Session, deliveries: Iterable[Delivery]) -> None:
        for d in deliveries:
            self._enqueue(session, d, None)

    # -- acknowledgements from the subscriber -----------------------------------

    def record_sent(self, session: Session, sent: list[Delivery]) -> None:
        """Persist packet ids given to stored deliveries (resent as-is after a restart)."""
        if not session.persistent:
            return
        batch = self.store.batch()
        for d in sent:
            if d.seq:
                self.store.put_delivery(batch, session.client_id, _stored(d))
        self.store.write(batch)

    def complete(self, session: Session, packet_id: int, qos: int) -> Delivery | None:
        """PUBACK (qos 1) or PUBCOMP (qos 2) of ``packet_id``; None if unknown."""
        d = session.inflight.get(packet_id)
        if d is None or d.qos != qos or (qos == 2 and d.state is not DeliveryState.RELEASED):
            return None
        del session.inflight[packet_id]
        if d.seq and session.persistent:
            batch = self.store.batch()
            self.store.delete_delivery(batch, session.client_id, d.seq)
            self.store.write(batch)
        return d

    def forget(self, session: Session, d: Delivery) -> None:
        """``d`` will not be delivered (expired, too large, gone): drop its pointer."""
        if d.seq and session.persistent:
            batch = self.store.batch()
            self.store.delete_delivery(batch, session.client_id, d.seq)
            self.store.write(batch)

    def received(self, session: Session, packet_id: int, failed: bool) -> Delivery | None:
        """PUBREC of ``packet_id``: the delivery is released (or, if ``failed``, dropped)."""
        d = session.inflight.get(packet_id)
        if d is None or d.qos != 2:
            return None
        if failed:
            d.state = DeliveryState.RELEASED
            return self.complete(session, packet_id, 2)
        d.state = DeliveryState.RELEASED
        self.record_sent(session, [d])
        return d

    def release_inbound(self, session: Session, packet_id: int) -> bool:
        """PUBREL from the publisher: forget the QoS 2 id; False if it was unknown."""
        if packet_id not in session.inbound:
            return False
        session.inbound.discard(packet_id)
        if session.persistent:
            batch = self.store.batch()
            self.store.delete_inbound(batch, session.client_id, packet_id)
            self.store.write(batch)
        return True

    async def load_messages(self, deliveries: list[Delivery]) -> None:
        """Read back the messages of deliveries restored from the session store."""
        by_shard: dict[int, list[Delivery]] = {}
        for d in deliveries:
            by_shard.setdefault(d.shard, []).append(d)
        for shard, group in by_shard.items():
            found = await self.shard_log.fetch(shard, sorted({d.offset for d in group}))
            for d in group:
                d.message = found.get(d.offset)

    # -- subscriptions ---------------------------------------------------------

    async def subscribe(
        self, session: Session, packet: Subscribe
    ) -> tuple[list[int], list[Delivery]]:
        """Reason codes for the SUBACK and the retained messages to send after it."""
        codes: list[int] = []
        retained: list[Delivery] = []
        sub_ids = packet.properties.subscription_identifiers
        sub_id = sub_ids[0] if sub_ids else 0
        changed = False
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            new = topic_filter not in session.subscriptions
            if new and len(session.subscriptions) >= self.settings.max_subscriptions:
                codes.append(ReasonCode.QUOTA_EXCEEDED)
                continue
            if topic_filter.count("/") + 1 > self.settings.max_topic_levels:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            options = SubOptions(
                sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id
            )
            session.subscriptions[topic_filter] = options
            self.index.add(topic_filter, session.client_id, options)
            changed = True
            codes.append(sub.qos)
            shared = parse_shared(topic_filter) is not None
            if not shared and (sub.retain_handling == 0 or (sub.retain_handling == 1 and new)):
                ids = (sub_id,) if sub_id else ()
                for message in self.retained.matching(topic_filter):
                    retained.append(Delivery(message, min(sub.qos, message.qos), True, ids))
        if changed:
            self._match_cache.clear()
            if session.persistent:
                await trio.to_thread.run_sync(
                    self.store.put_session, session.client_id, session.document()
                )
        return codes, retained

    async def unsubscribe(self, session: Session, packet: Unsubscribe) -> list[int]:
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            if session.subscriptions.pop(topic_filter, None) is None:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
            else:
                self.index.remove(topic_filter, session.client_id)
                codes.append(ReasonCode.SUCCESS)
        self._match_cache.clear()
        if session.persistent:
            await trio.to_thread.run_sync(
                self.store.put_session, session.client_id, session.document()
            )
        return codes


def _stored(d: Delivery) -> StoredDelivery:
    return StoredDelivery(
        d.seq, d.shard, d.offset, d.qos, d.retain, d.packet_id, int(d.state), d.subscription_ids
    )

"""Where the broker's state lives: the message shards in the journal, the rest in RocksDB.

How it works (``docs/mqtt-storage.md`` has the why):

* :class:`ShardLog` owns the ``mqtt.messages.<n>`` streams (QoS 1/2 and
  retained messages, under the broker's fsync policy) and the
  ``mqtt.qos0.<n>`` streams (plain QoS 0 messages, never fsynced: nobody
  waits for them, and they are never routed again). A topic's shard is
  ``crc32c(topic) % shards``. Connections hand it lists of messages; one
  writer task per shard takes everything queued since its last append and
  appends it as one batch, so concurrent publishers share appends and fsyncs
  (group commit). After each append it calls ``on_stored(shard, base_offset,
  entries)`` before waking the publishers, in offset order.
* :class:`SessionStore` is a RocksDB database beside the broker: persistent
  sessions (subscriptions, queued and in-flight deliveries as pointers to
  shard offsets, inbound QoS 2 packet ids), retained messages, and per shard
  the offset up to which ``on_stored`` has been applied (``routed``). Those
  derived writes are not synced: each batch carries its ``routed`` offset, so
  after a power loss the broker re-applies the shards from there at start
  (the journal is the write-ahead log), and a killed process loses nothing
  because RocksDB's log is already in the page cache. Session creation and
  subscription changes are synced, since the journal cannot replay them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from crc32c import crc32c
from rocksdict import Rdict, WriteBatch, WriteOptions

from journal.config import StreamConfig
from journal.errors import (
    InvalidArgumentError,
    OffsetOutOfRangeError,
    StrataError,
)
from journal.rocks import open_rocksdb, scan_prefix
from journal.segments.batch import decode_batch, encode_batch
from journal.service import JournalService

from .messages import Message, message_from_record, message_to_record
from .sessions import Session

__all__ = [
    "QOS0_PREFIX",
    "SHARD_PREFIX",
    "Receipt",
    "SessionStore",
    "ShardLog",
    "StoredDelivery",
    "StoredSession",
    "Submission",
]

SHARD_PREFIX = "mqtt.messages."
QOS0_PREFIX = "mqtt.qos0."
_QOS0_CONFIG = StreamConfig(fsync="none")
QOS0_LINGER = 0.005  # seconds a QoS 0 writer waits for more before appending
MAX_PENDING_BYTES = 16 << 20  # per shard: publishers wait beyond this (back-pressure)

_POINTER = struct.Struct(">HQBBHBB")  # shard, offset, qos, retain, packet id, state, n sub ids
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


# -- the message shards -----------------------------------------------------------


@dataclass(slots=True)
class Submission:
    """One message to store; ``packet_id`` is set for an inbound QoS 2 PUBLISH."""

    message: Message
    packet_id: int = 0
    session: Session | None = None  # the publisher's, to record the QoS 2 packet id


@dataclass(slots=True)
class _Pending:
    entries: list[Submission] = field(default_factory=list)
    size: int = 0
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


StoredCallback = Callable[[int, int, list[Submission]], None]


@dataclass(slots=True)
class Receipt:
    """The appends that hold a submission's QoS 1/2 and retained messages."""

    pending: list[_Pending]

    async def wait(self) -> None:
        """Return once durable (and routed); raise the journal's error if an append failed."""
        for pending in self.pending:
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error


class ShardLog:
    """The message shard streams, each written by one group-committing task."""

    def __init__(
        self,
        journal: JournalService,
        shards: int,
        on_stored: StoredCallback,
        *,
        stream_config: StreamConfig | None = None,
    ) -> None:
        self.journal = journal
        self.shards = shards
        self.on_stored = on_stored
        self.stream_config = stream_config
        # streams 0..S-1 hold QoS 1/2 and retained messages; S..2S-1 plain QoS 0 ones,
        # which nobody waits for: they are never fsynced, and never wait behind one
        self.names = [f"{SHARD_PREFIX}{n}" for n in range(shards)]
        self.names += [f"{QOS0_PREFIX}{n}" for n in range(shards)]
        streams = len(self.names)
        self._pending = [_Pending() for _ in range(streams)]
        self._work = [trio.lowlevel.ParkingLot() for _ in range(streams)]
        self._space = [trio.lowlevel.ParkingLot() for _ in range(streams)]
        self.appends = 0
        self.failures = 0

    def shard_of(self, topic: str) -> int:
        return crc32c(topic.encode()) % self.shards if self.shards > 1 else 0

    async def create_streams(self) -> None:
        # Fewer shards than an earlier run would strand the messages (and the
        # session pointers into them) in the shards beyond: refuse to start.
        earlier = [
            int(name[len(SHARD_PREFIX) :])
            for name in await self.journal.list_streams()
            if name.startswith(SHARD_PREFIX) and name[len(SHARD_PREFIX) :].isdigit()
        ]
        if earlier and max(earlier) >= self.shards:
            raise InvalidArgumentError(
                f"mqtt.shards is {self.shards} but the journal holds {SHARD_PREFIX}"
                f"{max(earlier)} from an earlier run; the shard count is fixed once the "
                f"first broker ran (set it back to {max(earlier) + 1})"
            )
        for name in self.names[: self.shards]:
            await self.journal.create_stream(name, self.stream_config, exist_ok=True)
        for name in self.names[self.shards :]:
            await self.journal.create_stream(name, _QOS0_CONFIG, exist_ok=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for stream in range(len(self.names)):
                nursery.start_soon(self._writer, stream)
            task_status.started()

    async def submit(self, entries: Sequence[Submission]) -> Receipt:
        """Queue ``entries`` (in order per shard); the receipt waits for their durability.

        Waits only while a stream has more than MAX_PENDING_BYTES queued.
        """
        touched: list[_Pending] = []
        shards = self.shards
        for entry in entries:
            message = entry.message
            shard = crc32c(message.topic.encode()) % shards if shards > 1 else 0
            if not message.qos and not message.retain:
                shard += shards
            while self._pending[shard].size > MAX_PENDING_BYTES:
                await self._space[shard].park()
            pending = self._pending[shard]
            pending.entries.append(entry)
            pending.size += len(message.payload) + len(message.topic) + 64
            if len(pending.entries) == 1:
                self._work[shard].unpark_all()
            if shard < shards and (not touched or touched[-1] is not pending):
                touched.append(pending)
        return Receipt(touched)

    async def store(self, entries: Sequence[Submission]) -> None:
        """Queue ``entries`` and return once those in durable streams are durable."""
        await (await self.submit(entries)).wait()

    async def _writer(self, shard: int) -> None:
        name = self.names[shard]
        while True:
            pending = self._pending[shard]
            if not pending.entries:
                await self._work[shard].park()
                if shard >= self.shards:  # QoS 0: nobody waits, so gather more per append
                    await trio.sleep(QOS0_LINGER)
                continue
            self._pending[shard] = _Pending()
            self._space[shard].unpark_all()
            records = [message_to_record(e.message) for e in pending.entries]
            try:
                result = await self.journal.append(name, records)
            except StrataError as exc:
                self.failures += 1
                pending.error = exc
            else:
                self.appends += 1
                if shard < self.shards:
                    self.on_stored(shard, result.base_offset, pending.entries)
            pending.done.set()

    async def fetch(self, shard: int, offsets: Sequence[int]) -> dict[int, Message]:
        """The messages at ``offsets`` (ascending) of ``shard``; gone ones are missing."""
        found: dict[int, Message] = {}
        wanted = set(offsets)
        at = 0
        while at < len(offsets):
            try:
                records = await self.journal.read(self.names[shard], offsets[at], 256 << 10)
            except OffsetOutOfRangeError:  # removed by retention
                at += 1
                continue
            if not records:
                break
            last = -1
            for record in records:
                assert record.offset is not None
                last = record.offset
                if last in wanted:
                    found[last] = message_from_record(record)
            while at < len(offsets) and offsets[at] <= last:
                at += 1
        return found

    async def replay(self, shard: int, offset: int) -> AsyncIterator[tuple[int, Message]]:
        """Every (offset, message) from ``offset`` to the shard's current end."""
        info = await self.journal.describe_stream(self.names[shard])
        offset = max(offset, info.first_offset)  # retention may have removed the start
        while offset < info.next_offset:
            records = await self.journal.read(self.names[shard], offset, 1 << 20)
            if not records:
                return
            for record in records:
                assert record.offset is not None
                if record.offset >= offset:
                    yield record.offset, message_from_record(record)
            offset = records[-1].offset + 1  # type: ignore[operator]


# -- RocksDB: sessions, retained messages, routed offsets ---------------------------


@dataclass(slots=True)
class StoredDelivery:
    """A queued or in-flight delivery of a persistent session, as stored."""

    seq: int
    shard: int
    offset: int
    qos: int
    retain: bool
    packet_id: int
    state: int
    subscription_ids: tuple[int, ...]


@dataclass(slots=True)
class StoredSession:
    client_id: str
    doc: dict[str, Any]  # Session.document()
    deliveries: list[StoredDelivery] = field(default_factory=list)
    inbound: set[int] = field(default_factory=set)


def _session_key(client_id: str) -> bytes:
    return b"s/" + client_id.encode()


def _delivery_prefix(client_id: str) -> bytes:
    return b"q/" + client_id.encode() + b"\x00"


def _inbound_prefix(client_id: str) -> bytes:
    return b"i/" + client_id.encode() + b"\x00"


class SessionStore:
    """Typed access to the broker's RocksDB database (one process at a time)."""

    def __init__(self, db: Rdict) -> None:
        self._db = db
        self._sync = WriteOptions()
        self._sync.sync = True
        self._unsynced = WriteOptions()
        self._closed = False

    @classmethod
    def open(cls, path: Path) -> SessionStore:
        return cls(open_rocksdb(path, "the MQTT session store"))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return scan_prefix(self._db, prefix)

    # -- loading ---------------------------------------------------------------

    def sessions(self) -> dict[str, StoredSession]:
        out: dict[str, StoredSession] = {}
        for key, value in self._scan(b"s/"):
            cid = key[2:].decode()
            out[cid] = StoredSession(cid, json.loads(value))
        for key, value in self._scan(b"q/"):  # q/<client id> NUL <u64 seq>
            session = out.get(key[2:-9].decode())
            if session is not None:
                session.deliveries.append(_decode_delivery(_U64.unpack(key[-8:])[0], value))
        for key, _ in self._scan(b"i/"):  # i/<client id> NUL <u16 packet id>
            session = out.get(key[2:-3].decode())
            if session is not None:
                session.inbound.add(_U16.unpack(key[-2:])[0])
        for session in out.values():
            session.deliveries.sort(key=lambda d: d.seq)
        return out

    def retained(self) -> dict[str, Message]:
        out = {}
        for key, value in self._scan(b"r/"):
            _, records = decode_batch(value)
            out[key[2:].decode()] = message_from_record(records[0])
        return out

    def shards(self, default: int) -> int:
        """The shard count this store was made with; a new store takes ``default``."""
        raw = self._db.get(b"meta/shards")
        if raw is None:
            self._db.put(b"meta/shards", str(default).encode(), self._sync)
            return default
        return int(bytes(raw))

    def wills(self) -> dict[str, tuple[int, Message]]:
        """Client id -> (wall-clock ms it is due, will) of wills waiting out their delay."""
        out = {}
        for key, value in self._scan(b"w/"):
            due = _U64.unpack_from(value)[0]
            _, records = decode_batch(value, _U64.size)
            out[key[2:].decode()] = (due, message_from_record(records[0]))
        return out

    def put_will(self, client_id: str, due_ms: int, message: Message) -> None:
        """Not synced: a will is a best effort, and a lost one was never promised."""
        value = _U64.pack(due_ms) + encode_batch([message_to_record(message)], now_ms=0)
        self._db.put(b"w/" + client_id.encode(), value, self._unsynced)

    def delete_will(self, client_id: str) -> None:
        self._db.delete(b"w/" + client_id.encode(), self._unsynced)

    def routed(self, shard: int) -> int:
        raw = self._db.get(b"routed/" + _U16.pack(shard))
        return 0 if raw is None else _U64.unpack(bytes(raw))[0]

    # -- synced single changes -------------------------------------------------

    def put_session(self, client_id: str, doc: dict[str, object], *, sync: bool = True) -> None:
        options = self._sync if sync else self._unsynced
        self._db.put(_session_key(client_id), json.dumps(doc).encode(), options)

    def delete_session(self, client_id: str) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.delete(_session_key(client_id))
        for prefix in (_delivery_prefix(client_id), _inbound_prefix(client_id)):
            for key, _ in self._scan(prefix):
                batch.delete(key)
        self._db.write(batch, self._sync)

    # -- batched derived changes (not synced: replayable from the journal) -----

    @staticmethod
    def batch() -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def write(self, batch: WriteBatch) -> None:
        if len(batch):
            self._db.write(batch)

    @staticmethod
    def put_delivery(batch: WriteBatch, client_id: str, d: StoredDelivery) -> None:
        ids = d.subscription_ids
        value = _POINTER.pack(
            d.shard, d.offset, d.qos, d.retain, d.packet_id, d.state, len(ids)
        ) + b"".join(_U32.pack(i) for i in ids)
        batch.put(_delivery_prefix(client_id) + _U64.pack(d.seq), value)

    @staticmethod
    def delete_delivery(batch: WriteBatch, client_id: str, seq: int) -> None:
        batch.delete(_delivery_prefix(client_id) + _U64.pack(seq))

    @staticmethod
    def put_inbound(batch: WriteBatch, client_id: str, packet_id: int) -> None:
        batch.put(_inbound_prefix(client_id) + _U16.pack(packet_id), b"")

    @staticmethod
    def delete_inbound(batch: WriteBatch, client_id: str, packet_id: int) -> None:
        batch.delete(_inbound_prefix(client_id) + _U16.pack(packet_id))

    @staticmethod
    def put_retained(batch: WriteBatch, message: Message) -> None:
        key = b"r/" + message.topic.encode()
        if message.payload:
            batch.put(key, encode_batch([message_to_record(message)], now_ms=0))
        else:
            batch.delete(key)

    @staticmethod
    def put_routed(batch: WriteBatch, shard: int, offset: int) -> None:
        batch.put(b"routed/" + _U16.pack(shard), _U64.pack(offset))


def _decode_delivery(seq: int, value: bytes) -> StoredDelivery:
    shard, offset, qos, retain, pid, state, n = _POINTER.unpack_from(value)
    ids = tuple(_U32.unpack_from(value, _POINTER.size + 4 * i)[0] for i in range(n))
    return StoredDelivery(seq, shard, offset, qos, bool(retain), pid, state, ids)

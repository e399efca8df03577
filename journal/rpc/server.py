"""The journal RPC server: a thin trio loop around ``Connection(Role.SERVER)``.

How it works. ``serve`` owns one nursery; each accepted socket gets a task
that reads into the connection (a large frame in large pieces), drains
``next_event()`` and dispatches each request to a task of its own, so a slow
WAIT or APPEND never holds up a later READ on the same connection
(pipelining). Every write goes through the connection's
one :class:`~journal.rpc.writer.FrameWriter`, which coalesces queued frames and
is shielded, so a cancelled task never leaves half a frame on the wire.
A subscription is a task that pushes DATA while it has credit and sleeps on an
event that CREDIT sets. Protocol errors get a fatal ERROR and close that
connection only; a failing journal call becomes an ERROR for that request.
The meaning of each request is in :func:`call`, testable without a socket; an
APPEND whose batch is already what ``Journal.append`` would store goes to
``append_batch`` without being decoded (:func:`_append`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import trio

from journal.config import StreamConfig
from journal.errors import (
    BatchTooLargeError,
    LocalProtocolError,
    RemoteProtocolError,
    StrataError,
)
from journal.journal import Journal
from journal.records import AppendResult, Record
from journal.rpc.connection import NEED_DATA, Connection, ConnectionClosed, Role, State
from journal.rpc.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    Append,
    AppendBatch,
    Appended,
    ApplyRetention,
    Batches,
    Count,
    CreateStream,
    Data,
    DeleteStream,
    Done,
    ErrorCode,
    ErrorResponse,
    GetStatistics,
    GetStreamInfo,
    GrantCredit,
    Hello,
    HelloOk,
    ListSegments,
    ListStreams,
    Message,
    Migrate,
    OffsetForTime,
    OffsetResult,
    Problems,
    ReadBatches,
    Request,
    Response,
    Roll,
    SegmentList,
    StatisticsResult,
    StreamInfoResult,
    StreamList,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Verify,
    Wait,
    error_to_response,
)
from journal.rpc.writer import FrameWriter
from journal.segments.batch import (
    HEADER_SIZE,
    check_batch,
    decode_batch,
    encode_batch,
    parse_header,
    restamp_batch,
)
from journal.stats import JournalStatistics, StreamStatistics

__all__ = ["JournalServer", "RpcServerStatistics", "call", "encode_append"]

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 << 10
MAX_RECEIVE_SIZE = 4 << 20  # one read's limit while the rest of a large frame comes in
WRITE_TIMEOUT = 10.0  # a peer that takes no bytes for this long is dropped
LINGER = 2.0  # after a fatal ERROR, read and drop for this long so the peer sees it
# In APPEND, a batch with this producer epoch carries in its producer id the
# placeholder timestamp of records sent without one (see docs/rpc.md).
PLACEHOLDER_EPOCH = 0
I64_MAX = (1 << 63) - 1
FRAME_SLACK = 4096  # room for a frame's header and list counts around its batches


@dataclass(frozen=True, slots=True)
class RpcServerStatistics:
    connections_open: int
    connections_total: int
    requests: int
    protocol_errors: int
    bytes_in: int
    bytes_out: int


async def call(journal: Journal, req: Request, max_bytes: int) -> Response:
    """Run one request against the journal; ``max_bytes`` caps a read's answer."""
    rid = req.request_id
    match req:
        case CreateStream():
            config = StreamConfig.from_json(req.config)
            await journal.create_stream(req.stream, config, exist_ok=req.exist_ok)
            return Done(rid)
        case DeleteStream():
            await journal.delete_stream(req.stream)
            return Done(rid)
        case ListStreams():
            return StreamList(rid, tuple(await journal.list_streams()))
        case GetStreamInfo():
            return StreamInfoResult.of(rid, await journal.describe_stream(req.stream))
        case AppendBatch():
            res = await journal.append_batch(req.stream, req.batch)
            return Appended(rid, res.base_offset, res.last_offset)
        case Append():
            res = await _append(journal, req.stream, req.batch)
            return Appended(rid, res.base_offset, res.last_offset)
        case ReadBatches():
            size = min(req.max_bytes, max_bytes)
            return Batches(rid, tuple(await journal.read_batches(req.stream, req.offset, size)))
        case OffsetForTime():
            return OffsetResult(rid, await journal.offset_for_time(req.stream, req.timestamp_ms))
        case Wait():
            await journal.wait(req.stream, req.offset)
            return Done(rid)
        case Roll():
            await journal.roll(req.stream)
            return Done(rid)
        case GetStatistics():
            stats: JournalStatistics | StreamStatistics
            if req.stream is None:
                stats = await journal.get_statistics()
            else:
                stats = await journal.get_statistics(req.stream)
            return StatisticsResult(rid, json.dumps(dataclasses.asdict(stats)).encode())
        case ListSegments():
            return SegmentList(rid, tuple(await journal.list_segments(req.stream)))
        case ApplyRetention():
            return Count(rid, await journal.apply_retention(req.stream))
        case Migrate():
            return Count(rid, await journal.migrate(req.stream))
        case Verify():
            return Problems.of(rid, await journal.verify(req.stream))
    raise LocalProtocolError(f"no handler for {type(req).__name__}")


async def _append(journal: Journal, stream: str, batch: bytes) -> AppendResult:
    """APPEND: store the records the client encoded as ``Journal.append`` would.

    The fast path hands the client's batch to ``append_batch`` as it is: when
    it is exactly what ``Journal.append`` would encode from its records (the
    header of :func:`encode_append`'s output, and either every record with its
    own timestamp or every record without one, then restamped with the
    journal's clock), and when it fits the stream's ``max_batch_bytes``. Any
    other batch is decoded into records for ``Journal.append``, which splits
    it by ``max_batch_bytes`` and stamps the records sent without a timestamp.
    Both paths store the same bytes.
    """
    raw: bytes | bytearray | None = None
    header = parse_header(batch, 0) if len(batch) >= HEADER_SIZE else None
    if (
        header is not None
        and header.size == len(batch)
        and header.record_count >= 1
        and (header.base_offset, header.partition_leader_epoch, header.attributes) == (0, -1, 0)
        and header.base_sequence == -1
    ):
        if (header.producer_id, header.producer_epoch) == (-1, -1):
            raw = batch  # every record has its timestamp
        elif header.producer_epoch == PLACEHOLDER_EPOCH and header.producer_id in (
            header.base_timestamp,
            header.max_timestamp,
        ):
            check_batch(batch)  # restamping recomputes the CRC: check the sender's first
            raw = restamp_batch(batch, header, journal.now_ms())
    if raw is not None:
        with suppress(BatchTooLargeError):  # raised before anything is stored
            return await journal.append_batch(stream, raw)
    header, records = decode_batch(batch)
    if header.producer_epoch == PLACEHOLDER_EPOCH:
        for record in records:
            if record.timestamp == header.producer_id:
                record.timestamp = None
    return await journal.append(stream, records)


class _Peer:
    """One accepted connection: its socket, state machine, writer and subscriptions."""

    def __init__(self, stream: trio.SocketStream, conn: Connection, server: JournalServer) -> None:
        self.stream = stream
        self.conn = conn
        self.server = server
        self.writer = FrameWriter(stream, timeout=WRITE_TIMEOUT, on_sent=server._count_out)
        self.closing = False  # the client sent a fatal ERROR
        self.eof = False
        self.subs: dict[int, _Subscription] = {}

    @property
    def broken(self) -> bool:
        return self.closing or self.writer.broken

    async def send(self, message: Message) -> bool:
        """Write one frame; False if the connection is gone or the frame is not allowed."""
        if self.broken or self.conn.state is State.CLOSED:
            return False
        try:
            data = self.conn.send(message)
        except LocalProtocolError as exc:
            if exc.code != ErrorCode.FRAME_TOO_LARGE or not isinstance(message, Response):
                log.warning("not sending %s: %s", type(message).__name__, exc)
                return False
            data = self.conn.send(error_to_response(message.request_id, exc))
        try:
            await self.writer.write(data)
        except trio.BrokenResourceError:
            return False
        return True

    async def send_raw(self, data: bytes) -> None:
        if data and not self.broken:
            with suppress(trio.BrokenResourceError):
                await self.writer.write(data)


@dataclass(slots=True)
class _Subscription:
    scope: trio.CancelScope
    credit_changed: trio.Event
    unsubscribed: bool = False


class JournalServer:
    """Serves a :class:`~journal.journal.Journal` over the journal RPC (``docs/rpc.md``)."""

    def __init__(
        self,
        journal: Journal,
        *,
        name: str = "strata",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = 1024,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.journal = journal
        self.name = name
        self.max_frame_size = max_frame_size
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self._listeners: list[trio.SocketListener] = []
        self._scope: trio.CancelScope | None = None
        self._closing = False
        self._stopped = trio.Event()
        self._busy = 0  # requests being applied (WAITs and subscriptions excluded)
        self._idle = trio.Event()
        self._peers: set[_Peer] = set()
        self._connections_total = 0
        self._requests = 0
        self._protocol_errors = 0
        self._bytes_in = 0
        self._bytes_out = 0

    def _count_out(self, size: int) -> None:
        self._bytes_out += size

    @property
    def accepting(self) -> bool:
        """True while the listener is up (what ``/ready`` reports)."""
        return bool(self._listeners) and not self._closing

    def statistics(self) -> RpcServerStatistics:
        return RpcServerStatistics(
            connections_open=len(self._peers),
            connections_total=self._connections_total,
            requests=self._requests,
            protocol_errors=self._protocol_errors,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
        )

    # -------------------------------------------------------------- lifecycle

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: a free port), report the bound port, serve until
        cancelled or :meth:`shutdown`."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self._listeners = listeners
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                for listener in listeners:
                    nursery.start_soon(self._accept, listener, nursery)
                task_status.started(listeners[0].socket.getsockname()[1])
        finally:
            self._listeners = []
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
            self._stopped.set()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, answer new requests UNAVAILABLE, give in-flight ones up to
        ``grace`` seconds, then close every connection and end :meth:`serve`."""
        self._closing = True
        for listener in self._listeners:
            await listener.aclose()
        with trio.move_on_after(grace):
            while self._busy:
                await self._idle.wait()
        for peer in list(self._peers):
            with trio.move_on_after(1.0):
                await peer.send(ErrorResponse(0, ErrorCode.UNAVAILABLE, "server shutting down"))
        if self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # shutdown closed the listener
            except OSError as exc:  # EMFILE and friends: wait for a file to free up
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self._connection, stream)

    # ------------------------------------------------------------- connections

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = Connection(Role.SERVER, name=self.name, max_frame_size=self.max_frame_size)
        peer = _Peer(stream, conn, self)
        self._connections_total += 1
        try:
            if len(self._peers) >= self.max_connections or self._closing:
                why = "too many connections" if not self._closing else "server shutting down"
                await peer.send(ErrorResponse(0, ErrorCode.UNAVAILABLE, why))
            else:
                self._peers.add(peer)
                async with trio.open_nursery() as nursery:
                    await self._read_loop(peer, nursery)
                    nursery.cancel_scope.cancel()  # the peer is gone: answers have nowhere to go
            await _linger(peer)
        except Exception:
            log.exception("journal RPC connection failed")
        finally:
            self._peers.discard(peer)
            await trio.aclose_forcefully(stream)

    async def _read_loop(self, peer: _Peer, nursery: trio.Nursery) -> None:
        conn = peer.conn
        with trio.move_on_after(self.handshake_timeout) as handshake:
            while conn.state is not State.READY:
                if not await self._step(peer, nursery):
                    return
        if handshake.cancelled_caught:
            log.info("journal RPC handshake timed out after %ss", self.handshake_timeout)
            await peer.send(ErrorResponse(0, ErrorCode.UNAVAILABLE, "handshake timed out"))
            return
        while await self._step(peer, nursery):
            pass

    async def _step(self, peer: _Peer, nursery: trio.Nursery) -> bool:
        """Handle the next event (reading when needed); False when the connection is done."""
        conn = peer.conn
        try:
            event = conn.next_event()
            if event is NEED_DATA:
                # a large frame is read in large pieces, not 64 KiB at a time
                size = min(max(RECEIVE_SIZE, conn.missing), MAX_RECEIVE_SIZE)
                try:
                    data = await peer.stream.receive_some(size)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False
                self._bytes_in += len(data)
                peer.eof = not data
                conn.receive_data(data)
                return not peer.broken
        except RemoteProtocolError as exc:
            self._protocol_errors += 1
            log.info("journal RPC protocol error from %s: %s", conn.peer_name, exc)
            await peer.send_raw(conn.send_failure(exc))
            return False
        if isinstance(event, ConnectionClosed):
            return False
        assert isinstance(event, Message)
        await self._dispatch(peer, event, nursery)
        return not peer.broken

    async def _dispatch(self, peer: _Peer, event: Message, nursery: trio.Nursery) -> None:
        if isinstance(event, Hello):
            common = set(event.versions) & set(peer.conn.versions)
            await peer.send(HelloOk(max(common), self.name, self.max_frame_size))
        elif isinstance(event, GrantCredit):
            sub = peer.subs.get(event.request_id)
            if sub is not None:
                sub.credit_changed.set()
        elif isinstance(event, Unsubscribe):
            sub = peer.subs.get(event.request_id)
            if sub is not None:
                sub.unsubscribed = True
                sub.scope.cancel()
        elif isinstance(event, ErrorResponse):  # fatal, from the client: it is closing
            log.info("journal RPC client %s failed: %s", peer.conn.peer_name, event.message)
            peer.closing = True
        elif isinstance(event, Request):
            self._requests += 1
            if self._closing:
                await peer.send(
                    ErrorResponse(event.request_id, ErrorCode.UNAVAILABLE, "server shutting down")
                )
            elif isinstance(event, Subscribe):
                sub = _Subscription(trio.CancelScope(), trio.Event())
                peer.subs[event.request_id] = sub
                nursery.start_soon(self._subscription, peer, event, sub)
            else:
                nursery.start_soon(self._answer, peer, event)

    async def _answer(self, peer: _Peer, req: Request) -> None:
        tracked = not isinstance(req, Wait)  # a long poll does not hold up shutdown
        if tracked:
            self._busy += 1
        try:
            await peer.send(await self._response(req))
        finally:
            if tracked:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()
                    self._idle = trio.Event()

    async def _response(self, req: Request) -> Message:
        try:
            return await call(self.journal, req, self._read_budget)
        except Exception as exc:
            if not isinstance(exc, StrataError | ValueError):
                log.exception("journal RPC %s failed", type(req).__name__)
            return error_to_response(req.request_id, exc)

    @property
    def _read_budget(self) -> int:
        return max(1, self.max_frame_size - FRAME_SLACK) // 2

    # ----------------------------------------------------------- subscriptions

    async def _subscription(self, peer: _Peer, req: Subscribe, sub: _Subscription) -> None:
        rid = req.request_id
        try:
            with sub.scope:
                try:
                    await self.journal.describe_stream(req.stream)  # unknown: ERROR, not SUBSCRIBED
                    if await peer.send(Subscribed(rid)):
                        await self._push(peer, req, sub)
                except Exception as exc:
                    if not isinstance(exc, StrataError | ValueError):
                        log.exception("journal RPC subscription to %r failed", req.stream)
                    await peer.send(error_to_response(rid, exc))
            if sub.unsubscribed:
                await peer.send(Unsubscribed(rid))
        finally:
            peer.subs.pop(rid, None)

    async def _push(self, peer: _Peer, req: Subscribe, sub: _Subscription) -> None:
        """DATA from ``req.from_offset`` on, never over the credit the client granted."""
        conn, rid, offset = peer.conn, req.request_id, req.from_offset
        while not peer.broken:
            while conn.credit(rid) <= 0:
                await sub.credit_changed.wait()
                sub.credit_changed = trio.Event()
            await self.journal.wait(req.stream, offset)
            credit = conn.credit(rid)
            batches = await self.journal.read_batches(
                req.stream, offset, min(credit, self._read_budget)
            )
            taken: list[bytes] = []
            size = 0
            for batch in batches:
                if taken and size + len(batch) > min(credit, self._read_budget):
                    break
                taken.append(batch)
                size += len(batch)
            if not taken:
                continue
            if not await peer.send(Data(rid, tuple(taken))):
                return
            last = parse_header(taken[-1], 0)
            offset = last.next_offset


async def _linger(peer: _Peer) -> None:
    """Close our side first, then drain: closing with unread input would send a TCP
    reset, and the peer could lose the ERROR frame that says why we closed."""
    if peer.eof or peer.broken:
        return
    with trio.move_on_after(LINGER):
        try:
            await peer.stream.send_eof()
            while await peer.stream.receive_some(RECEIVE_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def encode_append(records: Sequence[Record]) -> bytes:
    """The APPEND batch for ``records``: those without a timestamp get a placeholder.

    The placeholder is a timestamp no record of this append uses, next to theirs
    (so deltas stay small); the producer id says which, the producer epoch that
    there is one. The journal ignores both fields: it re-encodes the records.
    """
    explicit = [r.timestamp for r in records if r.timestamp is not None]
    if len(explicit) == len(records):
        return encode_batch(records, now_ms=0)
    if not explicit:
        placeholder = 0
    elif max(explicit) < I64_MAX:
        placeholder = max(explicit) + 1
    else:
        placeholder = min(explicit) - 1
    return encode_batch(
        records, now_ms=placeholder, producer_id=placeholder, producer_epoch=PLACEHOLDER_EPOCH
    )

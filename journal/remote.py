"""``RemoteJournal``: the :class:`~journal.service.JournalService` over the journal RPC.

How it works. A manager task (in the nursery of :meth:`RemoteJournal.connect`)
keeps one connection up: it dials, does the handshake, then runs the single
reader that routes each answer to the request waiting on it (a per-request
event) and each pushed DATA to its tail's channel. Many callers share the
connection: each request gets its own id, so answers may come in any order.
A caller encodes its request and queues it on the connection's
:class:`~journal.rpc.writer.FrameWriter`, which sends what several callers
queued together in one write; it waits for the answer without a cancel scope
unless ``request_timeout`` is set.

When the connection drops, the manager fails every request in flight with
:class:`~journal.errors.JournalConnectionLostError` (``maybe_applied`` for
requests that change state), then redials with exponential backoff, forever.
Requests made while disconnected fail at once with
:class:`~journal.errors.JournalUnavailableError`: they were never sent.
Nothing that changes state is ever re-sent by the client; read-only requests
are not re-sent either (the caller decides), except WAIT and the tail's
SUBSCRIBE, which are idempotent and resume on the next connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar, overload

import trio

from journal.config import StreamConfig
from journal.errors import (
    BatchTooLargeError,
    InvalidArgumentError,
    InvalidBatchError,
    JournalClosedError,
    JournalConnectionLostError,
    JournalUnavailableError,
    LocalProtocolError,
    RemoteProtocolError,
    StorageError,
)
from journal.journal import SegmentInfo, StreamInfo, _check_name
from journal.records import AppendResult, Record
from journal.rpc.connection import NEED_DATA, Connection, ConnectionClosed, Role, State
from journal.rpc.frames import (
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
    error_from_response,
)
from journal.rpc.server import MAX_RECEIVE_SIZE, encode_append
from journal.rpc.writer import FrameWriter
from journal.segments.batch import decode_batch
from journal.stats import JournalStatistics, StreamStatistics, statistics_from_dict

__all__ = ["RemoteClientStatistics", "RemoteJournal"]

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 << 10
WRITE_TIMEOUT = 10.0  # a server that takes no bytes for this long is dropped
TAIL_CREDIT = 4 << 20  # bytes a tail lets the server push ahead of its consumer
U32_MAX = 0xFFFFFFFF

# Requests whose outcome is unknown when their answer is lost.
STATE_CHANGING: frozenset[type[Request]] = frozenset(
    {CreateStream, DeleteStream, AppendBatch, Append, Roll, ApplyRetention, Migrate, Verify}
)

_R = TypeVar("_R", bound=Message)


@dataclass(frozen=True, slots=True)
class RemoteClientStatistics:
    connects: int  # handshakes completed
    disconnects: int  # connections lost after a handshake
    requests: int  # requests written to a connection
    retryable_failures: int  # JournalUnavailableError (lost or never sent) raised to callers


class _Pending:
    """One request waiting for its answer."""

    __slots__ = ("answer", "done", "maybe_applied")

    def __init__(self, maybe_applied: bool) -> None:
        self.done = trio.Event()
        self.answer: Message | BaseException | None = None
        self.maybe_applied = maybe_applied

    def resolve(self, answer: Message | BaseException) -> None:
        if not self.done.is_set():
            self.answer = answer
            self.done.set()


class _Link:
    """One live connection: socket, state machine, writer, who waits for what."""

    def __init__(self, stream: trio.SocketStream, conn: Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.writer = FrameWriter(stream, timeout=WRITE_TIMEOUT)
        self.pending: dict[int, _Pending] = {}
        self.subs: dict[int, trio.MemorySendChannel[Message]] = {}
        self.failed = False
        self.gone = trio.Event()  # set once the link is dead and everyone was told

    @property
    def dead(self) -> bool:
        return self.failed or self.writer.broken

    async def write(self, message: Message) -> None:
        """Send one frame; raises LocalProtocolError (not sent) or BrokenResourceError."""
        if self.dead:
            raise trio.BrokenResourceError("connection lost")
        await self.writer.write(self.conn.send(message))

    async def kill(self) -> None:
        """Mark the link dead and close the socket, which ends the reader's wait."""
        self.failed = True
        await trio.aclose_forcefully(self.stream)

    def fail_all(self, why: str) -> None:
        self.failed = True
        for pending in self.pending.values():
            pending.resolve(JournalConnectionLostError(why, maybe_applied=pending.maybe_applied))
        self.pending.clear()
        for channel in self.subs.values():
            channel.close()  # the tail sees EndOfChannel and re-subscribes
        self.subs.clear()
        self.gone.set()


class RemoteJournal:
    """A journal on another machine, behind the same async API as the in-process one."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        name: str = "strata-client",
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        request_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.request_timeout = request_timeout
        self._link: _Link | None = None
        self._link_up = trio.Event()  # set while a link is up; replaced when it drops
        self._closed = False  # the connect() block has ended: every call raises
        self._connects = 0
        self._disconnects = 0
        self._requests = 0
        self._retryable_failures = 0

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        address: str | tuple[str, int],
        *,
        name: str = "strata-client",
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        request_timeout: float | None = None,
    ) -> AsyncIterator[RemoteJournal]:
        """Connect to ``"HOST:PORT"`` or ``(host, port)``; stay connected until the block ends.

        Raises :class:`JournalUnavailableError` if the first handshake does not
        complete within ``connect_timeout`` seconds.
        """
        host, port = _parse_address(address)
        client = cls(
            host,
            port,
            name=name,
            connect_timeout=connect_timeout,
            backoff=backoff,
            request_timeout=request_timeout,
        )
        body_error: Exception | None = None
        up = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._manage)
            with trio.move_on_after(connect_timeout):
                await client.wait_connected()
                up = True
            if up:
                try:
                    yield client
                except Exception as exc:  # re-raised outside the nursery, not in a group
                    body_error = exc
            client._close()
            nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
        if not up:
            raise JournalUnavailableError(
                f"no journal server answered at {host}:{port} within {connect_timeout}s"
            )

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.dead

    def _close(self) -> None:
        """From now on every call raises JournalClosedError, like a closed Journal."""
        self._closed = True
        self._link_up.set()  # wake wait_connected(), which then raises

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosedError("the remote journal client is closed")

    async def wait_connected(self) -> None:
        """Return once a connection is up (at once if it is); raises once closed."""
        while True:
            self._check_open()
            link = self._link
            if link is None:
                await self._link_up.wait()
            elif link.dead:
                await link.gone.wait()  # the manager is tearing it down
            else:
                return

    def statistics_of_client(self) -> RemoteClientStatistics:
        return RemoteClientStatistics(
            self._connects, self._disconnects, self._requests, self._retryable_failures
        )

    # -------------------------------------------------------------- connection

    async def _manage(self) -> None:
        delay = self.backoff[0]
        while True:
            link = await self._dial()
            if link is None:
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            self._connects += 1
            self._link = link
            self._link_up.set()
            why = "connection to the journal server lost"
            try:
                why = await self._read(link)
            finally:
                self._link = None
                self._link_up = trio.Event()
                self._disconnects += 1
                link.fail_all(why)
                await trio.aclose_forcefully(link.stream)
            log.info("%s (%s:%s); reconnecting", why, self.host, self.port)
            await trio.sleep(delay)

    async def _dial(self) -> _Link | None:
        """Connect and shake hands; None (logged) if that fails."""
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            log.debug("cannot reach journal server %s:%s: %s", self.host, self.port, exc)
            return None
        link = _Link(stream, Connection(Role.CLIENT, name=self.name))
        try:
            with trio.fail_after(self.connect_timeout):
                await link.write(Hello(client_name=self.name))
                while link.conn.state is not State.READY:
                    event = await _next_event(link)
                    if isinstance(event, ErrorResponse):
                        raise error_from_response(event)
                    if not isinstance(event, HelloOk):
                        raise trio.BrokenResourceError("connection closed during the handshake")
        except Exception as exc:  # timeout, reset, refusal (fatal ERROR), protocol error
            log.info("handshake with %s:%s failed: %s", self.host, self.port, exc)
            await trio.aclose_forcefully(stream)
            return None
        return link

    async def _read(self, link: _Link) -> str:
        """The one reader: route answers until the connection ends; says why it ended."""
        while True:
            try:
                event = await _next_event(link)
            except RemoteProtocolError as exc:
                log.warning("journal server broke the protocol: %s", exc)
                with trio.move_on_after(1.0), suppress(trio.BrokenResourceError):
                    await link.writer.write(link.conn.send_failure(exc))
                return f"journal server broke the protocol ({exc})"
            except trio.BrokenResourceError as exc:
                return f"connection to the journal server lost ({exc})"
            if isinstance(event, ConnectionClosed):
                return "the journal server closed the connection"
            rid = event.rid
            if rid == 0:  # a fatal ERROR: the server is closing the connection
                message = event.message if isinstance(event, ErrorResponse) else "?"
                return f"the journal server closed the connection ({message})"
            channel = link.subs.get(rid)
            if channel is not None:
                with suppress(trio.BrokenResourceError):  # the tail has gone
                    channel.send_nowait(event)  # bounded by the credit the tail granted
                if isinstance(event, Unsubscribed | ErrorResponse):
                    link.subs.pop(rid).close()
                continue
            pending = link.pending.pop(rid, None)
            if pending is not None:
                pending.resolve(event)
            # else: its caller was cancelled; the connection already checked the id

    # ---------------------------------------------------------------- requests

    def _current(self) -> _Link:
        self._check_open()
        link = self._link
        if link is None or link.dead:
            self._retryable_failures += 1
            raise JournalUnavailableError(
                f"not connected to the journal server at {self.host}:{self.port}"
                " (the request was not sent)"
            )
        return link

    async def _call(self, make: Callable[[int], Request], expect: type[_R]) -> _R:
        """Send one request on the current connection and wait for its answer."""
        return await self._call_on(self._current(), make, expect, timed=True)

    async def _call_on(
        self,
        link: _Link,
        make: Callable[[int], Request],
        expect: type[_R],
        *,
        timed: bool,
    ) -> _R:
        """``timed``: give up after ``request_timeout`` (not for WAIT, a long poll)."""
        timeout = self.request_timeout if timed else None
        req = make(link.conn.next_request_id())
        pending = _Pending(type(req) in STATE_CHANGING)
        if link.dead:
            self._retryable_failures += 1
            raise JournalUnavailableError("connection lost (the request was not sent)")
        data = _encode(link.conn, req)
        link.pending[req.request_id] = pending
        self._requests += 1
        try:
            try:
                await link.writer.write(data)
            except trio.BrokenResourceError:
                pending.resolve(
                    JournalConnectionLostError(
                        "connection lost while sending", maybe_applied=pending.maybe_applied
                    )
                )
            if timeout is None:  # no cancel scope on the common path
                await pending.done.wait()
            else:
                with trio.move_on_after(timeout):
                    await pending.done.wait()
                pending.resolve(
                    JournalConnectionLostError(
                        f"no answer within {timeout}s", maybe_applied=pending.maybe_applied
                    )
                )  # does nothing if the answer came
        finally:
            link.pending.pop(req.request_id, None)
        answer = pending.answer
        if self._closed and isinstance(answer, JournalConnectionLostError):
            answer = JournalClosedError(
                "the remote journal client was closed before the answer came"
                + (" (the request may have been applied)" if pending.maybe_applied else "")
            )
        if isinstance(answer, JournalUnavailableError):
            self._retryable_failures += 1
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, ErrorResponse):
            exc = error_from_response(answer)
            if isinstance(exc, JournalUnavailableError):
                self._retryable_failures += 1
            raise exc
        assert isinstance(answer, expect), answer
        return answer

    async def create_stream(
        self, name: str, config: StreamConfig | None = None, *, exist_ok: bool = False
    ) -> None:
        _check_name(name)  # the journal's own rule, so bad names fail the same way
        cfg = config or StreamConfig()
        await self._call(lambda i: CreateStream.of(i, name, cfg, exist_ok=exist_ok), Done)

    async def delete_stream(self, name: str) -> None:
        await self._call(lambda i: DeleteStream(i, name), Done)

    async def list_streams(self) -> list[str]:
        return list((await self._call(ListStreams, StreamList)).streams)

    async def describe_stream(self, name: str) -> StreamInfo:
        return (await self._call(lambda i: GetStreamInfo(i, name), StreamInfoResult)).to_info()

    async def list_segments(self, name: str) -> list[SegmentInfo]:
        return list((await self._call(lambda i: ListSegments(i, name), SegmentList)).segments)

    @overload
    async def get_statistics(self) -> JournalStatistics: ...
    @overload
    async def get_statistics(self, name: str) -> StreamStatistics: ...

    async def get_statistics(self, name: str | None = None) -> JournalStatistics | StreamStatistics:
        answer = await self._call(lambda i: GetStatistics(i, name), StatisticsResult)
        return statistics_from_dict(json.loads(answer.statistics))

    async def append(self, name: str, records: Sequence[Record]) -> AppendResult:
        """As :meth:`Journal.append`; the records travel as one batch encoded here.

        Records without a timestamp get the server's clock, as in-process.
        """
        if not records:
            raise InvalidBatchError("an append needs at least one record")
        batch = encode_append(records)
        answer = await self._call(lambda i: Append(i, name, batch), Appended)
        return AppendResult(answer.base_offset, answer.last_offset)

    async def append_batch(self, name: str, batch: bytes | bytearray | memoryview) -> AppendResult:
        raw = bytes(batch)
        answer = await self._call(lambda i: AppendBatch(i, name, raw), Appended)
        return AppendResult(answer.base_offset, answer.last_offset)

    async def roll(self, name: str) -> None:
        await self._call(lambda i: Roll(i, name), Done)

    async def read(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[Record]:
        records: list[Record] = []
        for raw in await self.read_batches(name, offset, max_bytes):
            records += [r for r in decode_batch(raw)[1] if r.offset is None or r.offset >= offset]
        return records

    async def read_batches(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[bytes]:
        size = min(max(max_bytes, 0), U32_MAX)
        at = _i64(offset)
        answer = await self._call(lambda i: ReadBatches(i, name, at, size), Batches)
        return list(answer.batches)

    async def offset_for_time(self, name: str, timestamp_ms: int) -> int | None:
        ts = _i64(timestamp_ms)
        answer = await self._call(lambda i: OffsetForTime(i, name, ts), OffsetResult)
        return answer.offset

    async def wait(self, name: str, offset: int) -> None:
        """Wait until ``offset`` is readable; survives reconnects (WAIT is idempotent)."""
        at = _i64(offset)
        while True:
            await self.wait_connected()
            link = self._link
            if link is None:
                continue
            try:
                await self._call_on(link, lambda i: Wait(i, name, at), Done, timed=False)
                return
            except JournalUnavailableError:
                self._check_open()
                await link.gone.wait()  # down, or shutting down: try the next connection

    async def tail(self, name: str, from_offset: int) -> AsyncGenerator[Record, None]:
        """Every record from ``from_offset`` on, then each new one; resumes across
        reconnects from the record after the last one yielded."""
        next_offset = from_offset
        while True:
            await self.wait_connected()
            link = self._link
            if link is None:
                continue
            try:
                async with aclosing(self._subscription(link, name, next_offset)) as records:
                    async for record in records:
                        if record.offset is None or record.offset < next_offset:
                            continue  # the first batch may start before the offset asked for
                        next_offset = record.offset + 1
                        yield record
            except JournalUnavailableError:
                pass  # the server is shutting down: resume on the next connection
            self._check_open()
            await link.gone.wait()

    async def _subscription(
        self, link: _Link, name: str, from_offset: int
    ) -> AsyncGenerator[Record, None]:
        """One SUBSCRIBE on one connection; ends quietly when the connection drops."""
        send, receive = trio.open_memory_channel[Message](float("inf"))
        if link.dead:
            return
        rid = link.conn.next_request_id()
        data = _encode(link.conn, Subscribe(rid, name, _i64(from_offset), TAIL_CREDIT))
        link.subs[rid] = send
        try:
            await link.writer.write(data)
        except trio.BrokenResourceError:
            return
        self._requests += 1
        ended = False
        try:
            consumed = 0
            async for event in receive:
                if isinstance(event, ErrorResponse):
                    ended = True
                    raise error_from_response(event)
                if isinstance(event, Unsubscribed):
                    ended = True
                    return
                if isinstance(event, Data):
                    for raw in event.batches:
                        for record in decode_batch(raw)[1]:
                            yield record
                    consumed += event.size
                    if consumed >= TAIL_CREDIT // 2:
                        await _control(link, GrantCredit(rid, consumed))
                        consumed = 0
                else:
                    assert isinstance(event, Subscribed), event
        finally:
            link.subs.pop(rid, None)
            if not ended and not link.dead:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await _control(link, Unsubscribe(rid))

    async def apply_retention(self, name: str | None = None) -> int:
        return (await self._call(lambda i: ApplyRetention(i, name), Count)).count

    async def migrate(self, name: str | None = None) -> int:
        return (await self._call(lambda i: Migrate(i, name), Count)).count

    async def verify(self, name: str) -> list[StorageError]:
        answer = await self._call(lambda i: Verify(i, name), Problems)
        return [e for e in answer.to_exceptions() if isinstance(e, StorageError)]


def _i64(value: int) -> int:
    """Clamp an offset or timestamp to the wire's i64: past either end it answers the same."""
    if isinstance(value, int) and not isinstance(value, bool):
        return max(-(1 << 63), min(value, (1 << 63) - 1))
    return value


def _encode(conn: Connection, req: Request) -> bytes:
    """The frame for ``req``; argument errors are raised here, before anything is sent."""
    try:
        return conn.send(req)
    except LocalProtocolError as exc:
        if exc.code == ErrorCode.FRAME_TOO_LARGE:
            raise BatchTooLargeError(
                f"request too large for the journal server: {exc}", position=0
            ) from None
        raise InvalidArgumentError(f"cannot send {type(req).__name__}: {exc}") from None


async def _control(link: _Link, message: Message) -> None:
    """CREDIT or UNSUBSCRIBE: best effort (the subscription may have ended meanwhile)."""
    with suppress(LocalProtocolError, trio.BrokenResourceError):
        await link.write(message)


async def _next_event(link: _Link) -> Message | ConnectionClosed:
    """The next frame from the server, reading as needed."""
    while True:
        event = link.conn.next_event()
        if event is not NEED_DATA:
            assert isinstance(event, Message | ConnectionClosed)
            return event
        size = min(max(RECEIVE_SIZE, link.conn.missing), MAX_RECEIVE_SIZE)
        try:
            data = await link.stream.receive_some(size)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise trio.BrokenResourceError("connection lost") from exc
        link.conn.receive_data(data)


def _parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"journal address must be HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)

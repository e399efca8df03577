"""JournalServer over real TCP on 127.0.0.1: hostile input, pipelining, limits, shutdown.

Each bad client gets the documented fatal ERROR (decoded with the codec) and
its connection closes, while a well-behaved RemoteJournal connected before it
keeps working and the stored data is unharmed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from rpc_support import HOST, TIMEOUT, Running, eventually, start_server, values

from journal import (
    Journal,
    JournalConnectionLostError,
    JournalUnavailableError,
    Record,
    RemoteJournalError,
)
from journal.config import StreamConfig
from journal.records import AppendResult
from journal.remote import RemoteJournal
from journal.rpc.connection import NEED_DATA, Connection, Role
from journal.rpc.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER,
    Data,
    ErrorCode,
    ErrorResponse,
    FrameType,
    GrantCredit,
    Hello,
    HelloOk,
    ListStreams,
    Message,
    Subscribe,
    Subscribed,
    Wait,
    decode_frame,
    encode_frame,
)
from journal.segments.batch import encode_batch

HELLO = encode_frame(Hello(client_name="raw"))


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Running:
    return await start_server(nursery, tmp_path / "journal")


@pytest.fixture
async def client(served: Running) -> AsyncIterator[RemoteJournal]:
    async with RemoteJournal.connect((HOST, served.port)) as remote:
        await remote.create_stream("s")
        await remote.append("s", [Record(value=b"before")])
        yield remote


async def exchange(port: int, data: bytes) -> list[Message]:
    """Send ``data`` on a fresh connection; the frames the server sent until it closed."""
    buf = bytearray()
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream(HOST, port) as stream:
            if data:
                await stream.send_all(data)
            while chunk := await stream.receive_some():
                buf += chunk
    frames: list[Message] = []
    pos = 0
    while (decoded := decode_frame(buf[pos:])) is not None:
        frames.append(decoded[0])
        pos += decoded[1]
    assert pos == len(buf)
    return frames


def fatal_code(frames: list[Message]) -> int:
    last = frames[-1]
    assert isinstance(last, ErrorResponse)
    assert last.request_id == 0
    return last.code


BAD_INPUT = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.FRAME_TOO_LARGE, id="http"),
    pytest.param(FRAME_HEADER.pack(5, 0xEE, 0), ErrorCode.MALFORMED_FRAME, id="frame-type"),
    pytest.param(
        FRAME_HEADER.pack(8, FrameType.HELLO, 0) + b"STR", ErrorCode.MALFORMED_FRAME, id="body"
    ),
    pytest.param(
        HELLO + FRAME_HEADER.pack(DEFAULT_MAX_FRAME_SIZE + 1, FrameType.APPEND_BATCH, 1),
        ErrorCode.FRAME_TOO_LARGE,
        id="oversize",
    ),
    pytest.param(encode_frame(Hello(magic=b"HTTP")), ErrorCode.BAD_MAGIC, id="magic"),
    pytest.param(encode_frame(Hello(versions=(7,))), ErrorCode.UNSUPPORTED_VERSION, id="version"),
    pytest.param(encode_frame(ListStreams(1)), ErrorCode.UNEXPECTED_FRAME, id="before-hello"),
    pytest.param(HELLO + HELLO, ErrorCode.UNEXPECTED_FRAME, id="second-hello"),
    pytest.param(
        HELLO + encode_frame(Wait(5, "s", 1000)) + encode_frame(Wait(5, "s", 1000)),
        ErrorCode.DUPLICATE_REQUEST_ID,
        id="duplicate-id",
    ),
    pytest.param(
        HELLO + encode_frame(GrantCredit(9, 100)), ErrorCode.UNKNOWN_REQUEST_ID, id="credit"
    ),
]


@pytest.mark.parametrize(("data", "code"), BAD_INPUT)
async def test_bad_input_is_fatal_to_that_connection_only(
    served: Running, client: RemoteJournal, data: bytes, code: int
) -> None:
    frames = await exchange(served.port, data)
    assert fatal_code(frames) == code
    assert all(isinstance(f, HelloOk) for f in frames[:-1])
    assert served.server.statistics().protocol_errors == 1
    assert client.connected
    res = await client.append("s", [Record(value=b"after")])
    assert res == AppendResult(1, 1)
    assert values(await client.read("s", 0)) == [b"before", b"after"]


async def test_handshake_timeout_closes_the_connection(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    served = await start_server(nursery, tmp_path, handshake_timeout=0.2)
    async with RemoteJournal.connect((HOST, served.port)) as remote:
        await remote.create_stream("s")
        assert fatal_code(await exchange(served.port, b"")) == ErrorCode.UNAVAILABLE
        assert fatal_code(await exchange(served.port, HELLO[:5])) == ErrorCode.UNAVAILABLE
        await remote.append("s", [Record(value=b"x")])
        assert values(await remote.read("s", 0)) == [b"x"]


async def test_unexpected_exception_is_an_error_answer(
    served: Running, client: RemoteJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(served.journal, "list_streams", broken)
    with pytest.raises(RemoteJournalError, match="boom"):
        await client.list_streams()
    assert values(await client.read("s", 0)) == [b"before"]


async def test_requests_on_one_connection_are_answered_out_of_order(
    served: Running, client: RemoteJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrived, release = trio.Event(), trio.Event()
    append_batch = served.journal.append_batch

    async def slow(name: str, batch: bytes | bytearray | memoryview) -> AppendResult:
        if b"slow" in bytes(batch):  # not the APPENDs, which may come here too
            arrived.set()
            await release.wait()
        return await append_batch(name, batch)

    monkeypatch.setattr(served.journal, "append_batch", slow)
    waited = trio.Event()
    results: list[AppendResult] = []
    slow_result: list[AppendResult] = []

    async def wait_for(offset: int) -> None:
        await client.wait("s", offset)
        waited.set()

    async def append(value: bytes) -> None:
        results.append(await client.append("s", [Record(value=value)]))

    async def append_slowly() -> None:
        batch = encode_batch([Record(value=b"slow")], now_ms=0)
        slow_result.append(await client.append_batch("s", batch))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for, 50)
            nursery.start_soon(append_slowly)
            await arrived.wait()
            # later requests overtake the WAIT and the stuck append
            assert values(await client.read("s", 0)) == [b"before"]
            for i in range(50):
                nursery.start_soon(append, b"%d" % i)
            await eventually(lambda: _true_when(len(results) == 50))
            await waited.wait()
            assert not slow_result
            release.set()
    assert sorted(r.base_offset for r in results) == list(range(1, 51))
    assert slow_result == [AppendResult(51, 51)]
    assert served.server.statistics().requests >= 54


async def _true_when(condition: bool) -> bool:
    await trio.lowlevel.checkpoint()
    return condition


async def test_subscription_respects_credit(served: Running, client: RemoteJournal) -> None:
    for i in range(3):
        await client.append("s", [Record(value=b"%d" % i)])
    conn = Connection(Role.CLIENT)
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream(HOST, served.port) as stream:

            async def receive() -> Message:
                while (event := conn.next_event()) is NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                assert isinstance(event, Message)
                return event

            await stream.send_all(conn.send(Hello()))
            assert isinstance(await receive(), HelloOk)
            # one byte of credit: exactly one batch may come, then nothing until CREDIT
            await stream.send_all(conn.send(Subscribe(7, "s", 0, credit=1)))
            assert isinstance(await receive(), Subscribed)
            first = await receive()
            assert isinstance(first, Data)
            assert len(first.batches) == 1
            assert conn.credit(7) == 0
            await stream.send_all(conn.send(GrantCredit(7, len(first.batches[0]) * 10)))
            second = await receive()
            assert isinstance(second, Data)
            seen = len(first.batches) + len(second.batches)
            while seen < 4:  # the client's Connection raises if the server overspends
                more = await receive()
                assert isinstance(more, Data)
                seen += len(more.batches)
            assert seen == 4  # offsets 0 ("before") to 3


async def test_max_connections(nursery: trio.Nursery, tmp_path: Path) -> None:
    served = await start_server(nursery, tmp_path, max_connections=2)
    async with RemoteJournal.connect((HOST, served.port)) as remote:
        await remote.create_stream("s")
        with trio.fail_after(TIMEOUT):
            async with await trio.open_tcp_stream(HOST, served.port) as second:
                await second.send_all(HELLO)
                assert (await second.receive_some())[4] == FrameType.HELLO_OK
                assert fatal_code(await exchange(served.port, HELLO)) == ErrorCode.UNAVAILABLE
            await eventually(lambda: _true_when(served.server.statistics().connections_open == 1))
            assert fatal_code(await exchange(served.port, HELLO + HELLO)) != ErrorCode.UNAVAILABLE
        await remote.append("s", [Record(value=b"x")])
        stats = served.server.statistics()
        assert stats.connections_total == 4
        assert stats.bytes_in > 0
        assert stats.bytes_out > 0


async def test_shutdown_answers_unavailable_and_drains_appends(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await start_server(nursery, tmp_path)
    arrived, release = trio.Event(), trio.Event()
    append, append_batch = served.journal.append, served.journal.append_batch

    async def slow_for_some(name: str, records: list[Record]) -> AppendResult:
        if records[0].value == b"slow":
            arrived.set()
            await release.wait()
        return await append(name, records)

    async def slow_batch_for_some(name: str, batch: bytes | bytearray | memoryview) -> AppendResult:
        if b"slow" in bytes(batch):
            arrived.set()
            await release.wait()
        return await append_batch(name, batch)

    # APPEND reaches the journal through append_batch when it can (see rpc/server.py)
    monkeypatch.setattr(served.journal, "append", slow_for_some)
    monkeypatch.setattr(served.journal, "append_batch", slow_batch_for_some)
    acked: dict[bytes, int] = {}
    failures: list[JournalUnavailableError] = []

    async def appender(worker: int) -> None:
        for n in range(1_000_000):
            value = b"%d-%d" % (worker, n)
            try:
                res = await remote.append("s", [Record(value=value)])
            except JournalUnavailableError as exc:
                failures.append(exc)
                return
            acked[value] = res.base_offset

    async with RemoteJournal.connect((HOST, served.port)) as remote:
        await remote.create_stream("s")
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:
                inner.start_soon(appender, 0)
                inner.start_soon(appender, 1)
                inner.start_soon(partial(remote.append, "s", [Record(value=b"slow")]))
                await arrived.wait()
                inner.start_soon(served.server.shutdown, TIMEOUT)
                await eventually(lambda: _true_when(not served.server.accepting))
                with pytest.raises(JournalUnavailableError) as refused:
                    await remote.list_streams()
                assert type(refused.value) is JournalUnavailableError  # refused, not lost
                release.set()
        await served.stopped.wait()
        assert not remote.connected
    assert len(failures) == 2
    assert all(e.retryable for e in failures)
    assert not any(
        isinstance(e, JournalConnectionLostError) and e.maybe_applied is False for e in failures
    )
    async with Journal.open(tmp_path) as journal:
        stored = {r.value: r.offset for r in await journal.read("s", 0, 1 << 30)}
    assert b"slow" in stored
    for value, offset in acked.items():
        assert stored[value] == offset


@pytest.mark.parametrize(
    ("records", "via"),
    [
        pytest.param([Record(b"a"), Record(b"b")], ["append_batch"], id="no-timestamps"),
        pytest.param(
            [Record(b"a", timestamp=5), Record(b"b", timestamp=-7)], ["append_batch"], id="own"
        ),
        pytest.param([Record(b"a"), Record(b"b", timestamp=7)], ["append"], id="mixed"),
        pytest.param([Record(b"x" * 100)] * 30, ["append_batch", "append"], id="too-large"),
    ],
)
async def test_append_is_decoded_only_when_its_batch_is_not_what_append_stores(
    served: Running,
    client: RemoteJournal,
    monkeypatch: pytest.MonkeyPatch,
    records: list[Record],
    via: list[str],
) -> None:
    await client.create_stream("small", StreamConfig(max_batch_bytes=1024))
    calls: list[str] = []
    for name in ("append", "append_batch"):
        real = getattr(served.journal, name)

        async def spy(stream: str, arg: object, real: Any = real, name: str = name) -> Any:
            calls.append(name)
            return await real(stream, arg)

        monkeypatch.setattr(served.journal, name, spy)
    result = await client.append("small", records)
    assert calls == via
    assert result == AppendResult(0, len(records) - 1)
    monkeypatch.undo()
    stored = await client.read("small", 0, 1 << 20)
    now = served.journal.now_ms()
    assert [r.value for r in stored] == [r.value for r in records]
    for sent, got in zip(records, stored, strict=True):
        if sent.timestamp is not None:
            assert got.timestamp == sent.timestamp
        else:
            assert got.timestamp is not None
            assert abs(got.timestamp - now) < 60_000

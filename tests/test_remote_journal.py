"""RemoteJournal against a real JournalServer on 127.0.0.1: reconnects and their promises.

The server runs in the test's nursery inside a cancel scope: cancelling it is
"killing" the server, and serving the same directory on the same port again
is a restart. Nothing sleeps to wait: every wait is on an event or a state,
bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
from rpc_support import HOST, TIMEOUT, Running, eventually, remote_tail, start_server, values

from journal import (
    BatchTooLargeError,
    InvalidBatchError,
    JournalConnectionLostError,
    JournalStatistics,
    JournalUnavailableError,
    OffsetOutOfRangeError,
    Record,
    StreamConfig,
    StreamStatistics,
    UnknownStreamError,
)
from journal.records import AppendResult
from journal.remote import RemoteJournal
from journal.segments.batch import encode_batch


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Running:
    return await start_server(nursery, tmp_path / "journal")


@pytest.fixture
async def client(served: Running) -> AsyncIterator[RemoteJournal]:
    async with RemoteJournal.connect((HOST, served.port), backoff=(0.01, 0.05)) as remote:
        yield remote


# ---------------------------------------------------------------- the basics


async def test_round_trip(client: RemoteJournal) -> None:
    await client.create_stream("s", StreamConfig())
    res = await client.append("s", [Record(value=b"a", key=b"k", headers=[("h", b"v")])])
    assert res == AppendResult(0, 0)
    batch = encode_batch([Record(value=b"b"), Record(value=b"c")], now_ms=1)
    assert await client.append_batch("s", batch) == AppendResult(1, 2)
    records = await client.read("s", 1)
    assert values(records) == [b"b", b"c"]
    assert [r.offset for r in records] == [1, 2]
    first = (await client.read("s", 0))[0]
    assert (first.key, first.headers) == (b"k", [("h", b"v")])
    assert await client.list_streams() == ["s"]
    info = await client.describe_stream("s")
    assert (info.first_offset, info.next_offset) == (0, 3)
    assert len(await client.list_segments("s")) == 1
    await client.roll("s")
    assert len(await client.list_segments("s")) == 2
    stats = await client.get_statistics()
    assert isinstance(stats, JournalStatistics)
    assert isinstance(stats.per_stream["s"], StreamStatistics)
    assert stats.records == 3
    one = await client.get_statistics("s")
    assert one.next_offset == 3
    assert one.fsync_latency.count == stats.fsync_latency.count
    assert await client.offset_for_time("s", 0) == 0
    assert await client.verify("s") == []
    assert await client.apply_retention("s") == 0
    assert await client.migrate() == 0
    await client.delete_stream("s")
    assert await client.list_streams() == []


async def test_errors_come_back_typed(client: RemoteJournal) -> None:
    with pytest.raises(UnknownStreamError):
        await client.append("nope", [Record(value=b"x")])
    await client.create_stream("s")
    await client.append("s", [Record(value=b"x")])
    with pytest.raises(OffsetOutOfRangeError) as caught:
        await client.read("s", -5)
    assert (caught.value.first_offset, caught.value.next_offset) == (0, 1)
    with pytest.raises(InvalidBatchError):
        await client.append_batch("s", b"not a batch")
    with pytest.raises(InvalidBatchError):
        await client.append("s", [])


async def test_client_refuses_frames_over_the_server_limit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    served = await start_server(nursery, tmp_path, max_frame_size=64 << 10)
    async with RemoteJournal.connect(f"{HOST}:{served.port}") as remote:
        await remote.create_stream("s")
        with pytest.raises(BatchTooLargeError):
            await remote.append("s", [Record(value=b"x" * (100 << 10))])
        assert remote.statistics_of_client().requests == 1  # the append was never sent
        assert await remote.read("s", 0) == []


async def test_connect_gives_up_after_its_timeout() -> None:
    with trio.socket.socket() as sock:  # a port that nobody listens on
        await sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        with pytest.raises(JournalUnavailableError):
            async with RemoteJournal.connect((HOST, port), connect_timeout=0.2):
                pytest.fail("connected to nothing")


# ----------------------------------------------------------------- reconnects


async def test_drop_fails_in_flight_then_down_then_reconnects(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await start_server(nursery, tmp_path)
    async with RemoteJournal.connect((HOST, served.port), backoff=(0.01, 0.05)) as remote:
        await remote.create_stream("s")
        await remote.append("s", [Record(value=b"kept")])
        arrived = trio.Event()

        async def stuck(name: str, records: list[Record]) -> AppendResult:
            arrived.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def stuck_batch(name: str, batch: bytes | bytearray | memoryview) -> AppendResult:
            return await stuck(name, [])

        # APPEND reaches the journal through append_batch when it can (see rpc/server.py)
        monkeypatch.setattr(served.journal, "append", stuck)
        monkeypatch.setattr(served.journal, "append_batch", stuck_batch)
        lost: list[JournalConnectionLostError] = []

        async def append_in_flight() -> None:
            with pytest.raises(JournalConnectionLostError) as caught:
                await remote.append("s", [Record(value=b"in flight")])
            lost.append(caught.value)

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:
                inner.start_soon(append_in_flight)
                await arrived.wait()
                await served.kill()
        assert lost[0].maybe_applied
        assert lost[0].retryable
        assert "may or may not have been applied" in str(lost[0])

        assert not remote.connected
        with trio.fail_after(1):  # fast: nothing is sent while disconnected
            with pytest.raises(JournalUnavailableError) as down:
                await remote.read("s", 0)
            assert not isinstance(down.value, JournalConnectionLostError)
            with pytest.raises(JournalUnavailableError):
                await remote.append("s", [Record(value=b"never sent")])

        await start_server(nursery, tmp_path, served.port)
        with trio.fail_after(TIMEOUT):
            await remote.wait_connected()
        assert values(await remote.read("s", 0)) == [b"kept"]  # the stuck append never landed
        stats = remote.statistics_of_client()
        assert (stats.connects, stats.disconnects) == (2, 1)
        assert stats.retryable_failures == 3
        assert stats.requests == 4  # create, append, the stuck append, the last read


async def test_lost_read_is_not_maybe_applied(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await start_server(nursery, tmp_path)
    async with RemoteJournal.connect((HOST, served.port)) as remote:
        await remote.create_stream("s")
        arrived = trio.Event()

        async def stuck(name: str, offset: int, max_bytes: int) -> list[bytes]:
            arrived.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        monkeypatch.setattr(served.journal, "read_batches", stuck)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:
                inner.start_soon(_kill_when, served, arrived)
                with pytest.raises(JournalConnectionLostError) as caught:
                    await remote.read("s", 0)
        assert not caught.value.maybe_applied


async def _kill_when(served: Running, event: trio.Event) -> None:
    await event.wait()
    await served.kill()


async def test_wait_and_tail_resume_across_a_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    served = await start_server(nursery, tmp_path)
    async with RemoteJournal.connect((HOST, served.port), backoff=(0.01, 0.05)) as remote:
        await remote.create_stream("s")
        # one batch of three: the tail resumes in the middle of it
        await remote.append("s", [Record(value=b"%d" % i) for i in range(3)])
        send, receive = trio.open_memory_channel[Record](0)
        waited = trio.Event()

        async def consume() -> None:
            async with aclosing(remote_tail(remote, "s", 1)) as records:
                async for record in records:
                    await send.send(record)

        async def wait_for_offset_5() -> None:
            await remote.wait("s", 5)
            waited.set()

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:
                inner.start_soon(consume)
                inner.start_soon(wait_for_offset_5)
                got = [await receive.receive()]
                await served.kill()
                await start_server(nursery, tmp_path, served.port)
                await remote.wait_connected()
                got.append(await receive.receive())
                await remote.append("s", [Record(value=b"3"), Record(value=b"4")])
                assert not waited.is_set()
                await remote.append("s", [Record(value=b"5")])
                got += [await receive.receive() for _ in range(3)]
                await waited.wait()
                inner.cancel_scope.cancel()
        assert [r.offset for r in got] == [1, 2, 3, 4, 5]
        assert values(got) == [b"1", b"2", b"3", b"4", b"5"]


async def test_acknowledged_appends_survive_a_restart_exactly_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    served = await start_server(nursery, tmp_path)
    acked: dict[bytes, int] = {}
    outcomes = {"lost": 0, "down": 0}
    enough = trio.Event()
    target = [20]

    async with RemoteJournal.connect((HOST, served.port), backoff=(0.01, 0.05)) as remote:
        await remote.create_stream("s")

        async def appender(worker: int) -> None:
            n = 0
            while True:
                value = b"%d-%d" % (worker, n)
                n += 1
                try:
                    res = await remote.append("s", [Record(value=value)])
                except JournalConnectionLostError:
                    outcomes["lost"] += 1  # unknown outcome: never retried
                    continue
                except JournalUnavailableError:
                    outcomes["down"] += 1
                    await remote.wait_connected()
                    continue
                acked[value] = res.base_offset
                if len(acked) >= target[0]:
                    enough.set()

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:
                for worker in range(4):
                    inner.start_soon(appender, worker)
                await enough.wait()
                await served.kill()
                enough = trio.Event()
                target[0] = len(acked) + 20
                served = await start_server(nursery, tmp_path, served.port)
                await enough.wait()
                inner.cancel_scope.cancel()

        stored = await read_everything(remote, "s")
    assert outcomes["down"] + outcomes["lost"] >= 1
    seen: dict[bytes, list[int]] = {}
    for record in stored:
        assert record.value is not None
        assert record.offset is not None
        seen.setdefault(record.value, []).append(record.offset)
    for value, offset in acked.items():
        assert seen[value] == [offset]
    assert all(len(offsets) == 1 for offsets in seen.values())


async def read_everything(remote: RemoteJournal, name: str) -> list[Record]:
    out: list[Record] = []
    while chunk := await remote.read(name, len(out)):
        out += chunk
    return out


async def test_closing_a_tail_unsubscribes(client: RemoteJournal, served: Running) -> None:
    await client.create_stream("s")
    await client.append("s", [Record(value=b"x")])
    async with aclosing(remote_tail(client, "s", 0)) as records:
        async for record in records:
            assert record.value == b"x"
            break

    # the server ends the subscription task once UNSUBSCRIBE arrives
    async def no_subscriptions() -> bool:
        return all(not peer.subs for peer in served.server._peers)

    await eventually(no_subscriptions)
    assert values(await client.read("s", 0)) == [b"x"]  # the connection is still fine


async def test_records_without_timestamp_get_the_server_clock(client: RemoteJournal) -> None:
    await client.create_stream("s")
    sent = [Record(b"a", timestamp=-1), Record(b"b"), Record(b"c", timestamp=7)]
    await client.append("s", sent)
    await client.append("s", [Record(b"d")])
    records = await client.read("s", 0)
    stamped = [r.timestamp for r in records]
    assert stamped[0] == -1  # explicit timestamps are kept, even the placeholder's neighbours
    assert stamped[2] == 7
    assert stamped[1] is not None
    assert stamped[1] > 1_600_000_000_000  # the journal's wall clock, not a placeholder
    assert stamped[3] is not None
    assert stamped[3] >= stamped[1]


async def test_request_timeout(served: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never() -> list[str]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with RemoteJournal.connect((HOST, served.port), request_timeout=0.1) as remote:
        await remote.create_stream("s")
        monkeypatch.setattr(served.journal, "list_streams", never)
        with pytest.raises(JournalConnectionLostError) as caught:
            await remote.list_streams()
        assert not caught.value.maybe_applied
        assert remote.connected  # a slow answer does not drop the connection
        assert await remote.read("s", 0) == []

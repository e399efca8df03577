"""Tests of what only the in-process :class:`journal.Journal` offers.

The behaviour both journals share (every async method, bad arguments, reads,
retention, tails, concurrency) is the conformance suite's,
``test_journal_conformance.py``, run against the in-process and the remote
journal. What stays here:

* a round trip through the synchronous conveniences (``streams()``,
  ``stream_info()``, ``segments()``, ``statistics()``), and ``delete_stream``
  removing the stream's files;
* ``StreamConfig`` and ``Journal.open`` argument checks (they fail before any
  journal call);
* the maintenance task rolling aged segments, and ``statistics()`` details.

"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from support import tail

from journal import (
    AppendResult,
    InvalidConfigError,
    Journal,
    Record,
    StrataError,
    StreamConfig,
    StreamDeletedError,
    StreamInfo,
    UnknownStreamError,
)
from journal.segments.batch import encode_batch


class FakeClock:
    """Wall time in ms for ``Journal.open(clock=...)``; the test moves it."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _stream_dir(root: Path, name: str) -> Path:
    [directory] = [d for d in (root / "streams").iterdir() if d.name.split("-", 1)[1] == name]
    return directory


def _logs(root: Path, name: str) -> list[Path]:
    return sorted(_stream_dir(root, name).glob("*.log"))


def _fields(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in records]


_GOOD = encode_batch([Record(b"a"), Record(b"b"), Record(b"c")], now_ms=1)


# -- round trip -----------------------------------------------------------------------


async def test_synchronous_conveniences_agree_with_the_service_and_the_files(
    tmp_path: Path,
) -> None:
    """The async round trip of every method is the conformance suite's; here the
    synchronous twins, the files behind them, and a reopen."""
    config = StreamConfig(segment_bytes=1 << 16, fsync="always")
    async with Journal.open(tmp_path, fsync="none", clock=FakeClock()) as j:
        assert j.streams() == []
        await j.create_stream("orders", config)
        await j.create_stream("audit")
        assert j.streams() == await j.list_streams() == ["audit", "orders"]
        assert j.stream_info("orders") == StreamInfo("orders", 0, 0, 0, 1, config, ())
        await j.append("orders", [Record(b"v0", b"k0", [("h", b"x")]), Record(b"v1")])
        await j.append_batch("orders", encode_batch([Record(b"v2", timestamp=5)], now_ms=0))
        info = j.stream_info("orders")
        assert info == await j.describe_stream("orders")
        batches = await j.read_batches("orders", 0)
        assert info.size_bytes == sum(len(b) for b in batches)
        assert info.size_bytes == sum(p.stat().st_size for p in _logs(tmp_path, "orders"))
        await j.roll("orders")
        assert j.segments("orders") == await j.list_segments("orders")
        assert len(_logs(tmp_path, "orders")) == len(j.segments("orders")) == 2
        stats = j.statistics("orders")
        assert stats == await j.get_statistics("orders")
        assert (stats.appends, stats.records, stats.segments) == (2, 3, 2)
        assert j.statistics().streams == 2
        expected = _fields(await j.read("orders", 0))

    async with Journal.open(tmp_path, clock=FakeClock()) as j:
        assert j.streams() == ["audit", "orders"]
        info = j.stream_info("orders")
        assert info.config == config
        assert (info.first_offset, info.next_offset, info.segment_count) == (0, 3, 2)
        assert _fields(await j.read("orders", 0)) == expected
        assert await j.append("orders", [Record(b"v3")]) == AppendResult(3, 3)


async def test_delete_stream_removes_files_and_wakes_waiters(tmp_path: Path) -> None:
    outcomes: dict[str, type[StrataError]] = {}
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("gone")
        await j.create_stream("kept")
        await j.append("gone", [Record(b"x")] * 3)
        await j.roll("gone")
        await j.append("gone", [Record(b"y")])
        await j.append("kept", [Record(b"z")])
        old_dir = _stream_dir(tmp_path, "gone")
        assert len(list(old_dir.glob("*.log"))) == 2

        async def tailer() -> None:
            try:
                async for _ in tail(j, "gone", 0):
                    pass
            except StrataError as exc:
                outcomes["tail"] = type(exc)

        async def waiter() -> None:
            try:
                await j.wait("gone", 4)
            except StrataError as exc:
                outcomes["wait"] = type(exc)

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tailer)
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert outcomes == {}
                await j.delete_stream("gone")
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()  # a task still waiting fails the check below
        assert outcomes == {"tail": StreamDeletedError, "wait": StreamDeletedError}

        assert not old_dir.exists()
        assert j.streams() == ["kept"]
        assert set(j.statistics().per_stream) == {"kept"}
        with pytest.raises(UnknownStreamError):
            j.stream_info("gone")
        with pytest.raises(UnknownStreamError):
            await j.delete_stream("gone")

        # The same name again is a new, empty stream in a new directory.
        await j.create_stream("gone")
        assert _stream_dir(tmp_path, "gone") != old_dir
        assert j.stream_info("gone").next_offset == 0
        assert await j.read("gone", 0) == []

    async with Journal.open(tmp_path) as j:
        assert j.streams() == ["gone", "kept"]
        assert j.stream_info("gone").next_offset == 0
        assert [r.value for r in await j.read("kept", 0)] == [b"z"]


# -- bad arguments ----------------------------------------------------------------------


_BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"segment_bytes": 0}, "segment_bytes"),
    ({"segment_bytes": -1}, "segment_bytes"),
    ({"segment_bytes": 1 << 31}, "segment_bytes"),
    ({"segment_bytes": 1.5}, "segment_bytes"),
    ({"segment_bytes": True}, "segment_bytes"),
    ({"segment_bytes": "4096"}, "segment_bytes"),
    ({"segment_ms": 0}, "segment_ms"),
    ({"retention_bytes": -1}, "retention_bytes"),
    ({"retention_ms": -1}, "retention_ms"),
    ({"retention_ms": "1d"}, "retention_ms"),
    ({"index_interval_bytes": 0}, "index_interval_bytes"),
    ({"max_batch_bytes": 0}, "max_batch_bytes"),
    ({"max_batch_bytes": (64 << 20) + 1}, "max_batch_bytes"),  # must fit an RPC frame
    ({"fsync": "sometimes"}, "fsync"),
    ({"fsync": "ALWAYS"}, "fsync"),
    ({"fsync_interval_ms": -1}, "fsync_interval_ms"),
]


@pytest.mark.parametrize(
    ("kwargs", "setting"), [pytest.param(k, s, id=f"{s}={k[s]!r}") for k, s in _BAD_CONFIGS]
)
def test_invalid_stream_config_names_the_setting(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(InvalidConfigError, match=rf"^{setting} must be") as caught:
        StreamConfig(**kwargs)
    assert isinstance(caught.value, StrataError)
    assert isinstance(caught.value, ValueError)


def test_stored_config_with_unknown_setting_is_refused() -> None:
    assert StreamConfig.from_json(StreamConfig(retention_ms=5).to_json()).retention_ms == 5
    with pytest.raises(InvalidConfigError, match="compaction"):
        StreamConfig.from_json(b'{"compaction": true}')


async def test_journal_open_rejects_unknown_fsync_policy(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="fsync must be one of"):
        async with Journal.open(tmp_path / "data", cast(Any, "sometimes")):
            pass
    assert not (tmp_path / "data").exists()


async def test_journal_open_rejects_negative_fsync_interval(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="fsync_interval_ms"):
        async with Journal.open(tmp_path / "data", fsync_interval_ms=-1):
            pass


# -- append_batch ---------------------------------------------------------------------


# -- segments and the index -------------------------------------------------------------


async def test_maintenance_task_rolls_aged_segments(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    clock = FakeClock(10_000)
    async with Journal.open(tmp_path, fsync="always", clock=clock, maintenance_interval=0.5) as j:
        await j.create_stream("s", StreamConfig(segment_ms=1000))
        await j.append("s", [Record(b"0")])
        await trio.sleep(2)  # maintenance runs; the segment is not old yet
        assert j.stream_info("s").segment_count == 1
        clock.now += 1000
        # Virtual time: the maintenance task's next round starts the roll (which then
        # waits for fsync threads while autojump moves on, so the roll may not be done).
        await trio.sleep(1)
        # Turn the clock back so this append would not roll by itself, and let it
        # queue behind the roll on the stream's write lock: it lands after the roll.
        clock.now -= 1000
        assert await j.append("s", [Record(b"1")]) == AppendResult(1, 1)
        assert j.stream_info("s").segment_count == 2
        assert [int(p.stem) for p in _logs(tmp_path, "s")] == [0, 1]
        assert [r.value for r in await j.read("s", 0)] == [b"0", b"1"]


# -- retention --------------------------------------------------------------------------


# -- offset_for_time ----------------------------------------------------------------------


# -- read budgets -------------------------------------------------------------------------


# -- statistics ----------------------------------------------------------------------------


async def test_statistics(tmp_path: Path) -> None:
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("a", StreamConfig(fsync="always"))
        await j.create_stream("b")
        zero = j.statistics("a")
        assert (zero.appends, zero.records, zero.bytes_appended, zero.fsyncs) == (0, 0, 0, 0)
        assert (zero.segments, zero.size_bytes, zero.first_offset, zero.next_offset) == (
            1,
            0,
            0,
            0,
        )

        for i in range(5):
            await j.append("a", [Record(b"x" * i)] * (i + 1))
            await j.append("b", [Record(b"y")])
        a, b = j.statistics("a"), j.statistics("b")
        assert (a.appends, a.records, a.next_offset) == (5, 15, 15)
        assert (b.appends, b.records, b.next_offset) == (5, 5, 5)
        assert a.bytes_appended == sum(len(x) for x in await j.read_batches("a", 0)) == a.size_bytes
        assert 1 <= a.fsyncs <= 5
        assert a.fsync_latency.count == a.fsyncs
        assert b.fsyncs == 0  # fsync="none" until a roll or close

        await j.roll("b")
        b = j.statistics("b")
        assert (b.segments, b.fsyncs) == (2, 1)
        await j.append_batch("b", _GOOD)
        b = j.statistics("b")
        assert (b.appends, b.records, b.bytes_appended) == (6, 8, b.size_bytes)

        total = j.statistics()
        per = total.per_stream
        assert per == {"a": j.statistics("a"), "b": j.statistics("b")}
        assert total.streams == 2
        for field in ("appends", "records", "bytes_appended", "fsyncs", "segments", "size_bytes"):
            assert getattr(total, field) == sum(getattr(s, field) for s in per.values()), field
        assert total.fsync_latency.count == total.fsyncs
        assert total.fsync_latency.counts == [
            x + y
            for x, y in zip(
                per["a"].fsync_latency.counts, per["b"].fsync_latency.counts, strict=True
            )
        ]

        await j.delete_stream("b")
        total = j.statistics()
        assert (total.streams, total.appends, total.records) == (1, 5, 15)


# -- unusual records ----------------------------------------------------------------------

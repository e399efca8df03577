"""Tests of :class:`journal.Journal`'s public API, one behaviour at a time.

What is covered:

* a round trip through every public method, ``stream_info`` and ``streams()``,
  reopening (streams, configs and records survive), ``create_stream`` twice,
  and ``delete_stream`` (files gone, waiting tails and waiters get
  ``StreamDeletedError``);
* bad arguments: each raises the documented ``StrataError`` subclass with a
  clear message and leaves every file under the data directory (the RocksDB
  catalog aside) byte for byte as it was;
* ``append_batch``: client batches get offsets assigned without breaking their
  CRC, including batches built by kafka-python;
* segments rolling by size and by age (a fake ms clock), the sparse index
  (a read at every offset), retention by bytes and by time, ``offset_for_time``,
  the ``max_bytes`` budget of reads, ``statistics()``, and unusual records.

"""

from __future__ import annotations

import inspect
import itertools
import struct
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, cast

import pytest
import trio
import trio.testing
from crc32c import crc32c
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from support import read_all, tail, take

from journal import (
    AppendResult,
    BatchTooLargeError,
    InvalidBatchError,
    InvalidConfigError,
    Journal,
    OffsetOutOfRangeError,
    Record,
    StrataError,
    StreamConfig,
    StreamDeletedError,
    StreamExistsError,
    StreamInfo,
    UnknownStreamError,
)
from journal.segments.batch import check_batch, decode_batch, encode_batch

P = ParamSpec("P")

# Byte positions of RecordBatch v2 header fields (Kafka spec).
_LENGTH_AT, _MAGIC_AT, _CRC_AT, _CRC_START = 8, 16, 17, 21
_LAST_DELTA_AT, _COUNT_AT = 23, 57


class FakeClock:
    """Wall time in ms for ``Journal.open(clock=...)``; the test moves it."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the data directory except the RocksDB catalog, by content."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "catalog"
    }


def _stream_dir(root: Path, name: str) -> Path:
    [directory] = [d for d in (root / "streams").iterdir() if d.name.split("-", 1)[1] == name]
    return directory


def _logs(root: Path, name: str) -> list[Path]:
    return sorted(_stream_dir(root, name).glob("*.log"))


def _fields(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in records]


def _recrc(batch: bytearray) -> bytes:
    """Store a correct CRC32C after editing CRC-covered header fields."""
    struct.pack_into(">I", batch, _CRC_AT, crc32c(bytes(batch[_CRC_START:])))
    return bytes(batch)


def _with(batch: bytes, fmt: str, at: int, value: int, *, fix_crc: bool = True) -> bytes:
    edited = bytearray(batch)
    struct.pack_into(fmt, edited, at, value)
    return _recrc(edited) if fix_crc else bytes(edited)


_GOOD = encode_batch([Record(b"a"), Record(b"b"), Record(b"c")], now_ms=1)


# -- round trip -----------------------------------------------------------------------


async def test_round_trip_of_every_public_method(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000)
    config = StreamConfig(
        segment_bytes=1 << 16,
        segment_ms=3_600_000,
        retention_bytes=1 << 30,
        retention_ms=10**9,
        index_interval_bytes=256,
        max_batch_bytes=1 << 15,
        fsync="always",
        fsync_interval_ms=7,
    )
    async with Journal.open(tmp_path, fsync="none", clock=clock) as j:
        assert j.streams() == []
        await j.create_stream("orders", config)
        await j.create_stream("audit")
        assert j.streams() == ["audit", "orders"]
        assert j.stream_info("orders") == StreamInfo("orders", 0, 0, 0, 1, config, ())
        assert j.stream_info("audit").config == StreamConfig()

        res = await j.append("orders", [Record(b"v0", b"k0", [("h", b"x")]), Record(b"v1")])
        assert res == AppendResult(0, 1)
        raw = encode_batch([Record(b"v2", timestamp=5)], now_ms=0)
        assert await j.append_batch("orders", raw) == AppendResult(2, 2)
        expected = [
            (0, b"k0", b"v0", [("h", b"x")], 1_000_000),
            (1, None, b"v1", [], 1_000_000),
            (2, None, b"v2", [], 5),
        ]
        assert _fields(await j.read("orders", 0)) == expected
        assert _fields(await j.read("orders", 2)) == expected[2:]
        assert await j.read("orders", 3) == []  # the end is a valid, empty position

        batches = await j.read_batches("orders", 0)
        assert [check_batch(b).base_offset for b in batches] == [0, 2]
        assert batches[1][8:] == raw[8:]
        info = j.stream_info("orders")
        assert info.size_bytes == sum(len(b) for b in batches)
        assert info.size_bytes == sum(p.stat().st_size for p in _logs(tmp_path, "orders"))
        assert (info.first_offset, info.next_offset, info.segment_count) == (0, 3, 1)

        assert await j.offset_for_time("orders", 0) == 0
        assert await j.offset_for_time("orders", 6) == 0
        assert await j.offset_for_time("orders", 1_000_000) == 0
        assert await j.offset_for_time("orders", 1_000_001) is None

        await j.wait("orders", 2)  # already readable: returns at once
        async with aclosing(tail(j, "orders", 1)) as gen:
            assert [r.offset for r in await take(gen, 2)] == [1, 2]

        await j.roll("orders")
        assert j.stream_info("orders").segment_count == 2
        assert len(_logs(tmp_path, "orders")) == 2
        await j.roll("orders")  # nothing in the active segment: no new segment
        assert j.stream_info("orders").segment_count == 2
        assert _fields(await j.read("orders", 0)) == expected

        assert await j.apply_retention() == 0
        assert await j.apply_retention("orders") == 0
        assert await j.verify("orders") == []
        stats = j.statistics("orders")
        assert (stats.appends, stats.records, stats.segments) == (2, 3, 2)
        assert j.statistics().streams == 2

        await j.delete_stream("audit")
        assert j.streams() == ["orders"]

    async with Journal.open(tmp_path, clock=clock) as j:
        assert j.streams() == ["orders"]
        info = j.stream_info("orders")
        assert info.config == config
        assert (info.first_offset, info.next_offset, info.segment_count) == (0, 3, 2)
        assert _fields(await j.read("orders", 0)) == expected
        assert await j.append("orders", [Record(b"v3")]) == AppendResult(3, 3)


async def test_create_stream_twice(tmp_path: Path) -> None:
    async with Journal.open(tmp_path) as j:
        await j.create_stream("s", StreamConfig(segment_bytes=4096))
        await j.append("s", [Record(b"x")])
        with pytest.raises(StreamExistsError, match="'s' already exists") as info:
            await j.create_stream("s")
        assert isinstance(info.value, StrataError)
        assert isinstance(info.value, ValueError)
        # exist_ok keeps the stream as it is: config and records.
        await j.create_stream("s", StreamConfig(segment_bytes=8192), exist_ok=True)
        assert j.stream_info("s").config == StreamConfig(segment_bytes=4096)
        assert j.stream_info("s").next_offset == 1
        await j.create_stream("t", exist_ok=True)  # creates when missing
        assert j.streams() == ["s", "t"]


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


@dataclass(frozen=True)
class Bad:
    id: str
    error: type[StrataError]
    match: str
    call: Callable[[Journal], object]


def _unknown(method: str, call: Callable[[Journal], object]) -> Bad:
    return Bad(f"unknown-stream-{method}", UnknownStreamError, "no stream named 'nope'", call)


_BAD_CALLS = [
    _unknown("append", lambda j: j.append("nope", [Record(b"x")])),
    _unknown("append_batch", lambda j: j.append_batch("nope", _GOOD)),
    _unknown("read", lambda j: j.read("nope", 0)),
    _unknown("read_batches", lambda j: j.read_batches("nope", 0)),
    _unknown("offset_for_time", lambda j: j.offset_for_time("nope", 0)),
    _unknown("wait", lambda j: j.wait("nope", 0)),
    _unknown("tail", lambda j: j.tail("nope", 0).__anext__()),
    _unknown("stream_info", lambda j: j.stream_info("nope")),
    _unknown("statistics", lambda j: j.statistics("nope")),
    _unknown("roll", lambda j: j.roll("nope")),
    _unknown("delete_stream", lambda j: j.delete_stream("nope")),
    _unknown("apply_retention", lambda j: j.apply_retention("nope")),
    _unknown("verify", lambda j: j.verify("nope")),
    Bad("read-negative", OffsetOutOfRangeError, "offset -1 ", lambda j: j.read("s", -1)),
    Bad("read-past-end", OffsetOutOfRangeError, "offset 17 ", lambda j: j.read("s", 17)),
    Bad("read-far-past-end", OffsetOutOfRangeError, "valid", lambda j: j.read("s", 1 << 40)),
    Bad("batches-negative", OffsetOutOfRangeError, "-1", lambda j: j.read_batches("s", -1)),
    Bad("batches-past-end", OffsetOutOfRangeError, "17", lambda j: j.read_batches("s", 17)),
    Bad("tail-negative", OffsetOutOfRangeError, "-1", lambda j: j.tail("s", -1).__anext__()),
    Bad(
        "oversize-batch",
        BatchTooLargeError,
        "exceeds max_batch_bytes=1024",
        lambda j: j.append_batch("s", encode_batch([Record(b"x" * 2000)], now_ms=1)),
    ),
    Bad(
        "oversize-record",
        BatchTooLargeError,
        "exceeds max_batch_bytes",
        lambda j: j.append("s", [Record(b"ok"), Record(b"x" * 2000), Record(b"ok")]),
    ),
    Bad("garbage", InvalidBatchError, "magic", lambda j: j.append_batch("s", b"\xff" * 100)),
    Bad("empty-bytes", InvalidBatchError, "truncated", lambda j: j.append_batch("s", b"")),
    Bad(
        "truncated-header", InvalidBatchError, "truncated", lambda j: j.append_batch("s", _GOOD[:9])
    ),
    Bad("no-records", InvalidBatchError, "truncated", lambda j: j.append_batch("s", _GOOD[:61])),
    Bad(
        "truncated-body", InvalidBatchError, "truncated", lambda j: j.append_batch("s", _GOOD[:-1])
    ),
    Bad(
        "bad-crc",
        InvalidBatchError,
        "CRC32C mismatch",
        lambda j: j.append_batch("s", _GOOD[:-1] + bytes([_GOOD[-1] ^ 1])),
    ),
    Bad(
        "wrong-magic",
        InvalidBatchError,
        "unsupported magic 1",
        lambda j: j.append_batch("s", _with(_GOOD, ">b", _MAGIC_AT, 1, fix_crc=False)),
    ),
    Bad(
        "trailing-bytes",
        InvalidBatchError,
        "1 bytes after the batch",
        lambda j: j.append_batch("s", _GOOD + b"\x00"),
    ),
    Bad(
        "two-batches",
        InvalidBatchError,
        "after the batch",
        lambda j: j.append_batch("s", _GOOD + _GOOD),
    ),
    Bad(
        "record-count-mismatch",
        InvalidBatchError,
        "record count",
        lambda j: j.append_batch("s", _with(_GOOD, ">i", _COUNT_AT, 5)),
    ),
    Bad(
        "last-offset-delta-mismatch",
        InvalidBatchError,
        "record count",
        lambda j: j.append_batch("s", _with(_GOOD, ">i", _LAST_DELTA_AT, 0)),
    ),
    Bad(
        "negative-record-count",
        InvalidBatchError,
        "negative",
        lambda j: j.append_batch("s", _with(_GOOD, ">i", _COUNT_AT, -1)),
    ),
    Bad(
        "batch-length-too-small",
        InvalidBatchError,
        "too small",
        lambda j: j.append_batch("s", _with(_GOOD, ">i", _LENGTH_AT, 10, fix_crc=False)),
    ),
    Bad("empty-append", InvalidBatchError, "at least one record", lambda j: j.append("s", [])),
    Bad("name-exists", StreamExistsError, "already exists", lambda j: j.create_stream("s")),
    Bad("name-empty", InvalidConfigError, "stream name", lambda j: j.create_stream("")),
    Bad("name-too-long", InvalidConfigError, "stream name", lambda j: j.create_stream("x" * 250)),
    Bad("name-nul", InvalidConfigError, "stream name", lambda j: j.create_stream("a\x00b")),
    Bad(
        "name-bytes",
        InvalidConfigError,
        "stream name",
        lambda j: j.create_stream(cast(Any, b"bytes")),
    ),
    Bad("name-int", InvalidConfigError, "stream name", lambda j: j.create_stream(cast(Any, 5))),
]


async def _invoke(j: Journal, call: Callable[[Journal], object]) -> None:
    """Call a method, sync or async."""
    result = call(j)
    if inspect.isawaitable(result):
        await result


async def _populated(j: Journal) -> None:
    """Stream ``s``: offsets 0..15 in two segments, batches of at most 1 KiB."""
    await j.create_stream("s", StreamConfig(max_batch_bytes=1024, index_interval_bytes=64))
    for i in range(8):
        await j.append("s", [Record(f"v{i}".encode(), key=b"k")])
    await j.roll("s")
    await j.append("s", [Record(f"w{i}".encode()) for i in range(8)])


async def _check_refused(j: Journal, root: Path, bad: Bad) -> None:
    """``bad`` raises as promised and changes nothing, on disk or in the stream."""
    before = _snapshot(root)
    info, stats = j.stream_info("s"), j.statistics("s")
    with pytest.raises(bad.error, match=bad.match) as caught:
        await _invoke(j, bad.call)
    assert isinstance(caught.value, StrataError)
    assert _snapshot(root) == before
    assert j.stream_info("s") == info
    assert j.statistics("s") == stats
    assert j.streams() == ["s"]
    # The journal still works afterwards.
    assert await j.append("s", [Record(b"after")]) == AppendResult(16, 16)


@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in _BAD_CALLS])
async def test_bad_arguments_raise_and_change_nothing(tmp_path: Path, bad: Bad) -> None:
    async with Journal.open(tmp_path, fsync="always") as j:
        await _populated(j)
        await _check_refused(j, tmp_path, bad)
        exc_type = bad.error
        if exc_type is UnknownStreamError:
            assert issubclass(exc_type, KeyError)
        if exc_type is OffsetOutOfRangeError:
            assert issubclass(exc_type, IndexError)


async def test_offset_out_of_range_carries_the_valid_range(tmp_path: Path) -> None:
    async with Journal.open(tmp_path, fsync="none") as j:
        await _populated(j)
        for offset in (-1, 17):
            with pytest.raises(OffsetOutOfRangeError) as caught:
                await j.read("s", offset)
            assert (caught.value.first_offset, caught.value.next_offset) == (0, 16)
            assert "valid offsets: 0..16" in str(caught.value)
        assert str(UnknownStreamError("no stream named 'x'")) == "no stream named 'x'"


@pytest.mark.parametrize("count", [2, 4])
async def test_append_batch_rejects_records_disagreeing_with_header(
    tmp_path: Path, count: int
) -> None:
    # Header says `count` records (offset deltas 0..count-1): the record area holds 3.
    batch = bytearray(_GOOD)
    struct.pack_into(">i", batch, _LAST_DELTA_AT, count - 1)
    struct.pack_into(">i", batch, _COUNT_AT, count)
    bad = _recrc(batch)
    async with Journal.open(tmp_path, fsync="always") as j:
        await _populated(j)
        refused = Bad(
            "count", InvalidBatchError, "offset|record", lambda j: j.append_batch("s", bad)
        )
        await _check_refused(j, tmp_path, refused)


async def test_unencodable_stream_name_is_refused(tmp_path: Path) -> None:
    async with Journal.open(tmp_path, fsync="always") as j:
        await _populated(j)
        refused = Bad("name", InvalidConfigError, "UTF-8", lambda j: j.create_stream("\ud800"))
        await _check_refused(j, tmp_path, refused)


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


async def test_append_batch_assigns_offsets_and_keeps_crc(tmp_path: Path) -> None:
    first = encode_batch([Record(b"a", key=b"1"), Record(b"b")], 0, now_ms=111)
    second = encode_batch([Record(b"c", headers=[("h", None)])], 0, now_ms=222)
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("s")
        await j.append("s", [Record(b"native")])
        assert await j.append_batch("s", first) == AppendResult(1, 2)
        assert await j.append_batch("s", bytearray(second)) == AppendResult(3, 3)
        assert await j.append_batch("s", memoryview(first)) == AppendResult(4, 5)
        batches = await j.read_batches("s", 1)
        assert [check_batch(b).base_offset for b in batches] == [1, 3, 4]
        assert [struct.unpack_from(">q", b)[0] for b in batches] == [1, 3, 4]
        for got, sent in zip(batches, [first, second, first], strict=True):
            assert got[8:] == sent[8:]  # only the base offset changed: CRC still valid
        records = await j.read("s", 0)
    assert [(r.offset, r.value, r.timestamp) for r in records] == [
        (0, b"native", records[0].timestamp),
        (1, b"a", 111),
        (2, b"b", 111),
        (3, b"c", 222),
        (4, b"a", 111),
        (5, b"b", 111),
    ]
    assert records[3].headers == [("h", None)]


@pytest.mark.parametrize("compression", [pytest.param(0, id="plain"), pytest.param(1, id="gzip")])
async def test_append_batch_from_kafka_python(tmp_path: Path, compression: int) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    sent = [
        (1_700_000_000_000, b"k1", b"v1", [("trace", b"t1")]),
        (1_700_000_000_005, None, b"v2", []),
        (1_699_999_999_000, b"k3", None, [("ünï", None)]),
    ]
    for delta, (ts, key, value, headers) in enumerate(sent):
        assert builder.append(delta, ts, key, value, headers) is not None
    raw = bytes(builder.build())
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("s")
        await j.append("s", [Record(b"before")] * 2)
        assert await j.append_batch("s", raw) == AppendResult(2, 4)
        records = await j.read("s", 2)
        [stored] = await j.read_batches("s", 2)
    assert _fields(records) == [
        (2 + delta, key, value, headers, ts) for delta, (ts, key, value, headers) in enumerate(sent)
    ]
    # And kafka-python reads back what we serve.
    batch = DefaultRecordBatch(bytearray(stored))
    assert batch.validate_crc()
    assert batch.base_offset == 2
    assert [(r.offset, r.key, r.value) for r in batch] == [
        (2, b"k1", b"v1"),
        (3, None, b"v2"),
        (4, b"k3", None),
    ]


# -- segments and the index -------------------------------------------------------------


async def test_segments_roll_by_size(tmp_path: Path) -> None:
    segment_bytes = 2048
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=segment_bytes))
        counts = []
        for i in range(100):
            await j.append("s", [Record(f"value-{i:04d}".encode() * 8, key=b"k")])
            counts.append(j.stream_info("s").segment_count)
        info = j.stream_info("s")
        records = await read_all(j, "s", 0)
        logs = _logs(tmp_path, "s")
    assert counts == sorted(counts)
    assert info.segment_count == len(logs) > 4
    sizes = [p.stat().st_size for p in logs]
    assert all(0 < size <= segment_bytes for size in sizes)
    assert sum(sizes) == info.size_bytes
    # Each segment is named by its base offset and holds what follows.
    bases = [int(p.stem) for p in logs]
    assert bases[0] == 0
    assert bases == sorted(bases)
    assert [r.offset for r in records] == list(range(100))
    assert [r.value for r in records] == [f"value-{i:04d}".encode() * 8 for i in range(100)]


async def test_segments_roll_by_age_on_append_and_on_retention(tmp_path: Path) -> None:
    clock = FakeClock(10_000)
    async with Journal.open(tmp_path, fsync="always", clock=clock) as j:
        await j.create_stream("s", StreamConfig(segment_ms=1000))
        await j.append("s", [Record(b"0")])
        clock.now += 999
        await j.append("s", [Record(b"1")])
        assert await j.apply_retention() == 0
        assert j.stream_info("s").segment_count == 1
        clock.now += 1  # the first write is now segment_ms old: the next append rolls
        await j.append("s", [Record(b"2")])
        assert j.stream_info("s").segment_count == 2
        assert [int(p.stem) for p in _logs(tmp_path, "s")] == [0, 2]
        clock.now += 1000
        assert await j.apply_retention() == 0  # rolls the aged segment, removes nothing
        assert j.stream_info("s").segment_count == 3
        assert [int(p.stem) for p in _logs(tmp_path, "s")] == [0, 2, 3]
        clock.now += 5000
        assert await j.apply_retention() == 0  # an empty active segment never rolls
        assert j.stream_info("s").segment_count == 3
        assert [r.value for r in await j.read("s", 0)] == [b"0", b"1", b"2"]


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


async def test_sparse_index_finds_every_offset(tmp_path: Path) -> None:
    config = StreamConfig(segment_bytes=4096, index_interval_bytes=150)
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", config)
        expected: list[bytes] = []
        for i in range(300):
            n = 1 + i % 3
            batch = [Record(f"r{len(expected) + k}".encode()) for k in range(n)]
            expected += [r.value or b"" for r in batch]
            await j.append("s", batch)
        await _check_every_offset(j, expected)
    # The sealed segments have multi-entry index files.
    index_sizes = [p.with_suffix(".index").stat().st_size for p in _logs(tmp_path, "s")[:-1]]
    assert all(size > 8 for size in index_sizes)
    async with Journal.open(tmp_path) as j:  # indexes loaded from their files
        await _check_every_offset(j, expected)


async def _check_every_offset(j: Journal, expected: list[bytes]) -> None:
    assert j.stream_info("s").segment_count > 3
    for offset, value in enumerate(expected):
        [batch] = await j.read_batches("s", offset, max_bytes=1)
        header = check_batch(batch)
        assert header.base_offset <= offset < header.next_offset
        first = (await j.read("s", offset, max_bytes=1))[0]
        assert (first.offset, first.value) == (offset, value)


# -- retention --------------------------------------------------------------------------


async def test_retention_by_bytes(tmp_path: Path) -> None:
    retention = 3000
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=1000, retention_bytes=retention))
        for i in range(100):
            await j.append("s", [Record(f"{i:03d}".encode() * 10)])
        logs = _logs(tmp_path, "s")
        sizes = [p.stat().st_size for p in logs]
        bases = [int(p.stem) for p in logs]
        # The fewest oldest segments whose removal brings the total within the limit.
        keep_from = next(k for k in range(len(sizes)) if sum(sizes[k:]) <= retention)
        assert keep_from > 0

        assert await j.apply_retention("s") == keep_from
        info = j.stream_info("s")
        assert info.first_offset == bases[keep_from]
        assert info.next_offset == 100
        assert info.segment_count == len(sizes) - keep_from
        assert info.size_bytes == sum(sizes[keep_from:]) <= retention
        assert _logs(tmp_path, "s") == logs[keep_from:]
        assert not any(p.with_suffix(".index").exists() for p in logs[:keep_from])
        assert j.statistics("s").first_offset == info.first_offset

        with pytest.raises(OffsetOutOfRangeError) as caught:
            await j.read("s", info.first_offset - 1)
        assert caught.value.first_offset == info.first_offset
        with pytest.raises(OffsetOutOfRangeError):
            await j.read_batches("s", 0)
        records = await read_all(j, "s", info.first_offset)
        assert [r.offset for r in records] == list(range(info.first_offset, 100))
        assert await j.offset_for_time("s", 0) == info.first_offset
        assert await j.apply_retention("s") == 0  # idempotent

    async with Journal.open(tmp_path) as j:  # the removal is durable
        assert j.stream_info("s").first_offset == info.first_offset


async def test_retention_never_removes_the_active_segment(tmp_path: Path) -> None:
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=500, retention_bytes=0))
        for i in range(20):
            await j.append("s", [Record(b"x" * 100, key=str(i).encode())])
        active_base = int(_logs(tmp_path, "s")[-1].stem)
        assert active_base > 0
        assert await j.apply_retention() > 0
        info = j.stream_info("s")
        assert info.segment_count == 1
        assert info.size_bytes > 0  # over the limit, but it is the active segment
        assert info.first_offset == active_base
        assert [int(p.stem) for p in _logs(tmp_path, "s")] == [active_base]
        assert (await j.read("s", active_base))[0].key == str(active_base).encode()

        await j.roll("s")  # now the only data is sealed: it goes, the new empty one stays
        assert await j.apply_retention() == 1
        info = j.stream_info("s")
        assert (info.first_offset, info.next_offset, info.segment_count) == (20, 20, 1)
        assert await j.read("s", 20) == []
        assert await j.append("s", [Record(b"new")]) == AppendResult(20, 20)


async def test_retention_by_time(tmp_path: Path) -> None:
    clock = FakeClock(100_000)
    async with Journal.open(tmp_path, fsync="none", clock=clock) as j:
        await j.create_stream("s", StreamConfig(retention_ms=40_000))
        await j.append("s", [Record(b"a", timestamp=10_000 + i) for i in range(10)])
        await j.roll("s")  # segment 0: newest record 10_009
        await j.append("s", [Record(b"b", timestamp=60_000), Record(b"b", timestamp=50_000)])
        await j.roll("s")  # segment 10: newest record 60_000 (not the last one)
        await j.append("s", [Record(b"c", timestamp=1)])  # active, and very old
        # Cut-off 100_000 - 40_000 = 60_000: only segments newest < 60_000 go.
        assert await j.apply_retention() == 1
        assert j.stream_info("s").first_offset == 10
        assert [int(p.stem) for p in _logs(tmp_path, "s")] == [10, 12]
        assert await j.apply_retention() == 0
        clock.now += 1
        assert await j.apply_retention() == 1
        info = j.stream_info("s")
        assert (info.first_offset, info.segment_count) == (12, 1)  # the active one stays
        with pytest.raises(OffsetOutOfRangeError):
            await j.read("s", 11)
        assert [r.value for r in await j.read("s", 12)] == [b"c"]


async def test_tail_keeps_working_while_older_segments_are_removed(tmp_path: Path) -> None:
    got: list[Record] = []
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=400, retention_bytes=800))
        for i in range(20):
            await j.append("s", [Record(f"{i}".encode() * 50)])
        start = int(_logs(tmp_path, "s")[-1].stem)  # the active segment's base

        async def reader() -> None:
            async with aclosing(tail(j, "s", start)) as gen:
                async for record in gen:
                    got.append(record)
                    if len(got) == 40 - start:
                        return

        removed = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for i in range(20, 40):
                await j.append("s", [Record(f"{i}".encode() * 50)])
                if i % 5 == 0:
                    await trio.testing.wait_all_tasks_blocked()  # the tail caught up
                    removed += await j.apply_retention()
                    assert got[-1].offset == i
        # Segments were removed behind the tail, including the one it started in.
        assert removed > 2
        assert j.stream_info("s").first_offset > start
    assert [r.offset for r in got] == list(range(start, 40))
    assert [r.value for r in got] == [f"{i}".encode() * 50 for i in range(start, 40)]


async def test_retention_by_time_after_reopen(tmp_path: Path) -> None:
    # Regression: reopening once forgot the batches between the last two index
    # entries when rebuilding a segment's max timestamp (SparseIndex.truncate).
    clock = FakeClock(1_850)  # cut-off 850: the segment's newest record (900) is younger
    config = StreamConfig(retention_ms=1_000, index_interval_bytes=1)
    async with Journal.open(tmp_path, fsync="none", clock=clock) as j:
        await j.create_stream("s", config)
        for ts in (100, 200, 300, 900, 400):  # the peak is in the next-to-last batch
            await j.append("s", [Record(b"x", timestamp=ts)])
        await j.roll("s")
        await j.append("s", [Record(b"y", timestamp=1_000)])
        assert await j.apply_retention() == 0
    async with Journal.open(tmp_path, fsync="none", clock=clock) as j:
        removed = await j.apply_retention()
        first = j.stream_info("s").first_offset
    assert removed == 0
    assert first == 0


# -- offset_for_time ----------------------------------------------------------------------


def _first_at_or_after(stamps: list[tuple[int, int]], t: int) -> int | None:
    return next((offset for offset, ts in stamps if ts >= t), None)


async def test_offset_for_time(tmp_path: Path) -> None:
    # Timestamps jump around within batches, between batches and between segments.
    pattern = [500, 100, 900, 300, 300, 1200, 50, 700, 1100, 1000, 2000, 10, 1500, 1999]
    stamps: list[tuple[int, int]] = []
    config = StreamConfig(segment_bytes=600, index_interval_bytes=100)
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", config)
        offset = 0
        for round_ in range(6):
            for i in range(0, len(pattern), 3):
                tss = [ts + 2000 * round_ for ts in pattern[i : i + 3]]
                res = await j.append("s", [Record(b"v" * 20, timestamp=ts) for ts in tss])
                assert res.base_offset == offset
                stamps += [(offset + k, ts) for k, ts in enumerate(tss)]
                offset += len(tss)
        assert j.stream_info("s").segment_count > 3
        probes = sorted({t + d for _, t in stamps for d in (-1, 0, 1)} | {-5, 0, 10**12})
        for t in probes:
            assert await j.offset_for_time("s", t) == _first_at_or_after(stamps, t), t
        assert await j.offset_for_time("s", -5) == 0  # before everything: the first offset
        assert await j.offset_for_time("s", max(ts for _, ts in stamps) + 1) is None
    async with Journal.open(tmp_path) as j:  # time indexes loaded from their files
        for t in probes:
            assert await j.offset_for_time("s", t) == _first_at_or_after(stamps, t), t


async def test_offset_for_time_after_retention(tmp_path: Path) -> None:
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=300, retention_bytes=700))
        for i in range(30):
            await j.append("s", [Record(b"v" * 40, timestamp=1000 + i)])
        assert await j.apply_retention() > 0
        first = j.stream_info("s").first_offset
        assert first > 0
        assert await j.offset_for_time("s", 0) == first
        assert await j.offset_for_time("s", 1000 + first) == first
        assert await j.offset_for_time("s", 1000 + first + 1) == first + 1
        assert await j.offset_for_time("s", 1030) is None


async def test_offset_for_time_after_reopen(tmp_path: Path) -> None:
    # Regression: see test_retention_by_time_after_reopen.
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", StreamConfig(index_interval_bytes=1))
        for ts in (100, 200, 300, 900, 400):
            await j.append("s", [Record(b"x", timestamp=ts)])
        assert await j.offset_for_time("s", 500) == 3
    async with Journal.open(tmp_path, fsync="none") as j:
        found = await j.offset_for_time("s", 500)
    assert found == 3


# -- read budgets -------------------------------------------------------------------------


async def test_read_max_bytes(tmp_path: Path) -> None:
    async with Journal.open(tmp_path, fsync="none") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=1500))
        for i in range(20):  # equal-sized batches of 4 records
            await j.append("s", [Record(f"{i:02d}-{k}".encode() * 10) for k in range(4)])
        size = len((await j.read_batches("s", 0, max_bytes=1))[0])
        assert j.stream_info("s").segment_count > 2

        for budget in (0, 1, size - 1, size, size + 1, 2 * size, int(2.5 * size), 7 * size):
            for start in (0, 4, 5, 23, 40):  # 40 is at a segment boundary or not: both fine
                batches = await j.read_batches("s", start, max_bytes=budget)
                total = sum(len(b) for b in batches)
                want = max(1, budget // size)  # at least one batch, else all that fit
                assert len(batches) == min(want, 20 - start // 4), (budget, start)
                assert total <= max(budget, size)
                # read_batches starts at the batch holding `start`; read() at `start`.
                assert check_batch(batches[0]).base_offset == start - start % 4
                records = await j.read("s", start, max_bytes=budget)
                assert records[0].offset == start
                assert [r.offset for r in records] == list(range(start, start + len(records)))
                assert len(records) == 4 * len(batches) - start % 4

        # One batch bigger than max_bytes still comes back (alone).
        await j.append("s", [Record(b"big" * 1000)])
        [big] = await j.read_batches("s", 80, max_bytes=10)
        assert len(big) > 3000
        assert [r.value for r in await j.read("s", 80, max_bytes=10)] == [b"big" * 1000]
        # A budget that ends inside a batch stops before it.
        batches = await j.read_batches("s", 76, max_bytes=size + 100)
        assert len(batches) == 1


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


async def test_unusual_records_round_trip(tmp_path: Path) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    sent = [
        Record(None, None),
        Record(b"", b""),
        Record(b"v", None, [("ключ", "значение".encode()), ("emoji 🙂", None), ("", b"")]),
        Record(None, b"k", [("dup", b"1"), ("dup", b"2")], timestamp=0),
        Record(big, b"big", timestamp=1_234_567_890_123),
        Record(b"\x00" * 3, b"\xff"),
    ]
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("s")
        assert await j.append("s", sent) == AppendResult(0, 5)
        got = await j.read("s", 0)
        async with aclosing(tail(j, "s", 0)) as gen:
            tailed = await take(gen, len(sent))
    for records in (got, tailed):
        assert [r.offset for r in records] == list(range(len(sent)))
        for r, s in zip(records, sent, strict=True):
            assert (r.key, r.value, r.headers) == (s.key, s.value, s.headers)
            if s.timestamp is not None:
                assert r.timestamp == s.timestamp
    async with Journal.open(tmp_path) as j:
        again = await j.read("s", 4, max_bytes=10)
    assert again[0].value == big


async def test_append_larger_than_max_batch_bytes_is_split(tmp_path: Path) -> None:
    sent = [Record(f"{i:03d}".encode() * 30, key=str(i).encode()) for i in range(50)]
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("s", StreamConfig(max_batch_bytes=1024))
        await j.append("s", [Record(b"first")])
        assert await j.append("s", sent) == AppendResult(1, 50)
        assert await j.append("s", [Record(b"last")]) == AppendResult(51, 51)
        batches = await j.read_batches("s", 1)
        records = await j.read("s", 0)
        stats = j.statistics("s")
    assert len(batches) > 3
    assert all(len(b) <= 1024 for b in batches)
    headers = [check_batch(b) for b in batches]
    for prev, nxt in itertools.pairwise(headers):
        assert nxt.base_offset == prev.next_offset
    assert sum(len(decode_batch(b)[1]) for b in batches) == 51
    assert [r.offset for r in records] == list(range(52))
    assert [r.key for r in records[1:51]] == [s.key for s in sent]
    assert [r.value for r in records[1:51]] == [s.value for s in sent]
    assert (stats.appends, stats.records) == (3, 52)

"""The journal conformance suite: one contract, every :class:`JournalService`.

Each test in :class:`TestJournalService` runs twice (STYLE habit 9): against
the in-process :class:`~journal.Journal` ("local") and against a
:class:`~journal.remote.RemoteJournal` connected over 127.0.0.1 to a
:class:`~journal.rpc.server.JournalServer` serving a ``Journal`` ("remote").
Tests touch the journal only through the ``JournalService`` methods: no file
system peeking, no sync conveniences, no ``abandon``. A reopen is a close of
the service and a new :func:`open_service` on the same directory; journal
settings (a fake ``clock``, ``object_url``, ...) go to the ``Journal.open``
behind either kind.

What is covered:

* a round trip through every method, reopening, ``create_stream`` twice,
  ``delete_stream`` (waiting tails and waiters get ``StreamDeletedError``);
* bad arguments (those of ``test_journal_api`` that the service can express,
  plus an unknown stream on every method): the same exception type, the
  valid range on ``OffsetOutOfRangeError``, and nothing changed;
* ``append_batch`` with our batches and kafka-python's (plain and gzip),
  codecs the journal stores but cannot decode, the ``max_batch_bytes`` edge;
* record timestamps from the journal's clock (explicit ones kept, negative
  ones too), appended records stored byte for byte as the journal encodes
  them, reads under a ``max_bytes`` budget (also above the RPC frame size),
  the sparse index, rolls by size and by age, ``list_segments``, retention by
  bytes and by time, ``offset_for_time`` (after retention, after reopen),
  statistics (counters and record types);
* ``wait`` and ``tail`` woken by appends without time passing, a tail from
  past the end, cancelled waits and closed tails, many concurrent appenders
  and tails;
* unusual records (empty, None, many headers, binary, near ``max_batch_bytes``
  and above 16 MiB), appends split at ``max_batch_bytes``;
* the object tier through the service (``file://``): ``migrate``,
  ``list_segments`` tiers, byte-identical reads, ``verify``, retention and
  deletion;
* a hypothesis run against a plain list model through append, append_batch,
  roll, reopen, migrate and retention.

Not reachable through the service, so left to ``test_journal_api``,
``test_tiering`` and ``test_crash``: the files on disk, corruption found by
``verify`` (it needs bytes edited on disk or in the store), crashes
(``abandon``), and ``Journal.open``'s own argument checks.

Waiting is done with events, ``trio.fail_after`` and
:func:`trio.testing.wait_all_tasks_blocked`; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import struct
import tempfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
import trio
import trio.testing
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from support import check_migrated_layout, read_all, tailing, take

from journal import (
    AppendResult,
    BatchTooLargeError,
    FsyncPolicy,
    InvalidBatchError,
    InvalidConfigError,
    Journal,
    JournalStatistics,
    LatencyHistogram,
    OffsetOutOfRangeError,
    Record,
    SegmentInfo,
    StrataError,
    StreamConfig,
    StreamDeletedError,
    StreamExistsError,
    StreamInfo,
    StreamStatistics,
    TieringStatistics,
    UnknownStreamError,
    UnsupportedCompressionError,
)
from journal.segments.batch import check_batch, decode_batch, encode_batch
from journal.service import JournalService
from journal.stats import FSYNC_BUCKETS

KINDS = ["local", "remote"]
T0 = 1_700_000_000_000

# Byte positions of RecordBatch v2 header fields (Kafka spec).
_LENGTH_AT, _MAGIC_AT, _CRC_AT, _CRC_START, _ATTRIBUTES_AT = 8, 16, 17, 21, 21
_LAST_DELTA_AT, _COUNT_AT = 23, 57

_GOOD = encode_batch([Record(b"a"), Record(b"b"), Record(b"c")], now_ms=1)


# -- opening a service -------------------------------------------------------------


@asynccontextmanager
async def open_service(
    kind: str, path: Path, **journal_kwargs: Any
) -> AsyncIterator[JournalService]:
    """A :class:`JournalService` on the journal in ``path``, of the given kind.

    "local" is ``Journal.open(path, **journal_kwargs)`` itself; "remote" is a
    ``RemoteJournal`` connected to a ``JournalServer`` (127.0.0.1, a free port)
    serving that journal. Maintenance runs only when a test asks for it.
    """
    journal_kwargs.setdefault("maintenance_interval", 3600.0)
    if kind == "local":
        async with Journal.open(path, **journal_kwargs) as journal:
            yield journal
        return
    assert kind == "remote", kind
    from journal.remote import RemoteJournal
    from journal.rpc.server import JournalServer

    body_error: Exception | None = None
    async with Journal.open(path, **journal_kwargs) as journal, trio.open_nursery() as nursery:
        try:
            port = await nursery.start(JournalServer(journal).serve, "127.0.0.1", 0)
            async with RemoteJournal.connect(("127.0.0.1", int(port))) as client:
                try:
                    yield client
                except Exception as exc:
                    # Re-raised outside the nursery, so that it is not wrapped
                    # in an ExceptionGroup (as Journal.open does).
                    body_error = exc
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


class Opener(Protocol):
    def __call__(self, **journal_kwargs: Any) -> AbstractAsyncContextManager[JournalService]: ...


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def open_journal(kind: str, tmp_path: Path) -> Opener:
    """Opens a service of this test's kind on ``tmp_path / "data"`` (again for a reopen)."""

    def opener(**journal_kwargs: Any) -> AbstractAsyncContextManager[JournalService]:
        return open_service(kind, tmp_path / "data", **journal_kwargs)

    return opener


# -- helpers --------------------------------------------------------------------------


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


def _plan(seed: str, tasks: int, appends: int) -> dict[int, list[int]]:
    """How many records (1-3) each task puts in each of its appends; deterministic."""
    rng = random.Random(seed)
    return {task: [rng.randint(1, 3) for _ in range(appends)] for task in range(tasks)}


def _records(task: int, seq: int, n: int, tag: str = "") -> list[Record]:
    key = f"{tag}{task}:{seq}".encode()
    return [Record(value=f"{tag}{task}:{seq}:{i}".encode(), key=key) for i in range(n)]


def _first_at_or_after(stamps: list[tuple[int, int]], t: int) -> int | None:
    return next((offset for offset, ts in stamps if ts >= t), None)


async def _batches(j: JournalService, name: str, start: int, end: int) -> dict[int, bytes]:
    """Every batch holding an offset in ``start..end-1``, one ``read_batches`` each."""
    out: dict[int, bytes] = {}
    offset = start
    while offset < end:
        (raw,) = await j.read_batches(name, offset, 1)
        header, _ = decode_batch(raw)
        out[header.base_offset] = raw
        offset = header.next_offset
    return out


async def _populated(j: JournalService) -> None:
    """Stream ``s``: offsets 0..15 in two segments, batches of at most 1 KiB."""
    await j.create_stream("s", StreamConfig(max_batch_bytes=1024, index_interval_bytes=64))
    for i in range(8):
        await j.append("s", [Record(f"v{i}".encode(), key=b"k")])
    await j.roll("s")
    await j.append("s", [Record(f"w{i}".encode()) for i in range(8)])


def _kafka_batch(
    sent: list[tuple[int, bytes | None, bytes | None, list[Any]]], codec: int
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for delta, (ts, key, value, headers) in enumerate(sent):
        assert builder.append(delta, ts, key, value, headers) is not None
    return bytes(builder.build())


def _exact_size_value(max_batch_bytes: int, timestamp: int, key: bytes | None = None) -> int:
    """The value length whose one-record batch is exactly ``max_batch_bytes`` long."""
    for n in range(max_batch_bytes - 100, max_batch_bytes):
        record = Record(b"x" * n, key, timestamp=timestamp)
        if len(encode_batch([record], now_ms=0)) == max_batch_bytes:
            return n
    raise AssertionError("no value length fits exactly")


# -- bad arguments ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    error: type[StrataError]
    match: str
    call: Callable[[JournalService], Awaitable[object]]


def _unknown(method: str, call: Callable[[JournalService], Awaitable[object]]) -> Bad:
    return Bad(f"unknown-stream-{method}", UnknownStreamError, "no stream named 'nope'", call)


_BAD_CALLS = [
    _unknown("append", lambda j: j.append("nope", [Record(b"x")])),
    _unknown("append_batch", lambda j: j.append_batch("nope", _GOOD)),
    _unknown("read", lambda j: j.read("nope", 0)),
    _unknown("read_batches", lambda j: j.read_batches("nope", 0)),
    _unknown("offset_for_time", lambda j: j.offset_for_time("nope", 0)),
    _unknown("wait", lambda j: j.wait("nope", 0)),
    _unknown("tail", lambda j: j.tail("nope", 0).__anext__()),
    _unknown("describe_stream", lambda j: j.describe_stream("nope")),
    _unknown("list_segments", lambda j: j.list_segments("nope")),
    _unknown("get_statistics", lambda j: j.get_statistics("nope")),
    _unknown("roll", lambda j: j.roll("nope")),
    _unknown("delete_stream", lambda j: j.delete_stream("nope")),
    _unknown("apply_retention", lambda j: j.apply_retention("nope")),
    _unknown("migrate", lambda j: j.migrate("nope")),
    _unknown("verify", lambda j: j.verify("nope")),
    Bad("read-negative", OffsetOutOfRangeError, "offset -1 ", lambda j: j.read("s", -1)),
    Bad("read-past-end", OffsetOutOfRangeError, "offset 17 ", lambda j: j.read("s", 17)),
    Bad("read-far-past-end", OffsetOutOfRangeError, "valid", lambda j: j.read("s", 1 << 40)),
    Bad(
        "read-beyond-int64",
        OffsetOutOfRangeError,
        "valid",
        lambda j: j.read("s", 1 << 63),
    ),
    Bad(
        "batches-below-int64",
        OffsetOutOfRangeError,
        "valid",
        lambda j: j.read_batches("s", -(1 << 63) - 1),
    ),
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
    Bad("name-unencodable", InvalidConfigError, "UTF-8", lambda j: j.create_stream("\ud800")),
    Bad(
        "name-bytes",
        InvalidConfigError,
        "stream name",
        lambda j: j.create_stream(cast(Any, b"bytes")),
    ),
    Bad("name-int", InvalidConfigError, "stream name", lambda j: j.create_stream(cast(Any, 5))),
]


async def _check_refused(j: JournalService, bad: Bad, root: Path) -> None:
    """``bad`` raises as promised and changes nothing the service can show, nor any
    file under the data directory ``root`` (the RocksDB catalog aside)."""
    files = _snapshot(root)
    before = (
        await j.list_streams(),
        await j.describe_stream("s"),
        await j.get_statistics("s"),
        await j.list_segments("s"),
    )
    with pytest.raises(bad.error, match=bad.match) as caught:
        await bad.call(j)
    assert isinstance(caught.value, StrataError)
    assert _snapshot(root) == files
    after = (
        await j.list_streams(),
        await j.describe_stream("s"),
        await j.get_statistics("s"),
        await j.list_segments("s"),
    )
    assert after == before
    assert before[0] == ["s"]
    # The service still works afterwards.
    assert await j.append("s", [Record(b"after")]) == AppendResult(16, 16)
    assert [r.value for r in await j.read("s", 16)] == [b"after"]


# -- a list model ----------------------------------------------------------------------

_VALUES = st.lists(st.binary(max_size=150), min_size=1, max_size=5)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["append", "append_batch"]), _VALUES),
        st.tuples(st.sampled_from(["roll", "reopen", "migrate", "retention"]), st.just([])),
    ),
    max_size=25,
)
_MODEL_CONFIG = StreamConfig(
    segment_bytes=512,
    max_batch_bytes=1024,
    index_interval_bytes=64,
    local_retention_bytes=0,
    local_retention_ms=None,
    memory_bytes=0,
)


async def _check_against_model(j: JournalService, model: list[bytes]) -> None:
    info = await j.describe_stream("m")
    assert (info.first_offset, info.next_offset) == (0, len(model))
    records = await read_all(j, "m", 0, max_bytes=300)
    assert [r.value for r in records] == model
    assert [r.offset for r in records] == list(range(len(model)))
    if model:
        offset = len(model) // 2
        assert [r.value for r in await j.read("m", offset, max_bytes=1)][:1] == [model[offset]]


# -- the suite ----------------------------------------------------------------------------


class TestJournalService:
    """The :class:`JournalService` contract; runs once per kind ("local", "remote")."""

    # -- round trip and stream lifecycle ---------------------------------------------------

    async def test_round_trip_of_every_method(self, open_journal: Opener) -> None:
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
        async with open_journal(fsync="none", clock=clock) as j:
            assert await j.list_streams() == []
            await j.create_stream("orders", config)
            await j.create_stream("audit")
            assert await j.list_streams() == ["audit", "orders"]
            assert await j.describe_stream("orders") == StreamInfo("orders", 0, 0, 0, 1, config, ())
            assert (await j.describe_stream("audit")).config == StreamConfig()

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
            assert await j.read_batches("orders", 3) == []
            info = await j.describe_stream("orders")
            assert info.size_bytes == sum(len(b) for b in batches)
            assert (info.first_offset, info.next_offset, info.segment_count) == (0, 3, 1)
            [active] = await j.list_segments("orders")
            assert active == SegmentInfo(0, 2, "memory", info.size_bytes)

            assert await j.offset_for_time("orders", 0) == 0
            assert await j.offset_for_time("orders", 6) == 0
            assert await j.offset_for_time("orders", 1_000_000) == 0
            assert await j.offset_for_time("orders", 1_000_001) is None

            with trio.fail_after(10):
                await j.wait("orders", 2)  # already readable: returns at once
                async with tailing(j, "orders", 1) as it:
                    assert [r.offset for r in await take(it, 2)] == [1, 2]

            await j.roll("orders")
            assert (await j.describe_stream("orders")).segment_count == 2
            await j.roll("orders")  # nothing in the active segment: no new segment
            assert (await j.describe_stream("orders")).segment_count == 2
            assert _fields(await j.read("orders", 0)) == expected

            assert await j.apply_retention() == 0
            assert await j.apply_retention("orders") == 0
            assert await j.migrate() == 0  # no object tier
            assert await j.migrate("orders") == 0
            assert await j.verify("orders") == []
            stats = await j.get_statistics("orders")
            assert (stats.appends, stats.records, stats.segments) == (2, 3, 2)
            assert (await j.get_statistics()).streams == 2

            await j.delete_stream("audit")
            assert await j.list_streams() == ["orders"]
            segments = await j.list_segments("orders")

        async with open_journal(clock=clock) as j:
            assert await j.list_streams() == ["orders"]
            info = await j.describe_stream("orders")
            assert info.config == config
            assert (info.first_offset, info.next_offset, info.segment_count) == (0, 3, 2)
            assert await j.list_segments("orders") == segments
            assert _fields(await j.read("orders", 0)) == expected
            assert await j.append("orders", [Record(b"v3")]) == AppendResult(3, 3)

    async def test_streams_configs_and_records_survive_reopen(self, open_journal: Opener) -> None:
        configs = {
            "a": StreamConfig(),
            "b": StreamConfig(segment_bytes=4096, retention_ms=60_000, fsync="always"),
            "c/with spaces and ünïcode": StreamConfig(max_batch_bytes=2048, memory_bytes=0),
        }
        async with open_journal(fsync="always") as j:
            for name, config in configs.items():
                await j.create_stream(name, config)
                await j.append(name, [Record(name.encode(), key=b"k")])
            infos = {name: await j.describe_stream(name) for name in configs}
        async with open_journal() as j:
            assert await j.list_streams() == sorted(configs)
            for name, config in configs.items():
                assert await j.describe_stream(name) == infos[name]
                assert (await j.describe_stream(name)).config == config
                [record] = await j.read(name, 0)
                assert (record.offset, record.key, record.value) == (0, b"k", name.encode())

    async def test_create_stream_twice(self, open_journal: Opener) -> None:
        async with open_journal() as j:
            await j.create_stream("s", StreamConfig(segment_bytes=4096))
            await j.append("s", [Record(b"x")])
            with pytest.raises(StreamExistsError, match="'s' already exists") as info:
                await j.create_stream("s")
            assert isinstance(info.value, StrataError)
            assert isinstance(info.value, ValueError)
            # exist_ok keeps the stream as it is: config and records.
            await j.create_stream("s", StreamConfig(segment_bytes=8192), exist_ok=True)
            assert (await j.describe_stream("s")).config == StreamConfig(segment_bytes=4096)
            assert (await j.describe_stream("s")).next_offset == 1
            await j.create_stream("t", exist_ok=True)  # creates when missing
            assert await j.list_streams() == ["s", "t"]

    async def test_delete_stream_wakes_waiters_and_tails_with_stream_deleted(
        self, open_journal: Opener
    ) -> None:
        outcomes: dict[str, type[BaseException]] = {}
        tail_caught_up = trio.Event()
        async with open_journal(fsync="always") as j:
            await j.create_stream("gone")
            await j.create_stream("kept")
            await j.append("gone", [Record(b"x")] * 3)
            await j.roll("gone")
            await j.append("gone", [Record(b"y")])
            await j.append("kept", [Record(b"z")])

            async def tailer() -> None:
                seen = 0
                try:
                    async with tailing(j, "gone", 0) as it:
                        async for _ in it:
                            seen += 1
                            if seen == 4:
                                tail_caught_up.set()
                except StrataError as exc:
                    outcomes["tail"] = type(exc)

            async def waiter() -> None:
                try:
                    await j.wait("gone", 4)
                except StrataError as exc:
                    outcomes["wait"] = type(exc)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(tailer)
                    nursery.start_soon(waiter)
                    await tail_caught_up.wait()
                    await trio.testing.wait_all_tasks_blocked()
                    assert outcomes == {}
                    await j.delete_stream("gone")
                # Both tasks ended by themselves: the nursery is done.
            assert outcomes == {"tail": StreamDeletedError, "wait": StreamDeletedError}

            assert await j.list_streams() == ["kept"]
            assert set((await j.get_statistics()).per_stream) == {"kept"}
            with pytest.raises(UnknownStreamError):
                await j.describe_stream("gone")
            with pytest.raises(UnknownStreamError):
                await j.delete_stream("gone")
            with pytest.raises(UnknownStreamError):
                await j.wait("gone", 0)

    async def test_calls_after_the_service_is_closed_raise_journal_closed(
        self, open_journal: Opener
    ) -> None:
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"x")])
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "append": lambda: j.append("s", [Record(b"y")]),
            "append_batch": lambda: j.append_batch("s", _GOOD),
            "read": lambda: j.read("s", 0),
            "read_batches": lambda: j.read_batches("s", 0),
            "describe_stream": lambda: j.describe_stream("s"),
            "roll": lambda: j.roll("s"),
            "wait": lambda: j.wait("s", 5),
            "tail": lambda: j.tail("s", 0).__anext__(),
        }
        outcomes: dict[str, str] = {}
        for method, call in calls.items():
            try:
                with trio.fail_after(2):
                    await call()
                outcomes[method] = "returned"
            except trio.TooSlowError:
                outcomes[method] = "still blocked after 2 s"
            except StrataError as exc:
                outcomes[method] = type(exc).__name__
        assert outcomes == dict.fromkeys(calls, "JournalClosedError")

    async def test_deleted_name_can_be_reused_for_a_new_empty_stream(
        self, open_journal: Opener
    ) -> None:
        async with open_journal(fsync="always") as j:
            await j.create_stream("gone", StreamConfig(segment_bytes=4096))
            await j.create_stream("kept")
            await j.append("gone", [Record(b"x")] * 3)
            await j.append("kept", [Record(b"z")])
            await j.delete_stream("gone")
            await j.create_stream("gone")
            info = await j.describe_stream("gone")
            assert (info.first_offset, info.next_offset, info.config) == (0, 0, StreamConfig())
            assert await j.read("gone", 0) == []
            assert (await j.get_statistics("gone")).appends == 0
        async with open_journal() as j:
            assert await j.list_streams() == ["gone", "kept"]
            assert (await j.describe_stream("gone")).next_offset == 0
            assert [r.value for r in await j.read("kept", 0)] == [b"z"]

    # -- bad arguments ---------------------------------------------------------------------

    @pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in _BAD_CALLS])
    async def test_bad_arguments_raise_and_change_nothing(
        self, open_journal: Opener, bad: Bad, tmp_path: Path
    ) -> None:
        async with open_journal(fsync="always") as j:
            await _populated(j)
            await _check_refused(j, bad, tmp_path / "data")
        if bad.error is UnknownStreamError:
            assert issubclass(bad.error, KeyError)
        if bad.error is OffsetOutOfRangeError:
            assert issubclass(bad.error, IndexError)

    @pytest.mark.parametrize("count", [2, 4])
    async def test_append_batch_rejects_records_disagreeing_with_header(
        self, open_journal: Opener, count: int, tmp_path: Path
    ) -> None:
        # Header says `count` records (offset deltas 0..count-1): the record area holds 3.
        batch = bytearray(_GOOD)
        struct.pack_into(">i", batch, _LAST_DELTA_AT, count - 1)
        struct.pack_into(">i", batch, _COUNT_AT, count)
        bad = _recrc(batch)
        async with open_journal(fsync="always") as j:
            await _populated(j)
            await _check_refused(
                j,
                Bad(
                    "count", InvalidBatchError, "offset|record", lambda j: j.append_batch("s", bad)
                ),
                tmp_path / "data",
            )

    async def test_offset_out_of_range_carries_the_valid_range(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await _populated(j)
            # (A tail from past the end waits for that offset: only -1 is out of range.)
            calls: list[tuple[Callable[[int], Awaitable[object]], tuple[int, ...]]] = [
                (lambda offset: j.read("s", offset), (-1, 17, 1 << 40)),
                (lambda offset: j.read_batches("s", offset), (-1, 17, 1 << 40)),
                (lambda offset: j.tail("s", offset).__anext__(), (-1,)),
            ]
            for call, offsets in calls:
                for offset in offsets:
                    with pytest.raises(OffsetOutOfRangeError) as caught:
                        await call(offset)
                    assert (caught.value.first_offset, caught.value.next_offset) == (0, 16)
                    assert "valid offsets: 0..16" in str(caught.value)
                    assert isinstance(caught.value, IndexError)

    async def test_unknown_stream_error_reads_plainly(self, open_journal: Opener) -> None:
        async with open_journal() as j:
            with pytest.raises(UnknownStreamError) as caught:
                await j.read("x", 0)
        assert str(caught.value) == "no stream named 'x'"
        assert isinstance(caught.value, KeyError)

    # -- append_batch ----------------------------------------------------------------------

    async def test_append_batch_assigns_offsets_and_keeps_crc(self, open_journal: Opener) -> None:
        first = encode_batch([Record(b"a", key=b"1"), Record(b"b")], 0, now_ms=111)
        second = encode_batch([Record(b"c", headers=[("h", None)])], 0, now_ms=222)
        async with open_journal(fsync="always") as j:
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

    @pytest.mark.parametrize("codec", [pytest.param(0, id="plain"), pytest.param(1, id="gzip")])
    async def test_append_batch_from_kafka_python(self, open_journal: Opener, codec: int) -> None:
        sent: list[tuple[int, bytes | None, bytes | None, list[Any]]] = [
            (1_700_000_000_000, b"k1", b"v1", [("trace", b"t1")]),
            (1_700_000_000_005, None, b"v2", []),
            (1_699_999_999_000, b"k3", None, [("ünï", None)]),
        ]
        raw = _kafka_batch(sent, codec)
        async with open_journal(fsync="always", clock=FakeClock(1_000)) as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"before")] * 2)
            assert await j.append_batch("s", raw) == AppendResult(2, 4)
            records = await j.read("s", 2)
            [stored] = await j.read_batches("s", 2)
            assert await j.offset_for_time("s", 1_700_000_000_001) == 3
            async with tailing(j, "s", 3) as it:
                tailed = await take(it, 2)
        expected = [
            (2 + delta, key, value, headers, ts)
            for delta, (ts, key, value, headers) in enumerate(sent)
        ]
        assert _fields(records) == expected
        assert _fields(tailed) == expected[1:]
        assert stored[8:] == raw[8:]
        # And kafka-python reads back what we serve.
        batch = DefaultRecordBatch(bytearray(stored))
        assert batch.validate_crc()
        assert batch.base_offset == 2
        assert [(r.offset, r.key, r.value) for r in batch] == [
            (2, b"k1", b"v1"),
            (3, None, b"v2"),
            (4, b"k3", None),
        ]

    @pytest.mark.parametrize("codec", [pytest.param(0, id="plain"), pytest.param(1, id="gzip")])
    async def test_kafka_python_batch_with_a_flipped_bit_is_refused(
        self, open_journal: Opener, codec: int, tmp_path: Path
    ) -> None:
        raw = bytearray(_kafka_batch([(T0, b"k", b"value" * 20, [])], codec))
        raw[-3] ^= 0x10
        async with open_journal(fsync="always") as j:
            await _populated(j)
            await _check_refused(
                j,
                Bad("flip", InvalidBatchError, "CRC32C", lambda j: j.append_batch("s", bytes(raw))),
                tmp_path / "data",
            )

    @pytest.mark.parametrize(
        ("codec", "name"), [(2, "snappy"), (3, "lz4"), (4, "zstd")], ids=["snappy", "lz4", "zstd"]
    )
    async def test_batches_in_codecs_the_journal_cannot_decode_are_stored_as_they_are(
        self, open_journal: Opener, codec: int, name: str
    ) -> None:
        # Like a Kafka broker, the journal keeps such a batch opaque: it stores and
        # serves the bytes, but cannot turn them into records.
        raw = _with(
            encode_batch([Record(b"a"), Record(b"b")], now_ms=7), ">h", _ATTRIBUTES_AT, codec
        )
        async with open_journal(fsync="always") as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"plain")])
            assert await j.append_batch("s", raw) == AppendResult(1, 2)
            [stored] = await j.read_batches("s", 1)
            assert stored[8:] == raw[8:]
            assert check_batch(stored).compression == name
            with pytest.raises(UnsupportedCompressionError, match=f"cannot decompress {name}"):
                await j.read("s", 1)
            assert [r.value for r in await j.read("s", 0, max_bytes=1)] == [b"plain"]
            assert (await j.describe_stream("s")).next_offset == 3

    async def test_batch_of_exactly_max_batch_bytes_is_accepted_one_more_is_not(
        self, open_journal: Opener
    ) -> None:
        limit = 64 << 10
        n = _exact_size_value(limit, T0)
        exact = encode_batch([Record(b"e" * n, timestamp=T0)], now_ms=0)
        over = encode_batch([Record(b"e" * (n + 1), timestamp=T0)], now_ms=0)
        assert (len(exact), len(over)) == (limit, limit + 1)
        async with open_journal(fsync="always") as j:
            await j.create_stream("s", StreamConfig(max_batch_bytes=limit))
            assert await j.append_batch("s", exact) == AppendResult(0, 0)
            assert await j.append("s", [Record(b"a" * n, timestamp=T0)]) == AppendResult(1, 1)
            with pytest.raises(BatchTooLargeError, match=f"exceeds max_batch_bytes={limit}"):
                await j.append_batch("s", over)
            with pytest.raises(BatchTooLargeError, match="exceeds max_batch_bytes"):
                await j.append("s", [Record(b"a" * (n + 1), timestamp=T0)])
            batches = await j.read_batches("s", 0)
            records = await j.read("s", 0)
            assert (await j.describe_stream("s")).next_offset == 2
        assert [len(b) for b in batches] == [limit, limit]
        assert [(r.offset, r.value) for r in records] == [(0, b"e" * n), (1, b"a" * n)]

    # -- timestamps and reads --------------------------------------------------------------

    async def test_records_without_timestamp_get_the_journal_clock(
        self, open_journal: Opener
    ) -> None:
        clock = FakeClock(123_456)
        async with open_journal(fsync="none", clock=clock) as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"now"), Record(b"set", timestamp=42)])
            clock.now = 200_000
            await j.append("s", [Record(b"later")])
            records = await j.read("s", 0)
            assert await j.offset_for_time("s", 123_457) == 2
        assert [(r.value, r.timestamp) for r in records] == [
            (b"now", 123_456),
            (b"set", 42),
            (b"later", 200_000),
        ]

    async def test_explicit_timestamps_are_kept_even_negative_ones(
        self, open_journal: Opener
    ) -> None:
        clock = FakeClock(500_000)
        sent = [
            Record(b"a", timestamp=-1),
            Record(b"b", timestamp=-1000),
            Record(b"c"),
            Record(b"d", timestamp=0),
        ]
        async with open_journal(fsync="none", clock=clock) as j:
            await j.create_stream("s")
            await j.append("s", sent)
            await j.append("s", [Record(b"e", timestamp=-1)])
            records = await j.read("s", 0)
            found = [await j.offset_for_time("s", t) for t in (-1, 1)]
        assert [(r.value, r.timestamp) for r in records] == [
            (b"a", -1),
            (b"b", -1000),
            (b"c", 500_000),
            (b"d", 0),
            (b"e", -1),
        ]
        assert found == [0, 2]

    async def test_timestamps_past_any_record_find_nothing(self, open_journal: Opener) -> None:
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"x", timestamp=T0)])
            assert await j.offset_for_time("s", (1 << 63) - 1) is None
            assert await j.offset_for_time("s", 1 << 70) is None
            assert await j.offset_for_time("s", -(1 << 70)) == 0

    async def test_longest_stream_names_are_accepted(self, open_journal: Opener) -> None:
        names = ["x" * 249, "ü" * 249, "🙂" * 249, "with/slash and space", "."]
        async with open_journal() as j:
            for name in names:
                await j.create_stream(name)
                await j.append(name, [Record(name.encode())])
            assert await j.list_streams() == sorted(names)
        async with open_journal() as j:
            assert await j.list_streams() == sorted(names)
            for name in names:
                assert [r.value for r in await j.read(name, 0)] == [name.encode()]
                assert (await j.describe_stream(name)).name == name
                assert (await j.get_statistics(name)).name == name

    async def test_appended_records_are_stored_as_the_journal_encodes_them(
        self, open_journal: Opener
    ) -> None:
        # Byte for byte: no client-side encoding details (placeholders, producer
        # fields, timestamps) leak into what is stored and served to Kafka clients.
        sent = [Record(b"a", b"k", [("h", None)]), Record(b"b", timestamp=5), Record(None)]
        async with open_journal(clock=FakeClock(777)) as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"z")])
            await j.append("s", sent)
            [raw] = await j.read_batches("s", 1)
        assert raw == encode_batch(sent, 1, now_ms=777)
        header = check_batch(raw)
        assert (header.base_offset, header.record_count) == (1, 3)

    async def test_read_at_the_end_is_empty_and_past_it_out_of_range(
        self, open_journal: Opener
    ) -> None:
        async with open_journal() as j:
            await j.create_stream("s")
            assert await j.read("s", 0) == []
            assert await j.read_batches("s", 0) == []
            with pytest.raises(OffsetOutOfRangeError):
                await j.read("s", 1)
            await j.append("s", [Record(b"x")] * 3)
            assert await j.read("s", 3) == []
            assert [r.offset for r in await j.read("s", 2)] == [2]
            with pytest.raises(OffsetOutOfRangeError) as caught:
                await j.read_batches("s", 4)
            assert (caught.value.first_offset, caught.value.next_offset) == (0, 3)

    async def test_read_max_bytes(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=1500))
            for i in range(20):  # equal-sized batches of 4 records
                await j.append("s", [Record(f"{i:02d}-{k}".encode() * 10) for k in range(4)])
            size = len((await j.read_batches("s", 0, max_bytes=1))[0])
            assert (await j.describe_stream("s")).segment_count > 2

            for budget in (0, 1, size - 1, size, size + 1, 2 * size, int(2.5 * size), 7 * size):
                for start in (0, 4, 5, 23, 40):
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

    async def test_sparse_index_finds_every_offset(self, open_journal: Opener) -> None:
        config = StreamConfig(segment_bytes=4096, index_interval_bytes=150)

        async def check_every_offset(j: JournalService, expected: list[bytes]) -> None:
            assert (await j.describe_stream("s")).segment_count > 3
            for offset, value in enumerate(expected):
                [batch] = await j.read_batches("s", offset, max_bytes=1)
                header = check_batch(batch)
                assert header.base_offset <= offset < header.next_offset
                first = (await j.read("s", offset, max_bytes=1))[0]
                assert (first.offset, first.value) == (offset, value)

        async with open_journal(fsync="none") as j:
            await j.create_stream("s", config)
            expected: list[bytes] = []
            for i in range(200):
                n = 1 + i % 3
                batch = [Record(f"r{len(expected) + k}".encode()) for k in range(n)]
                expected += [r.value or b"" for r in batch]
                await j.append("s", batch)
            await check_every_offset(j, expected)
        async with open_journal() as j:  # indexes loaded from their files
            await check_every_offset(j, expected)

    # -- segments --------------------------------------------------------------------------

    async def test_roll_seals_the_active_segment(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await j.create_stream("s")
            assert await j.list_segments("s") == [SegmentInfo(0, -1, "memory", 0)]
            await j.roll("s")  # empty: nothing to seal
            assert len(await j.list_segments("s")) == 1
            await j.append("s", [Record(b"a")] * 3)
            await j.roll("s")
            await j.append("s", [Record(b"b")] * 2)
            await j.roll("s")
            await j.append("s", [Record(b"c")])
            segments = await j.list_segments("s")
            assert [(s.base_offset, s.last_offset, s.tier) for s in segments] == [
                (0, 2, "local"),
                (3, 4, "local"),
                (5, 5, "memory"),
            ]
            assert all(s.key is None and s.quarantined is None for s in segments)
            info = await j.describe_stream("s")
            assert info.segment_count == 3
            assert info.size_bytes == sum(s.size_bytes for s in segments)
            assert [r.value for r in await j.read("s", 0)] == [b"a"] * 3 + [b"b"] * 2 + [b"c"]
        async with open_journal() as j:
            assert await j.list_segments("s") == segments

    async def test_segments_roll_by_size(self, open_journal: Opener) -> None:
        segment_bytes = 2048
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=segment_bytes))
            counts = []
            for i in range(100):
                await j.append("s", [Record(f"value-{i:04d}".encode() * 8, key=b"k")])
                counts.append((await j.describe_stream("s")).segment_count)
            info = await j.describe_stream("s")
            segments = await j.list_segments("s")
            records = await read_all(j, "s", 0)
        assert counts == sorted(counts)
        assert info.segment_count == len(segments) > 4
        assert all(0 < s.size_bytes <= segment_bytes for s in segments)
        assert sum(s.size_bytes for s in segments) == info.size_bytes
        assert segments[0].base_offset == 0
        for prev, nxt in itertools.pairwise(segments):
            assert nxt.base_offset == prev.last_offset + 1
        assert segments[-1].last_offset == 99
        assert [r.offset for r in records] == list(range(100))
        assert [r.value for r in records] == [f"value-{i:04d}".encode() * 8 for i in range(100)]

    async def test_segments_roll_by_age_on_append_and_on_retention(
        self, open_journal: Opener
    ) -> None:
        clock = FakeClock(10_000)
        async with open_journal(fsync="always", clock=clock) as j:
            await j.create_stream("s", StreamConfig(segment_ms=1000))

            async def bases() -> list[int]:
                return [s.base_offset for s in await j.list_segments("s")]

            await j.append("s", [Record(b"0")])
            clock.now += 999
            await j.append("s", [Record(b"1")])
            assert await j.apply_retention() == 0
            assert await bases() == [0]
            clock.now += 1  # the first write is now segment_ms old: the next append rolls
            await j.append("s", [Record(b"2")])
            assert await bases() == [0, 2]
            clock.now += 1000
            assert await j.apply_retention() == 0  # rolls the aged segment, removes nothing
            assert await bases() == [0, 2, 3]
            clock.now += 5000
            assert await j.apply_retention() == 0  # an empty active segment never rolls
            assert await bases() == [0, 2, 3]
            assert [r.value for r in await j.read("s", 0)] == [b"0", b"1", b"2"]

    # -- retention -------------------------------------------------------------------------

    async def test_retention_by_bytes(self, open_journal: Opener) -> None:
        retention = 3000
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=1000, retention_bytes=retention))
            for i in range(100):
                await j.append("s", [Record(f"{i:03d}".encode() * 10)])
            segments = await j.list_segments("s")
            sizes = [s.size_bytes for s in segments]
            # The fewest oldest segments whose removal brings the total within the limit.
            keep_from = next(k for k in range(len(sizes)) if sum(sizes[k:]) <= retention)
            assert keep_from > 0

            assert await j.apply_retention("s") == keep_from
            first = segments[keep_from].base_offset
            info = await j.describe_stream("s")
            assert (info.first_offset, info.next_offset) == (first, 100)
            assert info.segment_count == len(sizes) - keep_from
            assert info.size_bytes == sum(sizes[keep_from:]) <= retention
            assert await j.list_segments("s") == segments[keep_from:]
            assert (await j.get_statistics("s")).first_offset == first

            with pytest.raises(OffsetOutOfRangeError) as caught:
                await j.read("s", first - 1)
            assert (caught.value.first_offset, caught.value.next_offset) == (first, 100)
            with pytest.raises(OffsetOutOfRangeError):
                await j.read_batches("s", 0)
            with pytest.raises(OffsetOutOfRangeError):
                await j.tail("s", 0).__anext__()
            records = await read_all(j, "s", first)
            assert [r.offset for r in records] == list(range(first, 100))
            assert await j.offset_for_time("s", 0) == first
            assert await j.apply_retention("s") == 0  # idempotent

        async with open_journal() as j:  # the removal is durable
            assert (await j.describe_stream("s")).first_offset == first

    async def test_retention_never_removes_the_active_segment(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=500, retention_bytes=0))
            for i in range(20):
                await j.append("s", [Record(b"x" * 100, key=str(i).encode())])
            active_base = (await j.list_segments("s"))[-1].base_offset
            assert active_base > 0
            assert await j.apply_retention() > 0
            info = await j.describe_stream("s")
            assert info.segment_count == 1
            assert info.size_bytes > 0  # over the limit, but it is the active segment
            assert info.first_offset == active_base
            assert [s.base_offset for s in await j.list_segments("s")] == [active_base]
            assert (await j.read("s", active_base))[0].key == str(active_base).encode()

            await j.roll("s")  # now the only data is sealed: it goes, the new empty one stays
            assert await j.apply_retention() == 1
            info = await j.describe_stream("s")
            assert (info.first_offset, info.next_offset, info.segment_count) == (20, 20, 1)
            assert await j.read("s", 20) == []
            assert await j.append("s", [Record(b"new")]) == AppendResult(20, 20)

    async def test_retention_by_time(self, open_journal: Opener) -> None:
        clock = FakeClock(100_000)
        async with open_journal(fsync="none", clock=clock) as j:
            await j.create_stream("s", StreamConfig(retention_ms=40_000))
            await j.append("s", [Record(b"a", timestamp=10_000 + i) for i in range(10)])
            await j.roll("s")  # segment 0: newest record 10_009
            await j.append("s", [Record(b"b", timestamp=60_000), Record(b"b", timestamp=50_000)])
            await j.roll("s")  # segment 10: newest record 60_000 (not the last one)
            await j.append("s", [Record(b"c", timestamp=1)])  # active, and very old
            # Cut-off 100_000 - 40_000 = 60_000: only segments newest < 60_000 go.
            assert await j.apply_retention() == 1
            assert (await j.describe_stream("s")).first_offset == 10
            assert [s.base_offset for s in await j.list_segments("s")] == [10, 12]
            assert await j.apply_retention() == 0
            clock.now += 1
            assert await j.apply_retention() == 1
            info = await j.describe_stream("s")
            assert (info.first_offset, info.segment_count) == (12, 1)  # the active one stays
            with pytest.raises(OffsetOutOfRangeError):
                await j.read("s", 11)
            assert [r.value for r in await j.read("s", 12)] == [b"c"]

    async def test_retention_by_time_after_reopen(self, open_journal: Opener) -> None:
        clock = FakeClock(1_850)  # cut-off 850: the segment's newest record (900) is younger
        config = StreamConfig(retention_ms=1_000, index_interval_bytes=1)
        async with open_journal(fsync="none", clock=clock) as j:
            await j.create_stream("s", config)
            for ts in (100, 200, 300, 900, 400):  # the peak is in the next-to-last batch
                await j.append("s", [Record(b"x", timestamp=ts)])
            await j.roll("s")
            await j.append("s", [Record(b"y", timestamp=1_000)])
            assert await j.apply_retention() == 0
        async with open_journal(fsync="none", clock=clock) as j:
            assert await j.apply_retention() == 0
            assert (await j.describe_stream("s")).first_offset == 0
            clock.now = 1_901  # cut-off 901: now the sealed segment goes
            assert await j.apply_retention() == 1
            assert (await j.describe_stream("s")).first_offset == 5

    async def test_apply_retention_without_a_name_covers_every_stream(
        self, open_journal: Opener
    ) -> None:
        async with open_journal(fsync="none") as j:
            for name in ("a", "b", "unlimited"):
                limit = None if name == "unlimited" else 0
                await j.create_stream(name, StreamConfig(retention_bytes=limit))
                await j.append(name, [Record(b"x")])
                await j.roll(name)
                await j.append(name, [Record(b"y")])
            assert await j.apply_retention() == 2
            firsts = [(await j.describe_stream(n)).first_offset for n in ("a", "b", "unlimited")]
            assert firsts == [1, 1, 0]

    async def test_tail_keeps_working_while_older_segments_are_removed(
        self, open_journal: Opener
    ) -> None:
        got: list[Record] = []
        caught_up = {i: trio.Event() for i in range(20, 40)}
        async with open_journal(fsync="always") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=400, retention_bytes=800))
            for i in range(20):
                await j.append("s", [Record(f"{i}".encode() * 50)])
            start = (await j.list_segments("s"))[-1].base_offset  # the active segment's base

            async def reader() -> None:
                async with tailing(j, "s", start) as it:
                    async for record in it:
                        got.append(record)
                        assert record.offset is not None
                        if record.offset in caught_up:
                            caught_up[record.offset].set()
                        if len(got) == 40 - start:
                            return

            removed = 0
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    for i in range(20, 40):
                        await j.append("s", [Record(f"{i}".encode() * 50)])
                        if i % 5 == 0:
                            await caught_up[i].wait()  # the tail caught up
                            removed += await j.apply_retention()
            # Segments were removed behind the tail, including the one it started in.
            assert removed > 2
            assert (await j.describe_stream("s")).first_offset > start
        assert [r.offset for r in got] == list(range(start, 40))
        assert [r.value for r in got] == [f"{i}".encode() * 50 for i in range(start, 40)]

    # -- offset_for_time -------------------------------------------------------------------

    async def test_offset_for_time(self, open_journal: Opener) -> None:
        # Timestamps jump around within batches, between batches and between segments.
        pattern = [500, 100, 900, 300, 300, 1200, 50, 700, 1100, 1000, 2000, 10, 1500, 1999]
        stamps: list[tuple[int, int]] = []
        config = StreamConfig(segment_bytes=600, index_interval_bytes=100)
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", config)
            assert await j.offset_for_time("s", 0) is None  # empty
            offset = 0
            for round_ in range(6):
                for i in range(0, len(pattern), 3):
                    tss = [ts + 2000 * round_ for ts in pattern[i : i + 3]]
                    res = await j.append("s", [Record(b"v" * 20, timestamp=ts) for ts in tss])
                    assert res.base_offset == offset
                    stamps += [(offset + k, ts) for k, ts in enumerate(tss)]
                    offset += len(tss)
            assert (await j.describe_stream("s")).segment_count > 3
            probes = sorted({t + d for _, t in stamps for d in (-1, 0, 1)} | {-5, 0, 10**12})
            for t in probes:
                assert await j.offset_for_time("s", t) == _first_at_or_after(stamps, t), t
            assert await j.offset_for_time("s", -5) == 0  # before everything: the first offset
            assert await j.offset_for_time("s", max(ts for _, ts in stamps) + 1) is None
        async with open_journal() as j:  # time indexes loaded from their files
            for t in probes:
                assert await j.offset_for_time("s", t) == _first_at_or_after(stamps, t), t

    async def test_offset_for_time_after_retention(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=300, retention_bytes=700))
            for i in range(30):
                await j.append("s", [Record(b"v" * 40, timestamp=1000 + i)])
            assert await j.apply_retention() > 0
            first = (await j.describe_stream("s")).first_offset
            assert first > 0
            assert await j.offset_for_time("s", 0) == first
            assert await j.offset_for_time("s", 1000 + first) == first
            assert await j.offset_for_time("s", 1000 + first + 1) == first + 1
            assert await j.offset_for_time("s", 1030) is None
        async with open_journal() as j:
            assert await j.offset_for_time("s", 0) == first
            assert await j.offset_for_time("s", 1000 + first + 1) == first + 1

    async def test_offset_for_time_after_reopen(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(index_interval_bytes=1))
            for ts in (100, 200, 300, 900, 400):
                await j.append("s", [Record(b"x", timestamp=ts)])
            assert await j.offset_for_time("s", 500) == 3
        async with open_journal(fsync="none") as j:
            assert await j.offset_for_time("s", 500) == 3
            assert await j.offset_for_time("s", 901) is None

    # -- wait and tail ---------------------------------------------------------------------

    @pytest.mark.parametrize("policy", ["always", "none"])
    async def test_tail_and_wait_at_the_end_wake_on_append_without_polling(
        self, open_journal: Opener, mock_clock: trio.testing.MockClock, policy: FsyncPolicy
    ) -> None:
        # Trio time only moves if everything is stuck for 5 real seconds; a tail or
        # waiter that polled with sleeps would make it move (checked at the end).
        mock_clock.autojump_threshold = 5.0
        received: list[Record] = []
        first_seen, second_seen, waited = trio.Event(), trio.Event(), trio.Event()
        async with open_journal(fsync=policy) as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"old")])
            start = trio.current_time()

            async def tail_reader() -> None:
                async with tailing(j, "s", 1) as it:
                    async for record in it:
                        received.append(record)
                        (first_seen if len(received) == 1 else second_seen).set()
                        if len(received) == 2:
                            return

            async def waiter() -> None:
                await j.wait("s", 1)
                waited.set()

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(tail_reader)
                    nursery.start_soon(waiter)
                    await trio.testing.wait_all_tasks_blocked()
                    assert received == []
                    assert not waited.is_set()

                    await j.append("s", [Record(b"new", key=b"k")])
                    await first_seen.wait()
                    await waited.wait()
                    assert [(r.offset, r.key, r.value) for r in received] == [(1, b"k", b"new")]

                    await j.append("s", [Record(b"newer")])
                    await second_seen.wait()
            assert [r.value for r in received] == [b"new", b"newer"]
            assert trio.current_time() == start

    async def test_wait_returns_at_once_for_readable_offsets(self, open_journal: Opener) -> None:
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"x")] * 5)
            with trio.fail_after(10):
                for offset in (-5, -1, *range(5)):
                    await j.wait("s", offset)

    async def test_cancelled_waits_and_closed_tails_leave_the_service_working(
        self, open_journal: Opener
    ) -> None:
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"x")] * 3)
            with trio.fail_after(20):
                for _ in range(10):  # tails closed after one record, before the end
                    async with tailing(j, "s", 0) as it:
                        assert [r.offset for r in await take(it, 1)] == [0]
                async with trio.open_nursery() as nursery:  # waits and tails cancelled
                    nursery.start_soon(j.wait, "s", 100)
                    for _ in range(5):
                        nursery.start_soon(take, j.tail("s", 3), 1)
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.cancel_scope.cancel()
                assert await j.append("s", [Record(b"y")]) == AppendResult(3, 3)
                await j.wait("s", 3)
                async with tailing(j, "s", 2) as it:
                    assert [r.value for r in await take(it, 2)] == [b"x", b"y"]
                assert (await j.get_statistics("s")).appends == 2

    async def test_tail_from_past_the_end_waits_for_that_offset(self, open_journal: Opener) -> None:
        got: list[Record] = []
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"x")] * 2)

            async def reader() -> None:
                async with tailing(j, "s", 5) as it:
                    got.extend(await take(it, 2))

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    for i in range(2, 7):
                        await trio.testing.wait_all_tasks_blocked()
                        assert got == []
                        await j.append("s", [Record(b"%d" % i)])
        assert [(r.offset, r.value) for r in got] == [(5, b"5"), (6, b"6")]

    async def test_tail_from_inside_a_batch_starts_at_that_offset(
        self, open_journal: Opener
    ) -> None:
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(f"r{i}".encode()) for i in range(10)])
            with trio.fail_after(10):
                async with tailing(j, "s", 7) as it:
                    got = await take(it, 3)
        assert [(r.offset, r.value) for r in got] == [(7, b"r7"), (8, b"r8"), (9, b"r9")]

    async def test_tail_readers_see_every_record_once_in_order(self, open_journal: Opener) -> None:
        prefill = 100
        plan = _plan("tail", 10, 20)
        total = prefill + sum(sum(counts) for counts in plan.values())
        seen: dict[int, list[Record]] = {}
        async with open_journal(fsync="interval", fsync_interval_ms=1) as j:
            await j.create_stream("s")
            for i in range(0, prefill, 4):  # batches of 4: offset 50 is inside one
                await j.append("s", [Record(f"pre{i + k}".encode()) for k in range(4)])
            starts = [0, 50, 51, prefill]

            async def reader(start: int) -> None:
                async with tailing(j, "s", start) as it:
                    seen[start] = await take(it, total - start)

            async def writer(task: int) -> None:
                for seq, n in enumerate(plan[task]):
                    await j.append("s", _records(task, seq, n))

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for start in starts:
                        nursery.start_soon(reader, start)
                    for task in plan:
                        nursery.start_soon(writer, task)
            truth = await read_all(j, "s")

        assert len(truth) == total
        for start in starts:
            got = seen[start]
            assert [r.offset for r in got] == list(range(start, total)), f"tail from {start}"
            assert [(r.key, r.value) for r in got] == [(r.key, r.value) for r in truth[start:]]

    # -- concurrency -----------------------------------------------------------------------

    @pytest.mark.parametrize("policy", ["always", "interval", "none"])
    async def test_many_tasks_append_to_one_stream(
        self, open_journal: Opener, policy: FsyncPolicy
    ) -> None:
        n_tasks, appends_per_task = 30, 20
        plan = _plan(policy, n_tasks, appends_per_task)
        total = sum(sum(counts) for counts in plan.values())
        results: dict[int, list[AppendResult]] = defaultdict(list)
        visible_at_ack: list[bool] = []

        async with open_journal(fsync=policy, fsync_interval_ms=2) as j:
            await j.create_stream("s")

            async def writer(task: int) -> None:
                for seq, n in enumerate(plan[task]):
                    res = await j.append("s", _records(task, seq, n))
                    results[task].append(res)
                    # Acknowledged means readable: the committed limit is past it.
                    info = await j.describe_stream("s")
                    visible_at_ack.append(info.next_offset > res.last_offset)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for task in range(n_tasks):
                        nursery.start_soon(writer, task)

            records = await read_all(j, "s")
            stats = await j.get_statistics("s")
            info = await j.describe_stream("s")

        # Offsets are contiguous 0..N-1: no gaps, no duplicates.
        assert [r.offset for r in records] == list(range(total))
        assert info.next_offset == total
        assert all(visible_at_ack)
        assert len(visible_at_ack) == n_tasks * appends_per_task

        # Every record present exactly once, each task's in its append order.
        values = Counter(r.value for r in records)
        assert all(count == 1 for count in values.values())
        per_task: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for r in records:
            assert r.value is not None
            task, seq, i = map(int, r.value.decode().split(":"))
            per_task[task].append((seq, i))
        for task, counts in plan.items():
            assert per_task[task] == [(seq, i) for seq, n in enumerate(counts) for i in range(n)]

        # The tasks really ran concurrently: their appends interleave in the log.
        owners = [int(r.value.split(b":")[0]) for r in records if r.value is not None]
        assert 1 + sum(a != b for a, b in itertools.pairwise(owners)) > n_tasks

        # AppendResults cover exactly the records of their append, without overlap.
        spans = []
        for task, task_results in results.items():
            assert len(task_results) == appends_per_task
            for seq, res in enumerate(task_results):
                n = plan[task][seq]
                assert res.last_offset - res.base_offset + 1 == n
                got = records[res.base_offset : res.last_offset + 1]
                assert [r.value for r in got] == [f"{task}:{seq}:{i}".encode() for i in range(n)]
                spans.append((res.base_offset, res.last_offset))
        spans.sort()
        assert (spans[0][0], spans[-1][1]) == (0, total - 1)
        for (_, last), (base, _) in itertools.pairwise(spans):
            assert base == last + 1
        assert (stats.appends, stats.records) == (n_tasks * appends_per_task, total)

        # Everything acknowledged is still there after a clean reopen.
        async with open_journal() as j:
            again = await read_all(j, "s")
        assert [(r.offset, r.key, r.value) for r in again] == [
            (r.offset, r.key, r.value) for r in records
        ]

    async def test_concurrent_appends_share_fsyncs(self, open_journal: Opener) -> None:
        n_tasks, appends_per_task = 20, 10
        async with open_journal(fsync="always") as j:
            await j.create_stream("s")

            async def writer(task: int) -> None:
                for seq in range(appends_per_task):
                    await j.append("s", _records(task, seq, 1))

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for task in range(n_tasks):
                        nursery.start_soon(writer, task)
            stats = await j.get_statistics("s")
        assert stats.appends == n_tasks * appends_per_task
        # Group commit: one fsync serves many appends that arrived together.
        assert 1 <= stats.fsyncs < n_tasks * appends_per_task
        assert stats.fsync_latency.count == stats.fsyncs

    async def test_appends_racing_a_delete_succeed_or_fail_cleanly(
        self, open_journal: Opener
    ) -> None:
        outcomes: Counter[str] = Counter()
        started = trio.Event()
        async with open_journal(fsync="always") as j:
            await j.create_stream("s")
            await j.create_stream("other")

            async def writer(task: int) -> None:
                for seq in range(50):
                    try:
                        await j.append("s", _records(task, seq, 2))
                        outcomes["ok"] += 1
                        started.set()
                    except (StreamDeletedError, UnknownStreamError) as exc:
                        outcomes[type(exc).__name__] += 1
                        return

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for task in range(10):
                        nursery.start_soon(writer, task)
                    await started.wait()
                    await j.delete_stream("s")
            assert outcomes["ok"] >= 1
            assert sum(outcomes.values()) - outcomes["ok"] == 10  # every writer stopped
            assert set(outcomes) <= {"ok", "StreamDeletedError", "UnknownStreamError"}
            assert await j.list_streams() == ["other"]
            assert await j.append("other", [Record(b"x")]) == AppendResult(0, 0)

    async def test_ten_streams_appended_in_parallel(self, open_journal: Opener) -> None:
        n_streams, tasks_per_stream, appends = 10, 4, 10
        completions: list[str] = []
        plans = {s: _plan(f"stream{s}", tasks_per_stream, appends) for s in range(n_streams)}
        async with open_journal(fsync="interval", fsync_interval_ms=1) as j:
            for s in range(n_streams):
                config = StreamConfig(fsync="always") if s % 2 == 0 else StreamConfig()
                await j.create_stream(f"s{s}", config)

            async def writer(s: int, task: int) -> None:
                for seq, n in enumerate(plans[s][task]):
                    await j.append(f"s{s}", _records(task, seq, n, tag=f"s{s}/"))
                    completions.append(f"s{s}")

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for s in range(n_streams):
                        for task in range(tasks_per_stream):
                            nursery.start_soon(writer, s, task)

            contents = {s: await read_all(j, f"s{s}") for s in range(n_streams)}
            stats = await j.get_statistics()

        for s, records in contents.items():
            total = sum(sum(counts) for counts in plans[s].values())
            assert [r.offset for r in records] == list(range(total)), f"stream s{s}"
            expected = sorted(
                f"s{s}/{task}:{seq}:{i}".encode()
                for task, counts in plans[s].items()
                for seq, n in enumerate(counts)
                for i in range(n)
            )
            assert sorted(r.value or b"" for r in records) == expected, f"stream s{s}"
        # Appends to different streams completed interleaved, not stream after stream.
        assert sum(a != b for a, b in itertools.pairwise(completions)) > 2 * n_streams
        assert stats.appends == n_streams * tasks_per_stream * appends
        assert stats.streams == n_streams

    async def test_readers_never_block_writers(self, open_journal: Opener) -> None:
        plan = _plan("readers", 10, 20)
        total = sum(sum(counts) for counts in plan.values())
        writers_done = trio.Event()
        pass_ends: dict[int, list[int]] = defaultdict(list)

        async with open_journal(fsync="always") as j:
            await j.create_stream("s", StreamConfig(segment_bytes=4 << 10))

            async def writer(task: int) -> None:
                for seq, n in enumerate(plan[task]):
                    await j.append("s", _records(task, seq, n))

            async def reader(r: int) -> None:
                while True:
                    done = writers_done.is_set()
                    records = await read_all(j, "s", max_bytes=2048)
                    # Each pass sees a contiguous prefix of the stream.
                    assert [rec.offset for rec in records] == list(range(len(records)))
                    pass_ends[r].append(len(records))
                    if done:
                        return

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for r in range(3):
                        nursery.start_soon(reader, r)
                    async with trio.open_nursery() as writers:
                        for task in plan:
                            writers.start_soon(writer, task)
                    writers_done.set()

            assert (await j.describe_stream("s")).next_offset == total
            assert (await j.describe_stream("s")).segment_count > 1

        for ends in pass_ends.values():
            assert ends == sorted(ends)  # the stream only grows
            assert ends[-1] == total
            assert any(0 < end < total for end in ends)

    # -- unusual records -------------------------------------------------------------------

    async def test_unusual_records_round_trip(self, open_journal: Opener) -> None:
        big = bytes(range(256)) * 4096  # 1 MiB
        sent = [
            Record(None, None),
            Record(b"", b""),
            Record(b"v", None, [("ключ", "значение".encode()), ("emoji 🙂", None), ("", b"")]),
            Record(None, b"k", [("dup", b"1"), ("dup", b"2")], timestamp=0),
            Record(big, b"big", timestamp=1_234_567_890_123),
            Record(b"\x00" * 3, b"\xff"),
            Record(bytes(range(256)), bytes(range(255, -1, -1)), [("bin", bytes(range(256)))]),
        ]
        async with open_journal(fsync="always") as j:
            await j.create_stream("s")
            assert await j.append("s", sent) == AppendResult(0, len(sent) - 1)
            got = await j.read("s", 0)
            async with tailing(j, "s", 0) as it:
                tailed = await take(it, len(sent))
        for records in (got, tailed):
            assert [r.offset for r in records] == list(range(len(sent)))
            for r, s in zip(records, sent, strict=True):
                assert (r.key, r.value, r.headers) == (s.key, s.value, s.headers)
                if s.timestamp is not None:
                    assert r.timestamp == s.timestamp
        async with open_journal() as j:
            again = await j.read("s", 4, max_bytes=10)
        assert again[0].value == big

    async def test_many_headers_round_trip(self, open_journal: Opener) -> None:
        headers = [
            (f"h{i}", None if i % 7 == 0 else bytes([i % 256]) * (i % 50)) for i in range(1000)
        ]
        async with open_journal() as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"v", b"k", headers), Record(b"w", None, headers[:1])])
            records = await j.read("s", 0)
        assert [r.headers for r in records] == [headers, headers[:1]]

    async def test_value_near_max_batch_bytes_round_trips(self, open_journal: Opener) -> None:
        limit = 4 << 20
        n = _exact_size_value(limit, T0, b"k")
        value = bytes(random.Random(1).getrandbits(8) for _ in range(256)) * (n // 256) + b"z" * (
            n % 256
        )
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(max_batch_bytes=limit))
            assert await j.append("s", [Record(value, b"k", timestamp=T0)]) == AppendResult(0, 0)
            [batch] = await j.read_batches("s", 0)
            [record] = await j.read("s", 0, max_bytes=1)
        assert len(batch) == limit
        assert (record.key, record.value, record.timestamp) == (b"k", value, T0)

    async def test_records_read_back_can_be_appended_again_unchanged(
        self, open_journal: Opener
    ) -> None:
        sent = [Record(b"a", b"k", [("h", b"v")]), Record(b"b", timestamp=7)]
        async with open_journal(clock=FakeClock(9_000)) as j:
            await j.create_stream("src")
            await j.create_stream("dst")
            await j.append("dst", [Record(b"first")])
            await j.append("src", sent)
            # The caller's records are not modified by an append.
            assert sent == [Record(b"a", b"k", [("h", b"v")]), Record(b"b", timestamp=7)]
            copied = await j.read("src", 0)
            # Offsets on appended records are ignored; timestamps are kept.
            assert await j.append("dst", copied) == AppendResult(1, 2)
            got = await j.read("dst", 1)
        assert _fields(got) == [(1, b"k", b"a", [("h", b"v")], 9_000), (2, None, b"b", [], 7)]

    async def test_batch_larger_than_16_mib_round_trips(self, open_journal: Opener) -> None:
        # max_batch_bytes is the stream's limit; nothing else caps one batch.
        value = bytes(range(256)) * (17 << 12)  # 17 MiB
        async with open_journal(fsync="none") as j:
            await j.create_stream("s", StreamConfig(max_batch_bytes=24 << 20))
            await j.append("s", [Record(b"small")])
            assert await j.append("s", [Record(value, b"big")]) == AppendResult(1, 1)
            [record] = await j.read("s", 1)
            assert (record.key, record.value) == (b"big", value)
            async with tailing(j, "s", 0) as it:
                tailed = await take(it, 2)
            assert [r.value for r in tailed] == [b"small", value]

    async def test_reads_with_budgets_larger_than_16_mib(self, open_journal: Opener) -> None:
        chunk = bytes(range(256)) * 4096  # 1 MiB
        async with open_journal(fsync="none") as j:
            await j.create_stream("s")
            for i in range(24):
                await j.append("s", [Record(chunk, b"%02d" % i)])
            size = len((await j.read_batches("s", 0, max_bytes=1))[0])
            batches = await j.read_batches("s", 0, max_bytes=32 << 20)
            assert len(batches) == 24
            batches = await j.read_batches("s", 2, max_bytes=20 * size)
            assert len(batches) == 20
            records = await j.read("s", 0, max_bytes=32 << 20)
            assert [r.key for r in records] == [b"%02d" % i for i in range(24)]
            async with tailing(j, "s", 0) as it:
                tailed = await take(it, 24)
            assert [r.key for r in tailed] == [b"%02d" % i for i in range(24)]

    async def test_append_larger_than_max_batch_bytes_is_split(self, open_journal: Opener) -> None:
        sent = [Record(f"{i:03d}".encode() * 30, key=str(i).encode()) for i in range(50)]
        async with open_journal(fsync="always") as j:
            await j.create_stream("s", StreamConfig(max_batch_bytes=1024))
            await j.append("s", [Record(b"first")])
            assert await j.append("s", sent) == AppendResult(1, 50)
            assert await j.append("s", [Record(b"last")]) == AppendResult(51, 51)
            batches = await j.read_batches("s", 1)
            records = await j.read("s", 0)
            stats = await j.get_statistics("s")
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

    # -- against a model -------------------------------------------------------------------

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=_OPS)
    async def test_reads_match_a_list_model_through_appends_rolls_reopens_and_migrations(
        self, kind: str, ops: list[tuple[str, list[bytes]]]
    ) -> None:
        model: list[bytes] = []
        with tempfile.TemporaryDirectory() as tmp:
            options: dict[str, Any] = {"fsync": "none", "object_url": f"file://{tmp}/objects"}
            pending = list(ops)
            while True:
                async with open_service(kind, Path(tmp) / "data", **options) as j:
                    await j.create_stream("m", _MODEL_CONFIG, exist_ok=True)
                    await _check_against_model(j, model)
                    while pending:
                        op, values = pending.pop(0)
                        if op == "reopen":
                            break
                        if op == "append":
                            res = await j.append("m", [Record(v) for v in values])
                            assert res == AppendResult(len(model), len(model) + len(values) - 1)
                            model += values
                        elif op == "append_batch":
                            raw = encode_batch([Record(v) for v in values], now_ms=1)
                            res = await j.append_batch("m", raw)
                            assert res == AppendResult(len(model), len(model) + len(values) - 1)
                            model += values
                        elif op == "roll":
                            await j.roll("m")
                        elif op == "migrate":
                            await j.migrate("m")
                            assert all(s.tier != "local" for s in await j.list_segments("m"))
                        else:
                            assert await j.apply_retention("m") == 0  # no retention limit
                        await _check_against_model(j, model)
                    assert await j.verify("m") == []
                if not pending:
                    break

    # -- statistics ------------------------------------------------------------------------

    async def test_statistics_counters_move(self, open_journal: Opener) -> None:
        async with open_journal(fsync="none") as j:
            await j.create_stream("a", StreamConfig(fsync="always"))
            await j.create_stream("b")
            zero = await j.get_statistics("a")
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
            a, b = await j.get_statistics("a"), await j.get_statistics("b")
            assert (a.appends, a.records, a.next_offset) == (5, 15, 15)
            assert (b.appends, b.records, b.next_offset) == (5, 5, 5)
            a_bytes = sum(len(x) for x in await j.read_batches("a", 0))
            assert a.bytes_appended == a_bytes == a.size_bytes
            assert 1 <= a.fsyncs <= 5
            assert a.fsync_latency.count == a.fsyncs
            assert b.fsyncs == 0  # fsync="none" until a roll or close

            await j.roll("b")
            b = await j.get_statistics("b")
            assert (b.segments, b.fsyncs) == (2, 1)
            await j.append_batch("b", _GOOD)
            b = await j.get_statistics("b")
            assert (b.appends, b.records, b.bytes_appended) == (6, 8, b.size_bytes)

            total = await j.get_statistics()
            per = total.per_stream
            assert per == {"a": await j.get_statistics("a"), "b": await j.get_statistics("b")}
            assert total.streams == 2
            for field in (
                "appends",
                "records",
                "bytes_appended",
                "fsyncs",
                "segments",
                "size_bytes",
            ):
                assert getattr(total, field) == sum(getattr(s, field) for s in per.values()), field
            assert total.fsync_latency.count == total.fsyncs
            assert total.fsync_latency.counts == [
                x + y
                for x, y in zip(
                    per["a"].fsync_latency.counts, per["b"].fsync_latency.counts, strict=True
                )
            ]

            await j.delete_stream("b")
            total = await j.get_statistics()
            assert (total.streams, total.appends, total.records) == (1, 5, 15)

    async def test_statistics_are_the_journal_stats_records(
        self, open_journal: Opener, tmp_path: Path
    ) -> None:
        async with open_journal(fsync="always") as j:
            await j.create_stream("s")
            await j.append("s", [Record(b"x")])
            one = await j.get_statistics("s")
            total = await j.get_statistics()
        assert type(one) is StreamStatistics
        assert type(total) is JournalStatistics
        assert total.tiering is None  # no object tier
        for stats in (one, total.per_stream["s"]):
            assert type(stats) is StreamStatistics
            assert stats.name == "s"
        for histogram in (one.fsync_latency, total.fsync_latency):
            assert type(histogram) is LatencyHistogram
            assert histogram.bounds == FSYNC_BUCKETS
            assert type(histogram.bounds) is tuple
            assert len(histogram.counts) == len(FSYNC_BUCKETS) + 1
            assert sum(histogram.counts) == histogram.count >= 1
            assert isinstance(histogram.total, float)
        assert list(total.per_stream) == ["s"]

        async with open_journal(object_url=f"file://{tmp_path}/objects") as j:
            tiering = (await j.get_statistics()).tiering
        assert type(tiering) is TieringStatistics
        assert tiering.object_url == f"file://{tmp_path}/objects"
        assert (tiering.uploads, tiering.upload_failures, tiering.last_error) == (0, 0, None)

    # -- the object tier -------------------------------------------------------------------

    async def test_migrate_moves_sealed_segments_and_reads_stay_byte_identical(
        self, open_journal: Opener, tmp_path: Path
    ) -> None:
        url = f"file://{tmp_path}/objects"
        config = StreamConfig(
            segment_bytes=2048,
            local_retention_bytes=0,
            local_retention_ms=None,
            memory_bytes=0,
            index_interval_bytes=128,
        )
        expected: list[Record] = []

        async def append(j: JournalService, offsets: range) -> None:
            for at in range(offsets.start, offsets.stop, 3):
                group = [
                    Record(
                        b"%06d|" % i * (5 + i % 5), b"key-%d" % i, [("i", b"%d" % i)], T0 + i // 3
                    )
                    for i in range(at, min(at + 3, offsets.stop))
                ]
                res = await j.append("o", group)
                assert res.base_offset == at
                expected.extend(dataclasses.replace(r, offset=at + n) for n, r in enumerate(group))

        async with open_journal(fsync="none", object_url=url) as j:
            await j.create_stream("o", config)
            await append(j, range(90))
            before = await j.list_segments("o")
            sealed = before[:-1]
            assert len(sealed) >= 3
            assert all(s.tier == "local" for s in sealed)
            batches = await _batches(j, "o", 0, 90)
            assert await j.migrate("o") == len(sealed)
            assert await j.migrate() == 0  # nothing more is due

            await append(j, range(90, 110))
            await j.roll("o")
            await append(j, range(110, 120))
            segments = await j.list_segments("o")
            check_migrated_layout(segments, sealed)
            assert all(
                s.key is not None and s.key.endswith(".log") for s in segments[: len(sealed)]
            )
            stats = await j.get_statistics("o")
            assert stats.object_segments == len(sealed)
            assert stats.object_bytes == sum(s.size_bytes for s in sealed)
            tiering = (await j.get_statistics()).tiering
            assert tiering is not None
            assert tiering.uploads == len(sealed)

            async def check(j: JournalService) -> None:
                assert await read_all(j, "o") == expected
                assert await read_all(j, "o", max_bytes=1) == expected
                for rec in expected[::7]:
                    assert rec.offset is not None
                    assert (await j.read("o", rec.offset, 1))[0] == rec
                after = await _batches(j, "o", 0, 120)
                assert {b: raw for b, raw in after.items() if b in batches} == batches
                for ts in range(T0 - 1, T0 + 120 // 3 + 2, 3):
                    want = next((r.offset for r in expected if (r.timestamp or 0) >= ts), None)
                    assert await j.offset_for_time("o", ts) == want
                with trio.fail_after(20):
                    async with tailing(j, "o", 0) as it:
                        assert await take(it, len(expected)) == expected
                    async with tailing(j, "o", 50) as it:
                        assert await take(it, 70) == expected[50:]
                assert await j.verify("o") == []

            await check(j)

        async with open_journal(fsync="none", object_url=url) as j:
            assert await j.list_segments("o") == segments
            await check(j)

    async def test_deleting_a_tiered_stream_deletes_its_objects_only(
        self, open_journal: Opener, tmp_path: Path
    ) -> None:
        config = StreamConfig(
            segment_bytes=1024, local_retention_bytes=0, local_retention_ms=None, memory_bytes=0
        )
        async with open_journal(fsync="none", object_url=f"file://{tmp_path}/objects") as j:
            await j.create_stream("gone", config)
            await j.create_stream("kept", config)
            for i in range(20):
                await j.append("gone", [Record(b"g" * 100, key=b"%d" % i)])
                await j.append("kept", [Record(b"k" * 100, key=b"%d" % i)])
            moved = await j.migrate()
            gone = [s for s in await j.list_segments("gone") if s.tier == "object"]
            kept = [s for s in await j.list_segments("kept") if s.tier == "object"]
            assert gone
            assert kept
            assert moved == len(gone) + len(kept)

            await j.delete_stream("gone")
            await j.migrate()  # the pass (or the one the deletion woke) empties the trash
            tiering = (await j.get_statistics()).tiering
            assert tiering is not None
            assert (tiering.trash_pending, tiering.objects_deleted) == (0, len(gone))
            assert [r.key for r in await read_all(j, "kept")] == [b"%d" % i for i in range(20)]
            assert await j.verify("kept") == []
            assert await j.list_streams() == ["kept"]

    async def test_retention_removes_whole_segments_from_the_object_tier(
        self, open_journal: Opener, tmp_path: Path
    ) -> None:
        config = StreamConfig(
            segment_bytes=1024,
            local_retention_bytes=0,
            local_retention_ms=None,
            retention_bytes=3000,
            memory_bytes=0,
        )
        async with open_journal(fsync="none", object_url=f"file://{tmp_path}/objects") as j:
            await j.create_stream("o", config)
            for i in range(60):
                await j.append("o", [Record(b"%04d" % i * 10, timestamp=T0 + i)])
            await j.migrate()
            segments = await j.list_segments("o")
            assert len(segments) >= 6
            assert all(s.tier == "object" for s in segments[:-1])
            total, gone = sum(s.size_bytes for s in segments), 0
            while total > 3000:
                total -= segments[gone].size_bytes
                gone += 1
            assert await j.apply_retention("o") == gone
            assert await j.list_segments("o") == segments[gone:]
            first = segments[gone].base_offset
            assert (await j.describe_stream("o")).first_offset == first
            await j.migrate()  # a pass empties the trash
            tiering = (await j.get_statistics()).tiering
            assert tiering is not None
            assert (tiering.trash_pending, tiering.objects_deleted) == (0, gone)
            records = await read_all(j, "o", first)
            assert [r.value for r in records] == [b"%04d" % i * 10 for i in range(first, 60)]
            assert await j.offset_for_time("o", 0) == first
            with pytest.raises(OffsetOutOfRangeError) as caught:
                await j.read("o", first - 1)
            assert caught.value.first_offset == first
            assert await j.verify("o") == []

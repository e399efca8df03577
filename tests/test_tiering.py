"""Tiered storage seen through the journal's public API, on file:// and on S3 (moto).

Every journal-level test runs twice, through the ``object_store`` fixture: once
against a ``file://`` directory and once against a real S3 API (moto's server
on 127.0.0.1). What is covered:

* **transparent reads**: after migration, ``read``, ``read_batches``,
  ``offset_for_time`` and ``tail`` give exactly what was appended (batches byte
  for byte as before the move); ``segments()`` reports object, local and memory
  tiers with keys and sizes; the store holds ``K.log``/``K.index``/
  ``K.timeindex`` for each object segment and nothing else; the local files of
  moved segments are gone; a reopen changes nothing;
* **migration under load**: appenders, a reader re-reading every offset, and
  the background service migrating at once; nothing is ever unreadable or
  different, and local disk stays within a stated bound;
* **the memory window** (default ``memory_bytes``): tails keep working while
  the segments under them move;
* **retention** by bytes and by time removes whole segments from every tier
  (objects deleted on the next pass), and never deletes a local segment whose
  upload has not committed (an unusable store keeps everything local);
* **stream deletion** deletes the stream's objects and no other stream's;
* **verify** on object-tier segments, and bit rot in an object: reported,
  quarantined, reads raise ``CorruptSegmentError`` instead of serving it;
* **cold reads fetch ranges**, not whole segments;
* **Parquet export** to the store (file:// and S3) and ``read_table``, record
  by record, across the three tiers;
* **statistics** of the tiering service and per-stream tier bytes;
* **bad arguments**, and a journal with object-tier segments reopened without
  ``object_url`` (refused, naming the segment, nothing lost).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
import trio.lowlevel
from objectstores import ObjectStore
from support import check_migrated_layout, read_all, tail, take, wait_until

from journal import (
    CorruptSegmentError,
    InvalidConfigError,
    Journal,
    OffsetOutOfRangeError,
    Record,
    SegmentInfo,
    StorageError,
    StreamConfig,
    TieringStatistics,
)
from journal.segments.batch import decode_batch
from tools.s3local import create_bucket

NAME = "orders"
T0 = 1_700_000_000_000
SUFFIXES = (".log", ".index", ".timeindex")
BLOCK = 1 << 20  # the read cache's block size
_DEADLINE = 20.0  # seconds: bound of every poll


class FakeClock:
    """Wall time in ms for ``Journal.open(clock=...)``; the test moves it."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# -- helpers ----------------------------------------------------------------------


def _record(i: int, size: int = 40) -> Record:
    """Record ``i``: a None key or value now and then, zero to three headers (some
    with a None value), timestamps with ties."""
    key = None if i % 7 == 3 else b"key-%d" % i
    value = None if i % 11 == 5 else (b"%06d|" % i) * (size // 7 + i % 5)
    headers = [(f"h{n}", None if (i + n) % 4 == 0 else b"v%d.%d" % (i, n)) for n in range(i % 4)]
    return Record(value=value, key=key, headers=headers, timestamp=T0 + i // 3)


async def _append(j: Journal, offsets: Iterable[int], per_append: int = 3) -> list[Record]:
    """Append ``_record(i)`` for each offset, ``per_append`` to a batch; returns them as
    reads must return them (offsets filled in)."""
    wanted = list(offsets)
    out: list[Record] = []
    for at in range(0, len(wanted), per_append):
        group = [_record(i) for i in wanted[at : at + per_append]]
        result = await j.append(NAME, group)
        assert result.base_offset == wanted[at]
        out += [dataclasses.replace(r, offset=result.base_offset + n) for n, r in enumerate(group)]
    return out


@asynccontextmanager
async def _journal(root: Path, store: ObjectStore | None, **kwargs: Any) -> AsyncIterator[Journal]:
    kwargs.setdefault("maintenance_interval", 3600.0)  # passes only when a test asks
    async with Journal.open(
        root,
        fsync="none",
        object_url=store.url if store is not None else None,
        object_options=dict(store.options) if store is not None else None,
        **kwargs,
    ) as j:
        yield j


async def _objects(store: ObjectStore) -> dict[str, int]:
    """Every object under the store's URL, by key relative to it, with its size."""

    def find() -> dict[str, int]:
        fs, root = store.filesystem()
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            return {}
        start = len(root.lstrip("/")) + 1
        return {p.lstrip("/")[start:]: int(info["size"]) for p, info in found.items()}

    return await trio.to_thread.run_sync(find)


async def _rewrite_object(store: ObjectStore, key: str, edit: Callable[[bytes], bytes]) -> None:
    """Replace an object's bytes in the store, as bit rot (or a bad copy) would."""

    def rewrite() -> None:
        fs, root = store.filesystem()
        path = f"{root}/{key}"
        fs.pipe_file(path, edit(bytes(fs.cat_file(path))))

    await trio.to_thread.run_sync(rewrite)


def _stream_dir(root: Path) -> Path:
    (directory,) = (root / "streams").iterdir()
    return directory


def _local_logs(directory: Path) -> dict[int, int]:
    """Base offset -> size of every segment ``.log`` file in a stream directory."""
    out = {}
    for path in directory.glob("*.log"):
        try:
            out[int(path.stem)] = path.stat().st_size
        except FileNotFoundError:  # deleted by a migration meanwhile
            continue
    return out


async def _batches(j: Journal, start: int, end: int) -> dict[int, bytes]:
    """Every batch holding an offset in ``start..end-1``, one ``read_batches`` each."""
    out: dict[int, bytes] = {}
    offset = start
    while offset < end:
        (raw,) = await j.read_batches(NAME, offset, 1)
        header, _ = decode_batch(raw)
        out[header.base_offset] = raw
        offset = header.next_offset
    return out


def _object_stems(segments: list[SegmentInfo]) -> list[str]:
    out = []
    for seg in segments:
        if seg.tier == "object":
            assert seg.key is not None
            assert seg.key.endswith(".log")
            out.append(seg.key.removesuffix(".log"))
    return out


async def _read_each(j: Journal, expected: list[Record]) -> None:
    """A one-record read at every offset gives that record."""
    for rec in expected:
        assert rec.offset is not None
        got = await j.read(NAME, rec.offset, 1)
        assert got[0] == rec


def _config(**settings: Any) -> StreamConfig:
    """A stream config whose segments move by size only: the test records' fixed
    timestamps are years old, and would otherwise be due by ``local_retention_ms``."""
    settings.setdefault("local_retention_ms", None)
    return StreamConfig(**settings)


def _tiering(j: Journal) -> TieringStatistics:
    stats = j.statistics().tiering
    assert stats is not None
    return stats


# -- reads are transparent ---------------------------------------------------------


async def test_reads_are_transparent_after_migration(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    data = tmp_path / "data"
    config = _config(
        segment_bytes=2048, local_retention_bytes=0, memory_bytes=0, index_interval_bytes=128
    )
    async with _journal(data, object_store) as j:
        await j.create_stream(NAME, config)
        expected = await _append(j, range(90))
        before = j.segments(NAME)
        sealed = before[:-1]
        assert len(sealed) >= 3
        assert all(s.tier == "local" for s in sealed)
        batches = await _batches(j, 0, 90)
        assert await j.migrate() == len(sealed)

        # More records, not migrated: sealed local segments, and the active one.
        expected += await _append(j, range(90, 110))
        await j.roll(NAME)
        expected += await _append(j, range(110, 120))
        segments = j.segments(NAME)
        check_migrated_layout(segments, sealed)

        async def check(j: Journal) -> None:
            assert await read_all(j, NAME) == expected
            assert await read_all(j, NAME, max_bytes=1) == expected
            await _read_each(j, expected)
            after = await _batches(j, 0, 120)
            assert {b: raw for b, raw in after.items() if b in batches} == batches
            for ts in range(T0 - 1, T0 + 120 // 3 + 2):
                want = next((r.offset for r in expected if (r.timestamp or 0) >= ts), None)
                assert await j.offset_for_time(NAME, ts) == want
            async with aclosing(tail(j, NAME, 0)) as gen:
                assert await take(gen, len(expected)) == expected
            async with aclosing(tail(j, NAME, 50)) as gen:
                assert await take(gen, 70) == expected[50:]

        await check(j)

    # The store holds exactly the three objects of each object-tier segment.
    stems = _object_stems(segments)
    objects = await _objects(object_store)
    assert set(objects) == {stem + suffix for stem in stems for suffix in SUFFIXES}
    for seg, stem in zip(segments, stems, strict=False):
        assert objects[stem + ".log"] == seg.size_bytes
    # The local .log files of moved segments are gone; the others are there.
    assert _local_logs(_stream_dir(data)) == {
        s.base_offset: s.size_bytes for s in segments if s.tier != "object"
    }

    async with _journal(data, object_store) as j:
        assert j.segments(NAME) == segments
        await check(j)


# -- migration under load ------------------------------------------------------------


def _load_record(appender: int, seq: int) -> Record:
    """Self-describing, so a reader can check a record it sees before its ack."""
    key = b"%d:%d" % (appender, seq)
    return Record(value=key * (20 + seq % 13), key=key, headers=[("seq", b"%d" % seq)])


def _check_load_record(rec: Record) -> None:
    assert rec.key is not None
    appender, seq = map(int, rec.key.split(b":"))
    want = _load_record(appender, seq)
    assert (rec.value, rec.headers) == (want.value, want.headers)


async def test_migration_under_load(tmp_path: Path, object_store: ObjectStore) -> None:
    segment_bytes, local_retention = 4096, 8192
    appenders, per_appender = 2, 120
    data = tmp_path / "data"
    config = _config(
        segment_bytes=segment_bytes,
        local_retention_bytes=local_retention,
        local_retention_ms=None,
        memory_bytes=0,  # every read goes through the segments, wherever they are
        index_interval_bytes=256,
    )
    async with _journal(
        data, object_store, maintenance_interval=0.01, upload_backoff=(0.01, 0.05)
    ) as j:
        await j.create_stream(NAME, config)
        directory = _stream_dir(data)
        acked: dict[int, Record] = {}
        done = trio.Event()
        peak = [0]
        passes = [0]

        async def appender(a: int) -> None:
            for seq in range(per_appender):
                # The producer honours backpressure: it appends only while nothing
                # is due for migration. So at most one segment beyond the local
                # retention is ever sealed (an append rolls at most once, and the
                # two appenders' in-flight appends cannot fill a fresh segment).
                await wait_until(
                    lambda: not j.statistics(NAME).migration_backlog_segments,
                    "the migration backlog drains",
                    within=_DEADLINE,
                    interval=0.002,
                )
                record = _load_record(a, seq)
                result = await j.append(NAME, [record])
                acked[result.base_offset] = dataclasses.replace(
                    record, offset=result.base_offset, timestamp=None
                )

        async def reader() -> None:
            seen: dict[int, bytes] = {}  # batch base offset -> its bytes, first seen
            while True:
                finished = done.is_set()
                end = j.stream_info(NAME).next_offset
                offset = 0
                while offset < end:
                    for raw in await j.read_batches(NAME, offset, 1500):
                        header, records = decode_batch(raw)
                        assert header.base_offset == offset
                        assert seen.setdefault(offset, raw) == raw, "a batch changed"
                        for rec in records:
                            _check_load_record(rec)
                        offset = header.next_offset
                passes[0] += 1
                if finished:
                    return
                await trio.lowlevel.checkpoint()

        async def sampler() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], sum(_local_logs(directory).values()))
                await trio.sleep(0.001)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(sampler)
                async with trio.open_nursery() as writers:
                    for a in range(appenders):
                        writers.start_soon(appender, a)
                done.set()

        # Bound: the sealed local bytes are <= local_retention whenever nothing is
        # due; one roll adds one sealed segment (<= segment_bytes) that stays on
        # disk while it uploads ("in flight"); plus the active segment
        # (<= segment_bytes). A migrated segment's file is deleted at its commit.
        assert peak[0] <= local_retention + 2 * segment_bytes
        assert passes[0] >= 2
        stats = j.statistics(NAME)
        assert stats.object_segments >= 5, "the service migrated during the run"
        assert _tiering(j).uploads == stats.object_segments
        got = await read_all(j, NAME)
        assert [dataclasses.replace(r, timestamp=None) for r in got] == [
            acked[o] for o in range(appenders * per_appender)
        ]
        local = _local_logs(directory)
        assert sum(local.values()) <= local_retention + segment_bytes
        assert set(local) == {s.base_offset for s in j.segments(NAME) if s.tier != "object"}


# -- the memory window -----------------------------------------------------------------


async def test_tail_readers_keep_working_across_migration(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    config = _config(segment_bytes=1024, local_retention_bytes=0)  # memory window on
    async with _journal(tmp_path / "data", object_store) as j:
        await j.create_stream(NAME, config)
        total = 60
        got: list[Record] = []
        late: list[Record] = []

        async def follow(start: int, out: list[Record]) -> None:
            async with aclosing(tail(j, NAME, start)) as gen:
                out += await take(gen, total - start)

        expected: list[Record] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, 0, got)
            for start in range(0, total, 10):
                expected += await _append(j, range(start, start + 10))
                await j.roll(NAME)
                moved = await j.migrate()
                assert moved >= 1
                if start == 20:  # a tail that starts where everything is in the object tier
                    nursery.start_soon(follow, 5, late)
        assert got == expected
        assert late == expected[5:]
        assert j.statistics(NAME).memory_bytes > 0, "the memory window was on"
        assert all(s.tier == "object" for s in j.segments(NAME)[:-1])
        assert await read_all(j, NAME) == expected


# -- retention across tiers --------------------------------------------------------------


async def test_retention_bytes_removes_whole_segments_from_the_object_tier(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    config = _config(
        segment_bytes=1024, local_retention_bytes=0, retention_bytes=3000, memory_bytes=0
    )
    async with _journal(tmp_path / "data", object_store) as j:
        await j.create_stream(NAME, config)
        expected = await _append(j, range(60), per_append=1)
        await j.migrate()
        segments = j.segments(NAME)
        assert len(segments) >= 6
        assert all(s.tier == "object" for s in segments[:-1])
        total, gone = sum(s.size_bytes for s in segments), 0
        while total > 3000:
            total -= segments[gone].size_bytes
            gone += 1
        removed = await j.apply_retention(NAME)
        assert removed == gone
        assert j.segments(NAME) == segments[gone:], "whole segments, oldest first"
        first = segments[gone].base_offset
        assert j.stream_info(NAME).first_offset == first
        assert _tiering(j).trash_pending == gone
        stems = _object_stems(segments)
        objects = await _objects(object_store)
        assert all(s + ".log" in objects for s in stems[:gone]), "deleted on the next pass"

        await j.migrate()  # a pass empties the trash
        assert _tiering(j).trash_pending == 0
        assert _tiering(j).objects_deleted == gone
        objects = await _objects(object_store)
        assert set(objects) == {s + suffix for s in stems[gone:] for suffix in SUFFIXES}
        assert await read_all(j, NAME, first) == expected[first:]
        with pytest.raises(OffsetOutOfRangeError):
            await j.read(NAME, first - 1)


async def test_retention_ms_removes_object_segments_then_local_ones_once_uploaded(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    clock = FakeClock()
    config = _config(
        segment_bytes=1 << 20, local_retention_bytes=0, retention_ms=10_000, memory_bytes=0
    )
    async with _journal(tmp_path / "data", object_store, clock=clock) as j:
        await j.create_stream(NAME, config)
        expected: list[Record] = []
        for group in range(5):  # one segment per second of fake time
            clock.now = T0 + group * 1000
            records = [Record(value=b"g%d-%d" % (group, n)) for n in range(5)]
            result = await j.append(NAME, records)
            expected += [
                dataclasses.replace(r, offset=result.base_offset + n, timestamp=clock.now)
                for n, r in enumerate(records)
            ]
            await j.roll(NAME)
            if group == 2:
                assert await j.migrate() == 3
        segments = j.segments(NAME)
        assert [s.tier for s in segments] == ["object"] * 3 + ["local"] * 2 + ["memory"]
        stems = _object_stems(segments)

        # Segments 0..3 are past retention; 3 is local and not uploaded yet, so
        # it stays until the service has moved it.
        clock.now = T0 + 3000 + 10_001
        assert await j.apply_retention(NAME) == 3
        assert j.segments(NAME) == segments[3:]
        assert j.stream_info(NAME).first_offset == segments[3].base_offset == 15
        assert await read_all(j, NAME, 15) == expected[15:]

        assert await j.migrate() == 2  # the expired segment 3 and segment 4
        assert await j.apply_retention(NAME) == 1
        await j.migrate()
        assert j.stream_info(NAME).first_offset == segments[4].base_offset == 20
        assert _tiering(j).trash_pending == 0
        remaining = _object_stems(j.segments(NAME))
        assert len(remaining) == 1
        objects = await _objects(object_store)
        assert set(objects) == {remaining[0] + suffix for suffix in SUFFIXES}
        assert not set(objects) & {s + ".log" for s in stems}
        assert await read_all(j, NAME, 20) == expected[20:]


async def _break_store(
    tmp_path: Path, store: ObjectStore
) -> tuple[ObjectStore, Callable[[], None]]:
    """A store every write to fails, and a function that makes it work again.

    file://: the objects directory's parent turns into a regular file after the
    journal has opened. S3: a bucket that does not exist (created to repair).
    """
    if store.protocol == "file":
        blocker = tmp_path / "blocker"
        broken = ObjectStore(url=f"file://{blocker}/objects", options={})

        def repair() -> None:
            blocker.unlink()

        return broken, repair
    bucket = store.url.removeprefix("s3://").split("/")[0] + "-missing"
    broken = ObjectStore(url=f"s3://{bucket}/strata", options=store.options)

    def create() -> None:
        create_bucket(store.endpoint, bucket)

    return broken, create


async def test_retention_keeps_local_segments_until_their_upload_commits(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    broken, repair = await _break_store(tmp_path, object_store)
    config = _config(
        segment_bytes=1024, local_retention_bytes=0, retention_bytes=1500, memory_bytes=0
    )
    data = tmp_path / "data"
    async with _journal(data, broken) as j:
        if broken.protocol == "file":
            blocker = tmp_path / "blocker"
            shutil.rmtree(blocker)
            blocker.write_bytes(b"a file where a directory should be")
        await j.create_stream(NAME, config)
        expected = await _append(j, range(40), per_append=1)
        segments = j.segments(NAME)
        assert len(segments) >= 4
        files = _local_logs(_stream_dir(data))

        assert await j.migrate() == 0
        stats = _tiering(j)
        assert stats.upload_failures >= 1
        assert stats.uploads == 0
        assert stats.last_error is not None
        assert j.statistics(NAME).migration_backlog_segments == len(segments) - 1
        assert await j.apply_retention(NAME) == 0, "nothing is uploaded: nothing may go"
        assert j.segments(NAME) == segments
        assert _local_logs(_stream_dir(data)) == files
        assert await read_all(j, NAME) == expected

        # The store comes back: the segments move, and then retention removes them.
        await trio.to_thread.run_sync(repair)
        assert await j.migrate() == len(segments) - 1
        removed = await j.apply_retention(NAME)
        assert removed >= 1
        await j.migrate()
        assert _tiering(j).trash_pending == 0
        info = j.stream_info(NAME)
        assert info.first_offset == segments[removed].base_offset
        assert info.size_bytes <= 1500 or info.segment_count == 1
        assert await read_all(j, NAME, info.first_offset) == expected[info.first_offset :]


# -- stream deletion -------------------------------------------------------------------------


async def test_deleting_a_stream_deletes_its_objects(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    config = _config(segment_bytes=1024, local_retention_bytes=0, memory_bytes=0)
    async with _journal(tmp_path / "data", object_store) as j:
        await j.create_stream(NAME, config)
        await j.create_stream("kept", config)
        await _append(j, range(30))
        for i in range(20):
            await j.append("kept", [Record(value=b"k" * 100, key=b"%d" % i)])
        moved = await j.migrate()
        gone = _object_stems(j.segments(NAME))
        kept = _object_stems(j.segments("kept"))
        assert gone
        assert kept
        assert moved == len(gone) + len(kept)
        assert len(await _objects(object_store)) == 3 * moved

        await j.delete_stream(NAME)
        await j.migrate()  # the pass (or the one the deletion woke) empties the trash
        assert _tiering(j).trash_pending == 0
        assert _tiering(j).objects_deleted == len(gone)
        objects = await _objects(object_store)
        assert set(objects) == {s + suffix for s in kept for suffix in SUFFIXES}
        assert len(await read_all(j, "kept")) == 20


# -- verify and bit rot --------------------------------------------------------------------


def _flip(position: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1 :]

    return edit


async def test_verify_and_bit_rot_in_object_tier_segments(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    data = tmp_path / "data"
    config = _config(segment_bytes=1024, local_retention_bytes=0, memory_bytes=0)
    async with _journal(data, object_store) as j:
        await j.create_stream(NAME, config)
        expected = await _append(j, range(80), per_append=2)
        await j.migrate()
        segments = j.segments(NAME)
        assert await j.verify(NAME) == []
    assert len(segments) >= 6
    a, b = segments[1], segments[3]
    assert a.tier == b.tier == "object"
    assert a.key is not None
    assert b.key is not None
    # A payload byte of each one's first batch (past the 61-byte header, under the CRC).
    await _rewrite_object(object_store, a.key, _flip(70))
    await _rewrite_object(object_store, b.key, _flip(70))

    async with _journal(data, object_store) as j:  # a new journal: an empty cache
        with pytest.raises(CorruptSegmentError) as raised:
            await j.read(NAME, b.base_offset)
        assert raised.value.segment == b.key
        problems = await j.verify(NAME)
        assert sorted(p.segment or "" for p in problems) == sorted([a.key, b.key])
        with pytest.raises(CorruptSegmentError) as raised:
            await j.read(NAME, a.base_offset + 1)
        assert raised.value.segment == a.key
        assert set(j.stream_info(NAME).quarantined) == {a.key, b.key}
        # The good segments still serve their records; a read stops before a bad one.
        good = segments[2].base_offset
        assert await j.read(NAME, good, 1 << 20) == expected[good : b.base_offset]
        after = segments[4].base_offset
        assert await read_all(j, NAME, after) == expected[after:]


# -- cold reads fetch ranges ---------------------------------------------------------------


_VALUE = bytes(range(256)) * 32  # 8 KiB


async def _one_big_segment(data: Path, store: ObjectStore) -> SegmentInfo:
    """A journal whose stream is one migrated segment of 80 batches of 128 KiB (10 MiB)."""
    async with _journal(data, store) as j:
        await j.create_stream(NAME, _config(segment_bytes=16 << 20, local_retention_bytes=0))
        for n in range(80):
            await j.append(
                NAME, [Record(value=_VALUE, key=b"%d" % (n * 16 + i)) for i in range(16)]
            )
        await j.roll(NAME)
        assert await j.migrate() == 1
        (seg, _) = j.segments(NAME)
    assert seg.size_bytes > 10 << 20
    return seg


async def _index_bytes(store: ObjectStore) -> int:
    return sum(size for key, size in (await _objects(store)).items() if not key.endswith(".log"))


async def _point_read(j: Journal, batch: int) -> None:
    """Read one record of a 128 KiB batch (which lies inside one cache block)."""
    offset = batch * 16 + 7
    (got, *_) = await j.read(NAME, offset, 1)
    assert (got.offset, got.key, got.value) == (offset, b"%d" % offset, _VALUE)


async def test_cold_reads_fetch_ranges_not_whole_segments(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    seg = await _one_big_segment(tmp_path / "data", object_store)
    async with _journal(tmp_path / "data", object_store) as j:  # a new journal: a cold cache
        await _point_read(j, batch=36)  # bytes 4.7..4.9 MiB: block 4
        stats = _tiering(j)  # before any other await: see below
        index = await _index_bytes(object_store)
        assert stats.cache_misses >= 1
        fetched = stats.bytes_fetched
        # The index files, the block that holds the batch, and at most the two
        # blocks a prefetch could add (see the test below: none is started).
        assert fetched <= 3 * BLOCK + index, f"a point read fetched {fetched} bytes"
        assert fetched < seg.size_bytes / 2


async def test_a_point_read_prefetches_nothing(tmp_path: Path, object_store: ObjectStore) -> None:
    await _one_big_segment(tmp_path / "data", object_store)
    async with _journal(tmp_path / "data", object_store) as j:
        await _point_read(j, batch=36)
        index = await _index_bytes(object_store)
        stats = _tiering(j)  # prefetches are started during the read, so none can come
        assert stats.cache_prefetch_started == 0
        assert stats.bytes_fetched <= BLOCK + index


# -- Parquet ---------------------------------------------------------------------------------


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """(offset, timestamp ms, key, value, headers) per row."""
    timestamps = table.column("timestamp").cast(pa.int64()).to_pylist()
    return [
        (
            row["offset"],
            ts,
            row["key"],
            row["value"],
            [(h["key"], h["value"]) for h in row["headers"]],
        )
        for row, ts in zip(table.to_pylist(), timestamps, strict=True)
    ]


def _expected_rows(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in records]


async def _read_parquet(url: str, options: dict[str, Any]) -> pa.Table:
    def read() -> pa.Table:
        fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
        with fs.open(path, "rb") as f:
            return pq.read_table(f)

    return cast(pa.Table, await trio.to_thread.run_sync(read))


async def test_parquet_export_across_tiers(tmp_path: Path, object_store: ObjectStore) -> None:
    config = _config(segment_bytes=2048, local_retention_bytes=2048)  # memory window on
    async with _journal(tmp_path / "data", object_store) as j:
        await j.create_stream(NAME, config)
        expected = await _append(j, range(100))
        await j.migrate()
        tiers = {s.tier for s in j.segments(NAME)}
        assert tiers == {"object", "local", "memory"}

        start, end = 3, 97  # from the object tier to the memory window
        url = f"{object_store.url}/exports/orders.parquet"
        assert await j.export_parquet(NAME, start, end, url, dict(object_store.options)) == 94
        table = await _read_parquet(url, dict(object_store.options))
        assert table.column_names == ["offset", "timestamp", "key", "value", "headers"]
        assert _rows(table) == _expected_rows(expected[start:end])
        assert any(r.key is None for r in expected[start:end])
        assert any(r.value is None for r in expected[start:end])
        assert any(len(r.headers) == 3 for r in expected[start:end])

        sub = await j.read_table(NAME, 40, 45)
        assert _rows(sub) == _expected_rows(expected[40:45])
        clipped = await j.read_table(NAME, 95, 130)
        assert clipped.column("offset").to_pylist() == [95, 96, 97, 98, 99]
        url2 = f"{object_store.url}/exports/tail.parquet"
        assert await j.export_parquet(NAME, 98, 500, url2, dict(object_store.options)) == 2
        assert _rows(await _read_parquet(url2, dict(object_store.options))) == _expected_rows(
            expected[98:]
        )


# -- statistics --------------------------------------------------------------------------------


async def test_statistics_of_tiering(tmp_path: Path, object_store: ObjectStore) -> None:
    config = _config(segment_bytes=1024, local_retention_bytes=1024, memory_bytes=0)
    async with _journal(tmp_path / "data", object_store) as j:
        await j.create_stream(NAME, config)
        expected = await _append(j, range(50), per_append=1)
        before = _tiering(j)
        assert before.object_url == object_store.url
        assert (before.uploads, before.bytes_uploaded, before.cache_misses) == (0, 0, 0)
        due = j.statistics(NAME)
        assert due.migration_backlog_segments >= 3
        assert before.backlog_segments >= 3

        moved = await j.migrate()
        assert moved == due.migration_backlog_segments
        after = _tiering(j)
        stream = j.statistics(NAME)
        objects = [s for s in j.segments(NAME) if s.tier == "object"]
        assert after.uploads == moved == stream.object_segments == len(objects)
        assert after.bytes_uploaded == sum(s.size_bytes for s in objects) == stream.object_bytes
        assert after.backlog_segments == stream.migration_backlog_segments == 0
        assert stream.object_bytes + stream.local_bytes == stream.size_bytes
        assert stream.local_bytes > 0
        assert stream.object_bytes > 0
        assert j.statistics().per_stream[NAME] == stream

        assert await j.read(NAME, 0, 1) == expected[:1]
        cold = _tiering(j)
        assert cold.cache_misses >= 1
        assert cold.bytes_fetched > 0
        assert cold.cache_bytes > 0
        assert await j.read(NAME, 0, 1) == expected[:1]
        warm = _tiering(j)
        assert warm.cache_hits > cold.cache_hits
        assert warm.bytes_fetched == cold.bytes_fetched


# -- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"upload_concurrency": 0},
        {"cache_bytes": -1},
        {"object_timeout": 0},
        {"upload_backoff": (0, 1)},
        {"upload_backoff": (2.0, 1.0)},
    ],
    ids=["upload_concurrency=0", "cache_bytes=-1", "object_timeout=0", "backoff_min=0", "min>max"],
)
async def test_bad_tiering_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(InvalidConfigError, match=name):
        async with Journal.open(tmp_path / "data", object_url=f"file://{tmp_path}/o", **kwargs):
            pass  # pragma: no cover


async def test_reopening_without_object_url_is_refused(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    data = tmp_path / "data"
    config = _config(segment_bytes=1024, local_retention_bytes=0, memory_bytes=0)
    async with _journal(data, object_store) as j:
        await j.create_stream(NAME, config)
        expected = await _append(j, range(30))
        await j.migrate()
        segments = j.segments(NAME)
    first = segments[0]
    assert first.tier == "object"
    assert first.key is not None

    with pytest.raises(StorageError, match="object_url") as raised:
        async with _journal(data, None):
            pass  # pragma: no cover
    assert raised.value.segment == first.key
    assert raised.value.stream == NAME

    async with _journal(data, object_store) as j:  # nothing was lost
        assert j.segments(NAME) == segments
        assert await read_all(j, NAME) == expected

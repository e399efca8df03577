"""The journal: a directory of streams, their catalog, and the service that tends them.

``Journal.open`` recovers every stream (see ``docs/architecture.md``), then
runs a maintenance task in its own nursery (time-based rolls, retention) and,
with an object tier, the migration service (``docs/tiering.md``) until the
``async with`` block ends, when every stream is fsynced, checkpointed and
closed.

Layout of a data directory::

    <path>/catalog/                RocksDB: streams, sealed segments, checkpoints
    <path>/cache/                  object-tier byte ranges (emptied on open)
    <path>/streams/<id>-<slug>/    one directory per stream, named by catalog id
        00000000000000000000.log   batches
        00000000000000000000.index / .timeindex
"""

from __future__ import annotations

import logging
import re
import resource
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, overload

import crc32c
import trio

from journal.catalog import Catalog, StreamEntry
from journal.config import FSYNC_POLICIES, FsyncPolicy, InvalidConfigError, StreamConfig
from journal.errors import (
    JournalClosedError,
    StorageError,
    StreamExistsError,
    UnknownStreamError,
)
from journal.records import AppendResult, Record
from journal.segments.batch import BatchHeader
from journal.segments.segment import Segment, pread_of, scan_batches
from journal.stats import JournalStatistics, LatencyHistogram, StreamStatistics, TieringStatistics
from journal.stream import AnySegment, Stream, wall_clock_ms
from journal.tiering import analytics
from journal.tiering.cache import CachedTier
from journal.tiering.local import LocalTier
from journal.tiering.migration import Migrator
from journal.tiering.object import ObjectTier
from journal.tiering.remote import RemoteSegment

__all__ = ["Journal", "SegmentInfo", "StreamInfo"]

log = logging.getLogger("journal")

_MAX_NAME = 249  # Kafka's topic name limit
# How long, in object_timeouts, a call abandoned at its timeout may still reach
# the store: s3fs tries twice (retries=1), botocore twice, each connect + read.
_ABANDONED_CALL_GRACE = 10
_SLUG = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's extent: readable offsets are ``first_offset..next_offset-1``."""

    name: str
    first_offset: int
    next_offset: int
    size_bytes: int
    segment_count: int
    config: StreamConfig
    quarantined: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """Where one segment lives. ``tier`` is "memory" for the active segment (written to
    local disk, its newest batches served from memory), else "local" or "object"."""

    base_offset: int
    last_offset: int
    tier: str
    size_bytes: int
    key: str | None = None  # the object key of an object-tier segment's log
    quarantined: str | None = None


class Journal:
    """Streams of records in segmented, append-only, crash-safe files.

    Use :meth:`Journal.open`; every method raises
    :class:`~journal.errors.UnknownStreamError` for a name it does not know.
    """

    def __init__(
        self,
        root: Path,
        catalog: Catalog,
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int,
        clock: Callable[[], int],
    ) -> None:
        self.root = root
        self._catalog = catalog
        self.fsync: FsyncPolicy = fsync
        self._fsync_interval_ms = fsync_interval_ms
        self._clock = clock
        self._streams: dict[str, Stream] = {}
        self._closed = False
        self._catalog_lock = trio.Lock()
        self._migrator: Migrator | None = None  # with an object tier
        self._object_url: str | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        fsync: FsyncPolicy = "interval",
        *,
        fsync_interval_ms: int = 5,
        maintenance_interval: float = 1.0,
        clock: Callable[[], int] = wall_clock_ms,
        object_url: str | None = None,
        object_options: dict[str, Any] | None = None,
        upload_concurrency: int = 2,
        cache_bytes: int = 256 << 20,
        object_timeout: float = 30.0,
        upload_backoff: tuple[float, float] = (1.0, 60.0),
    ) -> AsyncIterator[Journal]:
        """Open (creating if needed) the journal in ``path``.

        ``fsync`` is the default policy of streams that do not set their own;
        ``clock`` returns wall time in ms (record timestamps, retention, rolls).

        ``object_url`` (an fsspec URL: ``s3://bucket/prefix``, ``file:///dir``)
        turns on the object tier, with ``object_options`` passed to fsspec as
        storage options (endpoint, credentials). ``upload_concurrency`` streams
        migrate at once; ``cache_bytes`` bounds the on-disk cache of cold
        reads; every object-store call gives up after ``object_timeout``
        seconds; failed uploads are retried after a delay that doubles from
        ``upload_backoff[0]`` up to ``upload_backoff[1]`` seconds.
        """
        if fsync not in FSYNC_POLICIES:
            raise InvalidConfigError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        if not isinstance(fsync_interval_ms, int) or fsync_interval_ms < 0:
            raise InvalidConfigError(
                f"fsync_interval_ms must be an integer >= 0, not {fsync_interval_ms!r}"
            )
        if not maintenance_interval > 0:
            raise InvalidConfigError(
                f"maintenance_interval must be > 0 seconds, not {maintenance_interval!r}"
            )
        _check_tiering(upload_concurrency, cache_bytes, object_timeout, upload_backoff)
        root = Path(path)
        (root / "streams").mkdir(parents=True, exist_ok=True)
        _raise_open_file_limit()
        store = reader = None
        if object_url is not None:
            store = ObjectTier(object_url, object_options, timeout=object_timeout)
            reader = CachedTier(store, LocalTier(root / "cache", budget_bytes=cache_bytes))
        catalog = Catalog(root / "catalog")
        journal = cls(root, catalog, fsync=fsync, fsync_interval_ms=fsync_interval_ms, clock=clock)
        journal._object_url = object_url
        if object_url is not None:
            catalog.set_object_url(object_url)  # for offline tools (strata-journal)
        if store is not None and reader is not None:
            journal._migrator = Migrator(
                catalog, store, reader, lambda: list(journal._streams.values()),
                journal_id=catalog.journal_id(), concurrency=upload_concurrency,
                backoff=upload_backoff, clock=clock,
                grace=_ABANDONED_CALL_GRACE * object_timeout,
            )  # fmt: skip
        body_error: Exception | None = None
        try:
            journal._recover()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal._maintenance, maintenance_interval)
                if journal._migrator is not None:
                    journal._migrator.reader.start_prefetching(nursery)
                    await nursery.start(journal._migrator.run, maintenance_interval)
                try:
                    yield journal
                except Exception as exc:
                    # Re-raised below, outside the nursery, so that callers can
                    # catch e.g. OffsetOutOfRangeError and not an ExceptionGroup.
                    body_error = exc
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            await journal._close()
        if body_error is not None:
            raise body_error

    def _recover(self) -> None:
        now = self._clock()
        known = set()
        for entry in self._catalog.streams():
            directory = self._directory(entry)
            known.add(directory.name)
            self._streams[entry.name] = self._open_stream(entry, now)
        for child in (self.root / "streams").iterdir():
            if child.name not in known:  # a deletion interrupted by a crash
                log.warning("removing orphaned stream directory %s", child)
                shutil.rmtree(child, ignore_errors=True)

    def _open_stream(self, entry: StreamEntry, now: int) -> Stream:
        return Stream.open(
            entry,
            self._directory(entry),
            self._catalog,
            fsync=self.fsync,
            fsync_interval_ms=self._fsync_interval_ms,
            now_ms=now,
            objects=self._migrator.reader if self._migrator is not None else None,
        )

    def _directory(self, entry: StreamEntry) -> Path:
        slug = _SLUG.sub("_", entry.name)[:48]
        return self.root / "streams" / f"{entry.id:06d}-{slug}"

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            if self._closed:
                return
            self._closed = True
            errors = []
            for stream in list(self._streams.values()):
                try:
                    await stream.close()
                except StorageError as exc:
                    errors.append(exc)
            self._catalog.close()
            if errors:
                raise errors[0]

    def abandon(self) -> None:
        """Drop everything as a crash would: no fsync, no checkpoint (for tests)."""
        self._closed = True
        for stream in self._streams.values():
            stream.abandon()
        self._catalog.close()

    async def _maintenance(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            now = self._clock()
            for stream in list(self._streams.values()):
                try:
                    await stream.maintain(now)
                except JournalClosedError:
                    pass
                except StorageError as exc:
                    log.error("maintenance of stream %s failed: %s", stream.name, exc)

    # -- streams ----------------------------------------------------------------

    def _stream(self, name: str) -> Stream:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        try:
            return self._streams[name]
        except KeyError:
            raise UnknownStreamError(f"no stream named {name!r}") from None

    async def create_stream(
        self, name: str, config: StreamConfig | None = None, *, exist_ok: bool = False
    ) -> None:
        """Create a stream; with ``exist_ok`` an existing one is kept as it is."""
        _check_name(name)
        config = config or StreamConfig()
        async with self._catalog_lock:
            if self._closed:
                raise JournalClosedError("the journal is closed")
            if name in self._streams:
                if exist_ok:
                    return
                raise StreamExistsError(f"stream {name!r} already exists")
            entry = self._catalog.add_stream(name, config)
            self._streams[name] = self._open_stream(entry, self._clock())
        await trio.lowlevel.checkpoint()

    async def delete_stream(self, name: str) -> None:
        """Delete a stream and its files; waiting appenders and tails get an error."""
        stream = self._stream(name)
        async with self._catalog_lock:
            if self._streams.get(name) is not stream:
                raise UnknownStreamError(f"no stream named {name!r}")
            del self._streams[name]
            await stream.close(deleted=True)
            self._catalog.remove_stream(StreamEntry(name, stream.id, stream.config))
            await trio.to_thread.run_sync(shutil.rmtree, stream.directory)
        if self._migrator is not None:
            self._migrator.wake()  # delete its objects from the object tier

    def streams(self) -> list[str]:
        return sorted(self._streams)

    def stream_info(self, name: str) -> StreamInfo:
        s = self._stream(name)
        return StreamInfo(
            name=name,
            first_offset=s.first_offset,
            next_offset=s.committed,
            size_bytes=s.size_bytes,
            segment_count=len(s.segments),
            config=s.config,
            quarantined=tuple(seg.name for seg in s.segments if seg.quarantined),
        )

    def segments(self, name: str) -> list[SegmentInfo]:
        """The stream's segments, oldest first, with the tier that holds each."""
        s = self._stream(name)
        out = []
        for seg in s.segments:
            tier = "memory" if seg is s.segments[-1] else seg.tier
            key = seg.name if isinstance(seg, RemoteSegment) else None
            out.append(
                SegmentInfo(seg.base_offset, seg.last_offset, tier, seg.size, key, seg.quarantined)
            )
        return out

    # The async twins of the queries above, for code written against
    # journal.service.JournalService (the remote client answers them over RPC).

    async def list_streams(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return self.streams()

    async def describe_stream(self, name: str) -> StreamInfo:
        await trio.lowlevel.checkpoint()
        return self.stream_info(name)

    async def list_segments(self, name: str) -> list[SegmentInfo]:
        await trio.lowlevel.checkpoint()
        return self.segments(name)

    @overload
    async def get_statistics(self) -> JournalStatistics: ...
    @overload
    async def get_statistics(self, name: str) -> StreamStatistics: ...

    async def get_statistics(self, name: str | None = None) -> JournalStatistics | StreamStatistics:
        await trio.lowlevel.checkpoint()
        return self.statistics() if name is None else self.statistics(name)

    # -- writing ----------------------------------------------------------------

    async def append(self, name: str, records: Sequence[Record]) -> AppendResult:
        """Append records; returns once they are durable under the stream's policy.

        The records get consecutive offsets and are stored as one batch, which
        a crash keeps whole or drops whole. A list larger than the stream's
        ``max_batch_bytes`` is stored as several consecutive batches: a crash
        before the acknowledgement may keep a prefix of those batches.
        """
        return await self._stream(name).append_records(list(records), self._clock())

    def now_ms(self) -> int:
        """The journal's clock (ms): the time records appended without one get."""
        return self._clock()

    async def append_batch(self, name: str, batch: bytes | bytearray | memoryview) -> AppendResult:
        """Append one client-encoded RecordBatch v2 after validating it; offsets are assigned."""
        return await self._stream(name).append_raw(batch, self._clock())

    async def roll(self, name: str) -> None:
        """Seal the stream's active segment now."""
        await self._stream(name).roll()

    # -- reading ----------------------------------------------------------------

    async def read(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[Record]:
        """Records from ``offset`` on, about ``max_bytes`` of batches (at least one)."""
        stream = self._stream(name)
        await trio.lowlevel.checkpoint()
        return await stream.read(offset, max_bytes)

    async def read_batches(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[bytes]:
        """Raw RecordBatch v2 bytes from the batch holding ``offset`` on."""
        stream = self._stream(name)
        await trio.lowlevel.checkpoint()
        return await stream.read_batches(offset, max_bytes)

    async def offset_for_time(self, name: str, timestamp_ms: int) -> int | None:
        """First offset whose timestamp is >= ``timestamp_ms``, or None."""
        stream = self._stream(name)
        await trio.lowlevel.checkpoint()
        return await stream.offset_for_time(timestamp_ms)

    async def wait(self, name: str, offset: int) -> None:
        """Wait until ``offset`` is readable (for long polls); never polls itself."""
        await self._stream(name).wait_for(offset)

    async def tail(self, name: str, from_offset: int) -> AsyncIterator[Record]:
        """Every record from ``from_offset`` on, then each new one as it is appended."""
        stream = self._stream(name)
        offset = from_offset
        while True:
            await stream.wait_for(offset)
            records = await stream.read(offset, 1 << 20)
            for record in records:
                yield record
            if records and records[-1].offset is not None:
                offset = records[-1].offset + 1

    # -- upkeep -----------------------------------------------------------------

    async def apply_retention(self, name: str | None = None) -> int:
        """Apply retention now (normally done every second); returns segments removed."""
        now = self._clock()
        streams = [self._stream(name)] if name is not None else list(self._streams.values())
        removed = 0
        for stream in streams:
            removed += await stream.maintain(now)
        return removed

    async def migrate(self, name: str | None = None) -> int:
        """Move what is due to the object tier now, ignoring backoff; returns segments moved.

        Normally the migration service does this every ``maintenance_interval``.
        Failures are counted and logged, not raised (see ``statistics().tiering``).
        """
        only = self._stream(name) if name is not None else None
        if self._migrator is None:
            return 0
        return await self._migrator.run_pass(only=only)

    async def verify(self, name: str) -> list[StorageError]:
        """Check every batch's CRC32C in every segment, every tier; quarantine bad sealed ones.

        An object-tier segment is read back whole and also checked against the
        CRC32C recorded when it was uploaded.
        """
        stream = self._stream(name)
        problems: list[StorageError] = []
        for seg in list(stream.segments):
            if seg.quarantined is not None:
                problems.append(StorageError(seg.quarantined, stream=name, segment=seg.name))
                continue
            try:
                problem = await _scan_segment(seg)
            except StorageError as exc:
                problems.append(exc)
                continue
            if problem is not None:
                reason, position = problem
                problems.append(stream.report_corruption(seg, reason, position))
        return problems

    async def export_parquet(
        self,
        name: str,
        start_offset: int,
        end_offset: int,
        url: str,
        storage_options: dict[str, Any] | None = None,
    ) -> int:
        """Write offsets ``start_offset..end_offset-1`` to a Parquet file at an fsspec URL.

        Columns: offset, timestamp, key, value, headers. Returns the rows written.
        """
        table = await self.read_table(name, start_offset, end_offset)
        await analytics.write_parquet(table, url, storage_options)
        return int(table.num_rows)

    async def read_table(self, name: str, start_offset: int, end_offset: int) -> analytics.Table:
        """Offsets ``start_offset..end_offset-1`` (those still held) as a ``pyarrow.Table``."""
        stream = self._stream(name)
        return await analytics.read_table(stream, start_offset, end_offset)

    @overload
    def statistics(self) -> JournalStatistics: ...
    @overload
    def statistics(self, name: str) -> StreamStatistics: ...

    def statistics(self, name: str | None = None) -> JournalStatistics | StreamStatistics:
        """Counters for one stream, or for the whole journal with a per-stream map."""
        now = self._clock()
        if name is not None:
            return self._stream(name).statistics(now)
        per_stream = {n: s.statistics(now) for n, s in self._streams.items()}
        latency = LatencyHistogram()
        for st in per_stream.values():
            latency.merge(st.fsync_latency)
        return JournalStatistics(
            streams=len(per_stream),
            appends=sum(s.appends for s in per_stream.values()),
            records=sum(s.records for s in per_stream.values()),
            bytes_appended=sum(s.bytes_appended for s in per_stream.values()),
            fsyncs=sum(s.fsyncs for s in per_stream.values()),
            fsync_latency=latency,
            segments=sum(s.segments for s in per_stream.values()),
            size_bytes=sum(s.size_bytes for s in per_stream.values()),
            per_stream=per_stream,
            tiering=self._tiering_statistics(per_stream),
        )

    def _tiering_statistics(
        self, per_stream: dict[str, StreamStatistics]
    ) -> TieringStatistics | None:
        m = self._migrator
        if m is None:
            return None
        cache = m.reader.statistics()
        return TieringStatistics(
            object_url=self._object_url or "",
            uploads=m.uploads,
            bytes_uploaded=m.bytes_uploaded,
            upload_failures=m.failures,
            backlog_segments=sum(s.migration_backlog_segments for s in per_stream.values()),
            backlog_bytes=sum(s.migration_backlog_bytes for s in per_stream.values()),
            trash_pending=len(self._catalog.trashed()),
            objects_deleted=m.objects_deleted,
            orphans_found=m.orphans_found,
            cache_hits=cache.hits,
            cache_misses=cache.misses,
            cache_prefetch_started=cache.prefetch_started,
            cache_prefetched=cache.prefetched,
            cache_bytes=cache.cached_bytes,
            bytes_fetched=cache.bytes_fetched,
            last_error=m.last_error,
        )


def _ignore(position: int, header: BatchHeader) -> bool:
    return False


async def _scan_segment(seg: AnySegment) -> tuple[str, int] | None:
    """CRC-check every batch of a segment in a worker thread: (problem, position) or None."""
    if isinstance(seg, Segment):
        with seg.pinned():
            scan = partial(scan_batches, pread_of(seg.fd), 0, seg.size, seg.base_offset)
            result = await trio.to_thread.run_sync(partial(scan, verify=True, on_batch=_ignore))
    else:
        data = await seg.fetch(0, seg.size)
        if len(data) != seg.size:
            return f"object holds {len(data)} bytes, the catalog says {seg.size}", len(data)
        if seg.crc32c is not None and crc32c.crc32c(data) != seg.crc32c:
            return "object's CRC32C differs from the one recorded at upload", 0
        scan = partial(scan_batches, _bytes_reader(data), 0, seg.size, seg.base_offset)
        result = await trio.to_thread.run_sync(partial(scan, verify=True, on_batch=_ignore))
    return None if result.error is None else (result.error, result.position)


def _bytes_reader(data: bytes) -> Callable[[int, int], bytes]:
    return lambda position, length: data[position : position + length]


def _check_tiering(
    upload_concurrency: int, cache_bytes: int, timeout: float, backoff: tuple[float, float]
) -> None:
    if not isinstance(upload_concurrency, int) or upload_concurrency < 1:
        raise InvalidConfigError(f"upload_concurrency must be >= 1, not {upload_concurrency!r}")
    if not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise InvalidConfigError(f"cache_bytes must be an integer >= 0, not {cache_bytes!r}")
    if not timeout > 0:
        raise InvalidConfigError(f"object_timeout must be > 0 seconds, not {timeout!r}")
    if not 0 < backoff[0] <= backoff[1]:
        raise InvalidConfigError(
            f"upload_backoff must be (min, max) with 0 < min <= max, not {backoff!r}"
        )


def _check_name(name: str) -> None:
    ok = isinstance(name, str) and 0 < len(name) <= _MAX_NAME and "\x00" not in name
    try:
        ok = ok and bool(name.encode())
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise InvalidConfigError(
            f"a stream name is 1..{_MAX_NAME} characters of UTF-8 without NUL, not {name!r}"
        )


def _raise_open_file_limit() -> None:
    """Sealed segments keep a descriptor open each: allow as many as the system lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

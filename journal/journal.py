"""The journal: a directory of streams, their catalog, and the service that tends them.

``Journal.open`` recovers every stream (see ``docs/architecture.md``), then
runs a maintenance task in its own nursery (time-based rolls, retention) until
the ``async with`` block ends, when every stream is fsynced, checkpointed and
closed.

Layout of a data directory::

    <path>/catalog/                RocksDB: streams, sealed segments, checkpoints
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
from typing import overload

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
from journal.segments.segment import scan_batches
from journal.stats import JournalStatistics, LatencyHistogram, StreamStatistics
from journal.stream import Stream, wall_clock_ms

__all__ = ["Journal", "StreamInfo"]

log = logging.getLogger("journal")

_MAX_NAME = 249  # Kafka's topic name limit
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
    ) -> AsyncIterator[Journal]:
        """Open (creating if needed) the journal in ``path``.

        ``fsync`` is the default policy of streams that do not set their own;
        ``clock`` returns wall time in ms (record timestamps, retention, rolls).
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
        root = Path(path)
        (root / "streams").mkdir(parents=True, exist_ok=True)
        _raise_open_file_limit()
        catalog = Catalog(root / "catalog")
        journal = cls(root, catalog, fsync=fsync, fsync_interval_ms=fsync_interval_ms, clock=clock)
        body_error: Exception | None = None
        try:
            journal._recover()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal._maintenance, maintenance_interval)
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
            quarantined=tuple(seg.path.name for seg in s.segments if seg.quarantined),
        )

    # -- writing ----------------------------------------------------------------

    async def append(self, name: str, records: Sequence[Record]) -> AppendResult:
        """Append records; returns once they are durable under the stream's policy.

        The records get consecutive offsets and are stored as one batch, which
        a crash keeps whole or drops whole. A list larger than the stream's
        ``max_batch_bytes`` is stored as several consecutive batches: a crash
        before the acknowledgement may keep a prefix of those batches.
        """
        return await self._stream(name).append_records(list(records), self._clock())

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
        return stream.read(offset, max_bytes)

    async def read_batches(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[bytes]:
        """Raw RecordBatch v2 bytes from the batch holding ``offset`` on."""
        stream = self._stream(name)
        await trio.lowlevel.checkpoint()
        return stream.read_batches(offset, max_bytes)

    async def offset_for_time(self, name: str, timestamp_ms: int) -> int | None:
        """First offset whose timestamp is >= ``timestamp_ms``, or None."""
        stream = self._stream(name)
        await trio.lowlevel.checkpoint()
        return stream.offset_for_time(timestamp_ms)

    async def wait(self, name: str, offset: int) -> None:
        """Wait until ``offset`` is readable (for long polls); never polls itself."""
        await self._stream(name).wait_for(offset)

    async def tail(self, name: str, from_offset: int) -> AsyncIterator[Record]:
        """Every record from ``from_offset`` on, then each new one as it is appended."""
        stream = self._stream(name)
        offset = from_offset
        while True:
            await stream.wait_for(offset)
            records = stream.read(offset, 1 << 20)
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

    async def verify(self, name: str) -> list[StorageError]:
        """Check every batch's CRC32C in every segment; quarantine bad sealed ones."""
        stream = self._stream(name)
        problems: list[StorageError] = []
        for seg in list(stream.segments):
            if seg.quarantined is not None:
                problems.append(StorageError(seg.quarantined, stream=name, segment=seg.path.name))
                continue
            scan = partial(scan_batches, seg.fd, 0, seg.size, seg.base_offset, verify=True)
            result = await trio.to_thread.run_sync(partial(scan, on_batch=_ignore))
            if result.error is not None:
                problems.append(stream.report_corruption(seg, result.error, result.position))
        return problems

    @overload
    def statistics(self) -> JournalStatistics: ...
    @overload
    def statistics(self, name: str) -> StreamStatistics: ...

    def statistics(self, name: str | None = None) -> JournalStatistics | StreamStatistics:
        """Counters for one stream, or for the whole journal with a per-stream map."""
        if name is not None:
            return self._stream(name).statistics()
        per_stream = {n: s.statistics() for n, s in self._streams.items()}
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
        )


def _ignore(position: int, header: BatchHeader) -> bool:
    return False


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

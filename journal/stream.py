"""One stream: its segments, its write path with group commit, and its reads.

Writing. An append encodes outside any lock, then, under the stream's write
lock and without awaiting, stamps offsets into the batch header and writes it
to the active segment (page cache). Durability is awaited *after* the lock is
released, so appenders pile up behind one fsync: the first waiter becomes the
*sync leader*, fsyncs in a worker thread everything written so far, and wakes
the rest (group commit). Under ``interval`` the leader holds the fsync back
while more appends are coming (see :meth:`Stream._gather_group`), so one fsync
serves them too; a lone appender is not delayed. Under ``none`` the maintenance task
fsyncs once a second.

Visibility. Readers see an append once it is acknowledged: after its fsync
under ``always``/``interval``, at once under ``none``. So no reader ever sees
a record that a crash could take back. :attr:`Stream.committed` is that limit.

Reading never takes the write lock, so readers never block writers. The
newest batches are served from memory (:class:`RecentBatches`, the memory
tier); older ones from their segment, whichever tier holds it: a local
segment is ``pread`` from the page cache without yielding, an object-tier one
(:class:`RemoteSegment`) is fetched by byte range through the read cache. A
read finds each next segment by offset, so segments that move to the object
tier or leave by retention while it awaits do not confuse it.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from journal.catalog import Catalog, Checkpoint, SealedSegment, StreamEntry
from journal.config import FsyncPolicy, StreamConfig
from journal.errors import (
    BatchTooLargeError,
    CorruptSegmentError,
    InvalidBatchError,
    JournalClosedError,
    OffsetOutOfRangeError,
    StorageError,
    StreamDeletedError,
)
from journal.records import AppendResult, Record
from journal.segments.batch import (
    HEADER_SIZE,
    BatchHeader,
    check_batch,
    check_client_batch,
    decode_batch,
    encode_batch,
    parse_header,
    set_base_offset,
)
from journal.segments.index import SparseIndex
from journal.segments.segment import Segment, segment_name
from journal.stats import LatencyHistogram, StreamStatistics
from journal.tiering.base import Tier
from journal.tiering.memory import RecentBatches
from journal.tiering.remote import RemoteSegment

__all__ = ["GROUP_COMMIT_BYTES", "AnySegment", "Stream"]

AnySegment = Segment | RemoteSegment

log = logging.getLogger("journal")

GROUP_COMMIT_BYTES = 1 << 20
_INDEX_FLUSH_ENTRIES = 64  # write index entries to their files in groups this size
_MIN_READ = 64 << 10  # smallest pread of a read: many headers for one syscall


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Stream:
    """A named, ordered sequence of records stored as segment files."""

    def __init__(
        self,
        entry: StreamEntry,
        directory: Path,
        catalog: Catalog,
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int,
        objects: Tier | None = None,
    ) -> None:
        self.name = entry.name
        self.id = entry.id
        self.config: StreamConfig = entry.config
        self.directory = directory
        self._catalog = catalog
        self.policy: FsyncPolicy = entry.config.fsync or fsync
        interval = entry.config.fsync_interval_ms
        self._interval = (fsync_interval_ms if interval is None else interval) / 1000
        self.segments: list[AnySegment] = []
        self.objects = objects  # the object tier (through its read cache), if any
        self.recent = RecentBatches(entry.config.memory_bytes)
        self.committed = 0  # readers see offsets below this
        self._durable = 0  # offsets below this are fsynced
        self._write_lock = trio.Lock()
        self._appended = trio.Event()  # replaced each time `committed` advances
        self._syncing = False
        self._synced = trio.Event()  # replaced after each sync
        self._group_ready = trio.Event()  # set when the interval leader may stop waiting
        self._dirty_bytes = 0
        self._arriving = 0  # appends that have started but not yet written
        self._last_sync = -float("inf")  # when the previous fsync started
        self._closed: JournalClosedError | None = None
        self._failed: StorageError | None = None
        self._appends = self._records = self._bytes = self._fsyncs = 0
        self._fsync_latency = LatencyHistogram()

    # -- opening --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        entry: StreamEntry,
        directory: Path,
        catalog: Catalog,
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int,
        now_ms: int,
        objects: Tier | None = None,
    ) -> Stream:
        """Open (and, after a crash, recover) a stream's segments."""
        self = cls(
            entry, directory, catalog,
            fsync=fsync, fsync_interval_ms=fsync_interval_ms, objects=objects,
        )  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self._recover(now_ms)
        except BaseException:
            for seg in self.segments:
                seg.close()
            raise
        self.committed = self._durable = self.active.next_offset
        return self

    def _recover(self, now_ms: int) -> None:
        interval = self.config.index_interval_bytes
        sealed = self._catalog.sealed_segments(self.id)
        quarantined = self._catalog.quarantined(self.id)
        ckpt = self._catalog.checkpoint(self.id)
        for (_, base), key in self._catalog.uploads(self.id).items():
            log.info("stream %s: discarding an upload of %d that never committed", self.name, base)
            self._catalog.abandon_upload(self.id, base, key)
        remote = {base: seg for base, seg in sealed.items() if seg.tier == "object"}
        files = {int(p.stem) for p in self.directory.glob("*.log") if _is_segment(p)}
        for base in files & set(remote):
            # Committed to the object tier before a crash took the local delete.
            for suffix in (".log", ".index", ".timeindex"):
                (self.directory / f"{segment_name(base)}{suffix}").unlink(missing_ok=True)
        files -= set(remote)
        for base in set(sealed) - files - set(remote):
            self._catalog.forget_segment(self.id, base)  # removed by retention before a crash
        bases = sorted(files | set(remote))
        for i, base in enumerate(bases):
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            if base in remote:
                seg_r = self._remote(remote[base])
                seg_r.quarantined = quarantined.get(base)
                self.segments.append(seg_r)
                continue
            path = self.directory / f"{segment_name(base)}.log"
            is_last = next_base is None
            known = sealed.get(base)
            if next_base is None and known is not None:
                next_base = known.next_offset
            if base in quarantined:
                self.segments.append(_quarantined(path, base, interval, next_base, quarantined))
                continue
            if known is not None:
                seg, result = Segment.recover(
                    path, base, interval, trusted=known.size, trusted_next=known.next_offset,
                    sealed=True, stream=self.name,
                )  # fmt: skip
                if result.error is not None:
                    seg.close()
                    self._quarantine(seg, result.error, result.position, next_base)
                    continue
            elif not is_last:
                # Rolled but not recorded as sealed before a crash: verify it all once.
                seg, result = Segment.recover(
                    path, base, interval, trusted=0, trusted_next=base, sealed=False,
                    stream=self.name,
                )  # fmt: skip
                if result.error is not None:
                    seg.close()
                    self._quarantine(seg, result.error, result.position, next_base)
                    continue
                seg.flush_index(sync=True)
                os.fsync(seg.fd)
                seg.sealed = True
                self._catalog.seal(self.id, _sealed_entry(seg), _checkpoint_for(ckpt, base))
            else:
                trusted = ckpt is not None and ckpt.segment == base
                seg, result = Segment.recover(
                    path, base, interval,
                    trusted=ckpt.position if ckpt is not None and trusted else 0,
                    trusted_next=ckpt.next_offset if ckpt is not None and trusted else base,
                    sealed=False, stream=self.name,
                )  # fmt: skip
                if result.error is not None:
                    log.warning(
                        "stream %s: truncating %s at byte %d: %s",
                        self.name, path.name, result.position, result.error,
                    )  # fmt: skip
                    seg.truncate(result.position)
                # What survived past the checkpoint may never have been fsynced (a
                # crash, or a failed fsync): make it durable before readers see it.
                os.fsync(seg.fd)
                self._catalog.set_checkpoint(self.id, Checkpoint(base, seg.size, seg.next_offset))
                if ckpt is not None and trusted and seg.next_offset < ckpt.next_offset:
                    log.error(
                        "stream %s: %s ends at offset %d but offsets up to %d were fsynced",
                        self.name, path.name, seg.next_offset, ckpt.next_offset,
                    )  # fmt: skip
                seg.created_ms = now_ms if seg.size else None
            self.segments.append(seg)
        if not self.segments or self.segments[-1].sealed:
            start = self.segments[-1].next_offset if self.segments else _start_offset(ckpt)
            self.segments.append(Segment.create(self.directory, start, interval))
            self._catalog.set_checkpoint(self.id, Checkpoint(start, 0, start))
            _fsync_dir(self.directory)

    def _remote(self, entry: SealedSegment) -> RemoteSegment:
        if self.objects is None:
            raise StorageError(
                "segment is in the object tier but the journal was opened without object_url",
                stream=self.name, segment=f"{entry.key}.log",
            )  # fmt: skip
        return RemoteSegment(
            entry, self.objects, index_interval=self.config.index_interval_bytes, stream=self.name
        )

    def _quarantine(
        self, seg: AnySegment, reason: str, position: int, next_base: int | None
    ) -> None:
        """Refuse a sealed segment that failed its checks; keep the file for an operator."""
        message = f"{reason} (at byte {position})"
        log.error("stream %s: quarantining %s: %s", self.name, seg.name, message)
        self._catalog.quarantine(self.id, seg.base_offset, message)
        seg.quarantined = message
        self.recent.clear()  # it may hold copies of the refused batches
        if isinstance(seg, Segment):
            seg.sealed = True
            seg.size = seg.file_size()
        if next_base is not None:
            seg.next_offset = next_base
        if seg not in self.segments:
            self.segments.append(seg)

    # -- properties -----------------------------------------------------------

    @property
    def active(self) -> Segment:
        seg = self.segments[-1]
        assert isinstance(seg, Segment)  # the newest segment is always local
        return seg

    @property
    def first_offset(self) -> int:
        return self.segments[0].base_offset

    @property
    def next_offset(self) -> int:
        """The offset the next append will get (it may not be committed yet)."""
        return self.active.next_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    # -- writing --------------------------------------------------------------

    async def append_records(self, records: list[Record], now_ms: int) -> AppendResult:
        if not records:
            raise InvalidBatchError("an append needs at least one record")
        batches = _encode_split(records, now_ms, self.config.max_batch_bytes)
        return await self._append(batches, now_ms)

    async def append_raw(self, raw: bytes | bytearray | memoryview, now_ms: int) -> AppendResult:
        if len(raw) > self.config.max_batch_bytes:
            raise BatchTooLargeError(
                f"batch of {len(raw)} bytes exceeds max_batch_bytes="
                f"{self.config.max_batch_bytes} of stream {self.name!r}"
            )
        check_client_batch(raw)
        return await self._append([bytearray(raw)], now_ms)

    async def _append(self, batches: list[bytearray], now_ms: int) -> AppendResult:
        self._check_open()
        if self._failed is not None:
            raise self._failed
        size = sum(len(b) for b in batches)
        self._arriving += 1
        try:
            async with self._write_lock:
                self._check_open()
                base, end = await self._write(batches, size, now_ms)
        finally:
            self._arriving -= 1
            if not self._arriving or self._dirty_bytes >= GROUP_COMMIT_BYTES:
                self._group_ready.set()
        if self.policy == "none":
            if end > self.committed:
                self._publish(end)
            await trio.lowlevel.checkpoint()
        else:
            await self._wait_durable(end)
        return AppendResult(base, end - 1)

    async def _write(self, batches: list[bytearray], size: int, now_ms: int) -> tuple[int, int]:
        """Stamp offsets and write to the page cache, all or nothing. Holds the write lock."""
        seg = self.active
        if seg.size and (size + seg.size > self.config.segment_bytes or self._aged(now_ms)):
            await self._roll()
            seg = self.active
        base = seg.next_offset
        start = seg.size
        max_timestamp = seg.index.max_timestamp
        try:
            for batch in batches:
                batch_base = seg.next_offset
                set_base_offset(batch, batch_base)
                seg.write(batch, parse_header(batch, 0))
                self.recent.add(batch_base, seg.next_offset, batch)
        except OSError as exc:
            self.recent.clear()
            seg.truncate(start)
            seg.next_offset = base
            seg.index.max_timestamp = max_timestamp
            raise StorageError(
                f"write failed: {exc}", stream=self.name, segment=seg.path.name, position=start
            ) from exc
        if seg.created_ms is None:
            seg.created_ms = now_ms
        self._appends += 1
        self._records += seg.next_offset - base
        self._bytes += size
        self._dirty_bytes += size
        return base, seg.next_offset

    def _aged(self, now_ms: int) -> bool:
        created = self.active.created_ms
        return created is not None and now_ms - created >= self.config.segment_ms

    async def _wait_durable(self, offset: int) -> None:
        """Return once offsets below ``offset`` are fsynced (group commit)."""
        while self._durable < offset:
            if self._failed is not None:
                raise self._failed
            self._check_open()
            if self._syncing:
                await self._synced.wait()
                continue
            async with self._leading():
                if self.policy == "interval":
                    await self._gather_group()
                await self._sync()

    async def _gather_group(self) -> None:
        """Hold the fsync back while more appends are coming, within the window.

        Like PostgreSQL's ``commit_delay``: wait only while it pays. Each
        scheduler pass lets runnable appenders write; the leader stops when a
        pass brings nothing new and nobody is half-way in, when about 1 MiB
        waits, or when ``fsync_interval_ms`` have passed since the previous
        fsync started. A lone appender is held back by one pass, not a window.
        """
        deadline = self._last_sync + self._interval
        while self._dirty_bytes < GROUP_COMMIT_BYTES and trio.current_time() < deadline:
            before = self._dirty_bytes
            if self._arriving:
                with trio.move_on_at(deadline):
                    await self._group_ready.wait()
            else:
                await trio.lowlevel.checkpoint()
                if self._dirty_bytes == before and not self._arriving:
                    return

    @asynccontextmanager
    async def _leading(self) -> AsyncIterator[None]:
        """Be the one task that fsyncs; the others wait for ``_synced``.

        Exclusive, so a roll or a close never seals or closes a file while a
        worker thread is still fsyncing it.
        """
        while self._syncing:
            await self._synced.wait()
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False
            done, self._synced = self._synced, trio.Event()
            done.set()

    async def _sync(self) -> None:
        """fsync the active segment in a worker thread; commit what it covered."""
        seg = self.active
        target, position = seg.next_offset, seg.size
        self._dirty_bytes = 0
        self._group_ready = trio.Event()
        self._last_sync = trio.current_time()
        started = time.perf_counter()
        try:
            await trio.to_thread.run_sync(os.fsync, seg.fd)
        except OSError as exc:
            # After a failed fsync the page cache may have dropped our bytes:
            # refuse further writes rather than acknowledge on top of a hole.
            self._failed = StorageError(
                f"fsync failed, stream refuses writes until reopened: {exc}",
                stream=self.name, segment=seg.path.name, position=position,
            )  # fmt: skip
            raise self._failed from exc
        self._fsync_latency.observe(time.perf_counter() - started)
        self._fsyncs += 1
        if target > self._durable:
            self._durable = target
            if target > self.committed:
                self._publish(target)  # wake readers first: the rest is bookkeeping
            if seg is self.active:
                self._catalog.set_checkpoint(self.id, Checkpoint(seg.base_offset, position, target))
                if len(seg.index) - seg.index_flushed >= _INDEX_FLUSH_ENTRIES:
                    seg.flush_index()

    def _publish(self, offset: int) -> None:
        self.committed = offset
        woken, self._appended = self._appended, trio.Event()
        woken.set()

    async def _roll(self) -> None:
        """Seal the active segment and start a new one. Caller holds the write lock."""
        old = self.active
        async with self._leading():
            await self._sync()
        await trio.to_thread.run_sync(partial(old.flush_index, sync=True))
        old.sealed = True
        new = Segment.create(self.directory, old.next_offset, self.config.index_interval_bytes)
        self.segments.append(new)
        checkpoint = Checkpoint(new.base_offset, 0, new.base_offset)
        self._catalog.seal(self.id, _sealed_entry(old), checkpoint)
        await trio.to_thread.run_sync(_fsync_dir, self.directory)

    async def roll(self) -> None:
        """Seal the active segment now (if it holds anything)."""
        async with self._write_lock:
            self._check_open()
            if self.active.size:
                await self._roll()

    # -- reading --------------------------------------------------------------

    def _check_range(self, offset: int) -> None:
        self._check_open()
        if not self.first_offset <= offset <= self.committed:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside stream {self.name!r}",
                first_offset=self.first_offset,
                next_offset=self.committed,
            )

    async def read_batches(self, offset: int, max_bytes: int) -> list[bytes]:
        """Raw batches from the one holding ``offset`` on, about ``max_bytes`` in all.

        The first batch is returned even when it alone is larger than
        ``max_bytes`` (so a consumer always makes progress); it may start before
        ``offset``, as in Kafka. A segment that cannot be read (quarantined, or
        in an unreachable object tier) ends the read; it raises only when the
        first batch asked for lies in it.
        """
        self._check_range(offset)
        limit = self.committed
        hot = self.recent.read(offset, limit, max_bytes)
        if hot is not None:
            return hot
        out: list[bytes] = []
        budget = max_bytes
        while offset < limit:
            i = bisect_right(self.segments, offset, key=_base_offset) - 1
            if i < 0 or self._closed is not None:
                break  # retention or closing overtook a read that awaited
            seg = self.segments[i]
            try:
                offset, budget, full = await self._read_segment(seg, offset, limit, budget, out)
            except StorageError:
                if out:
                    break
                raise
            if full or offset < seg.next_offset:
                break
        return out

    async def _read_segment(
        self, seg: AnySegment, offset: int, limit: int, budget: int, out: list[bytes]
    ) -> tuple[int, int, bool]:
        if seg.quarantined is not None:
            raise CorruptSegmentError(
                f"segment is quarantined: {seg.quarantined}",
                stream=self.name, segment=seg.name,
            )  # fmt: skip
        await seg.ready()
        pos = (await self._checked_entry(seg, lambda: seg.index.entry_for_offset(offset)))[1]
        end = seg.size
        reader = _Reader(seg, max(budget + 2 * self.config.index_interval_bytes, _MIN_READ))
        while pos < end:
            buf, rel = await reader.at(pos, HEADER_SIZE)
            header = self._header_at(seg, buf, rel, pos)
            if header.base_offset >= limit:
                return offset, budget, True
            size = header.size
            if header.next_offset > offset:
                if out and size > budget:
                    return offset, budget, True
                buf, rel = await reader.at(pos, size)
                self._verify(seg, buf, rel, pos)
                out.append(buf if rel == 0 and size == len(buf) else buf[rel : rel + size])
                budget -= size
                offset = header.next_offset
            pos += size
        return offset, budget, budget <= 0

    async def _checked_entry(
        self, seg: AnySegment, lookup: Callable[[], tuple[int, int]]
    ) -> tuple[int, int]:
        """The index entry (offset, position) ``lookup`` finds, checked against the log.

        An entry that does not point at the batch it names means the index, not
        the log, is damaged: rebuild it from the headers rather than condemn a
        good segment.
        """
        entry_offset, pos = lookup()
        try:
            header = parse_header(await seg.fetch(pos, HEADER_SIZE), 0)
            if header.base_offset == entry_offset:
                return entry_offset, pos
        except InvalidBatchError:
            pass
        log.warning("stream %s: rebuilding the damaged index of %s", self.name, seg.name)
        problem = seg.rebuild_index()
        if problem is not None:
            raise self.report_corruption(seg, problem, pos)
        return lookup()

    def _header_at(self, seg: AnySegment, buf: bytes, rel: int, pos: int) -> BatchHeader:
        try:
            return parse_header(buf, rel)
        except InvalidBatchError as exc:
            raise self.report_corruption(seg, exc.reason, pos) from None

    def _verify(self, seg: AnySegment, buf: bytes, rel: int, pos: int) -> None:
        try:
            check_batch(buf, rel)
        except InvalidBatchError as exc:
            raise self.report_corruption(seg, exc.reason, pos) from None

    def report_corruption(self, seg: AnySegment, reason: str, pos: int) -> StorageError:
        """A batch failed its checks: quarantine a sealed segment, never serve it."""
        if seg.sealed and seg.quarantined is None:
            self._quarantine(seg, reason, pos, None)
            if isinstance(seg, Segment):
                seg.retire()
        cls = CorruptSegmentError if seg.sealed else StorageError
        return cls(f"corrupt batch: {reason}", stream=self.name, segment=seg.name, position=pos)

    async def read(self, offset: int, max_bytes: int) -> list[Record]:
        records: list[Record] = []
        for raw in await self.read_batches(offset, max_bytes):
            _, batch = decode_batch(raw)
            if batch and batch[0].offset is not None and batch[0].offset < offset:
                batch = [r for r in batch if r.offset is not None and r.offset >= offset]
            records += batch
        return records

    async def offset_for_time(self, timestamp: int) -> int | None:
        """The first committed offset whose timestamp is >= ``timestamp``."""
        self._check_open()
        for seg in list(self.segments):
            if seg.quarantined is not None or seg.max_timestamp < timestamp:
                continue
            await seg.ready()
            _, pos = await self._checked_entry(seg, partial(_time_entry, seg, timestamp))
            reader = _Reader(seg, _MIN_READ)
            while pos < seg.size:
                buf, rel = await reader.at(pos, HEADER_SIZE)
                header = self._header_at(seg, buf, rel, pos)
                if header.max_timestamp >= timestamp:
                    buf, rel = await reader.at(pos, header.size)
                    self._verify(seg, buf, rel, pos)
                    for rec in decode_batch(buf[rel : rel + header.size])[1]:
                        if rec.timestamp is not None and rec.timestamp >= timestamp:
                            off = rec.offset
                            return off if off is not None and off < self.committed else None
                pos += header.size
        return None

    async def wait_for(self, offset: int) -> None:
        """Wait until ``offset`` is committed (readable). Never polls."""
        while self.committed <= offset:
            self._check_open()
            await self._appended.wait()
        self._check_open()

    # -- maintenance ----------------------------------------------------------

    async def maintain(self, now_ms: int) -> int:
        """Roll an aged active segment, then apply retention; returns segments removed."""
        if self._closed is None and self.active.size and self._aged(now_ms):
            async with self._write_lock:
                if self._closed is None and self.active.size and self._aged(now_ms):
                    await self._roll()
        if self._durable < self.next_offset and self._closed is None:
            # Under "none", bounds what a crash can take; otherwise, appends whose
            # callers were cancelled before their fsync.
            await self._wait_durable(self.next_offset)
        return self.apply_retention(now_ms)

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole sealed segments past ``retention_bytes``/``retention_ms``, every tier.

        An object-tier segment goes to the catalog's trash (the migration
        service deletes the objects). With an object tier, a local segment is
        never deleted before its upload has committed, even past retention:
        the oldest segments are uploaded first, and removed on a later pass.
        """
        removed = 0
        total = self.size_bytes
        while len(self.segments) > 1 and self._closed is None:
            seg = self.segments[0]
            if not self._expired(seg, total, now_ms):
                break
            if isinstance(seg, RemoteSegment):
                self._catalog.forget_segment(self.id, seg.base_offset, key=seg.key)
            elif self.objects is not None and seg.quarantined is None:
                break  # not uploaded yet: the migration service takes it first
            else:
                self._catalog.forget_segment(self.id, seg.base_offset)
                seg.remove()
            del self.segments[0]
            total -= seg.size
            removed += 1
        return removed

    def _expired(self, seg: AnySegment, total: int, now_ms: int) -> bool:
        cfg = self.config
        too_big = cfg.retention_bytes is not None and total > cfg.retention_bytes
        too_old = cfg.retention_ms is not None and 0 <= seg.max_timestamp < (
            now_ms - cfg.retention_ms
        )
        return too_big or too_old

    # -- tiering ------------------------------------------------------------------

    def migration_candidates(self, now_ms: int) -> list[Segment]:
        """Sealed local segments to move to the object tier now, oldest first.

        A segment goes once the sealed local bytes exceed
        ``local_retention_bytes``, its newest record is older than
        ``local_retention_ms``, or retention wants it gone (see
        :meth:`apply_retention`). Migration is in offset order, so the object
        tier always holds a prefix of the stream.
        """
        if self.objects is None or self._closed is not None:
            return []
        cfg = self.config
        local = [s for s in self.segments[:-1] if isinstance(s, Segment)]
        local_bytes = sum(s.size for s in local)
        total = self.size_bytes
        out = []
        for seg in local:
            if seg.quarantined is not None:
                break  # never uploaded: an operator decides
            over = cfg.local_retention_bytes is not None and local_bytes > cfg.local_retention_bytes
            old = cfg.local_retention_ms is not None and 0 <= seg.max_timestamp < (
                now_ms - cfg.local_retention_ms
            )
            if not (over or old or self._expired(seg, total, now_ms)):
                break
            out.append(seg)
            local_bytes -= seg.size
            total -= seg.size
        return out

    def holds(self, seg: AnySegment) -> bool:
        """Whether ``seg`` is still one of this open stream's segments."""
        return self._closed is None and any(s is seg for s in self.segments)

    def replace_segment(self, old: Segment, new: RemoteSegment) -> None:
        """Swap a local segment for its committed object-tier copy and delete the file.

        Synchronous, so no read is half-way through ``old`` (local reads never
        yield inside a segment) and no retention pass runs in between.
        """
        i = next(i for i, s in enumerate(self.segments) if s is old)
        self.segments[i] = new
        old.remove()

    def tier_bytes(self) -> dict[str, int]:
        """Bytes per tier: the active segment counts as memory (its newest part is served
        from there), sealed segments as local or object."""
        out = {"memory": self.active.size, "local": 0, "object": 0}
        for seg in self.segments[:-1]:
            out[seg.tier] += seg.size
        return out

    # -- closing --------------------------------------------------------------

    async def close(self, *, deleted: bool = False) -> None:
        """Make everything durable, checkpoint, and close the files."""
        with trio.CancelScope(shield=True):
            async with self._write_lock, self._leading():
                if self._closed is not None:
                    return
                seg = self.active
                if not deleted and self._failed is None:
                    await self._sync()
                    seg.flush_index()
                    self._catalog.set_checkpoint(
                        self.id, Checkpoint(seg.base_offset, seg.size, seg.next_offset)
                    )
                self._shut(StreamDeletedError if deleted else JournalClosedError)

    def abandon(self) -> None:
        """Close the files as a crash would: no fsync, no checkpoint (for tests)."""
        self._shut(JournalClosedError)

    def _shut(self, error: type[JournalClosedError]) -> None:
        self._closed = error(f"stream {self.name!r} is closed")
        for seg in self.segments:
            if isinstance(seg, Segment):
                seg.retire()  # a worker thread may still be scanning or uploading it
        woken, self._appended = self._appended, trio.Event()
        woken.set()
        self._synced.set()

    # -- statistics -----------------------------------------------------------

    def statistics(self, now_ms: int) -> StreamStatistics:
        tiers = self.tier_bytes()
        backlog = self.migration_candidates(now_ms)
        return StreamStatistics(
            name=self.name,
            first_offset=self.first_offset,
            next_offset=self.committed,
            size_bytes=self.size_bytes,
            segments=len(self.segments),
            quarantined_segments=sum(s.quarantined is not None for s in self.segments),
            appends=self._appends,
            records=self._records,
            bytes_appended=self._bytes,
            fsyncs=self._fsyncs,
            fsync_latency=self._fsync_latency.copy(),
            memory_bytes=self.recent.used_bytes,
            local_bytes=tiers["memory"] + tiers["local"],
            object_bytes=tiers["object"],
            object_segments=sum(isinstance(s, RemoteSegment) for s in self.segments),
            migration_backlog_segments=len(backlog),
            migration_backlog_bytes=sum(s.size for s in backlog),
        )


def _encode_split(records: list[Record], now_ms: int, limit: int) -> list[bytearray]:
    """Encode records into one batch, or into as few as fit ``limit`` bytes each.

    A list that fits is always one batch (a crash keeps it whole or drops it);
    the size estimate only decides where a list far too large is cut.
    """
    sizes = [_estimated_size(rec) for rec in records]
    if sum(sizes) <= 2 * limit:
        batch = encode_batch(records, now_ms=now_ms)
        if len(batch) <= limit:
            return [bytearray(batch)]
    batches: list[bytearray] = []
    chunk: list[Record] = []
    budget = limit - HEADER_SIZE
    for rec, size in zip(records, sizes, strict=True):
        if chunk and size > budget:
            batches += _encode_chunk(chunk, now_ms, limit)
            chunk, budget = [], limit - HEADER_SIZE
        chunk.append(rec)
        budget -= size
    return batches + _encode_chunk(chunk, now_ms, limit)


def _encode_chunk(records: list[Record], now_ms: int, limit: int) -> list[bytearray]:
    batch = encode_batch(records, now_ms=now_ms)
    if len(batch) <= limit:
        return [bytearray(batch)]
    if len(records) == 1:
        raise BatchTooLargeError(f"a record of {len(batch)} bytes exceeds max_batch_bytes")
    half = len(records) // 2  # the estimate was short: rare, so halving is fine
    return _encode_chunk(records[:half], now_ms, limit) + _encode_chunk(
        records[half:], now_ms, limit
    )


def _estimated_size(rec: Record) -> int:
    """About a record's encoded size: within a factor of two, which is all callers need."""
    size = len(rec.key or b"") + len(rec.value or b"")
    size += 10 if size < 64 else 14
    for key, value in rec.headers:
        size += 4 + len(key) + len(value or b"")
    return size


class _Reader:
    """Buffered reads of one segment, so one fetch serves many batch headers."""

    def __init__(self, seg: AnySegment, chunk: int) -> None:
        self.seg = seg
        self.chunk = chunk
        self.buf = b""
        self.start = 0

    async def at(self, pos: int, length: int) -> tuple[bytes, int]:
        """A buffer holding bytes ``pos:pos+length`` (fewer at the end), and where they start."""
        rel = pos - self.start
        if rel < 0 or len(self.buf) - rel < length:
            want = max(length, min(self.chunk, self.seg.size - pos))
            self.buf, self.start, rel = await self.seg.fetch(pos, want), pos, 0
        return self.buf, rel


def _base_offset(seg: AnySegment) -> int:
    return seg.base_offset


def _time_entry(seg: AnySegment, timestamp: int) -> tuple[int, int]:
    return seg.index.entry_for_time(timestamp)


def _is_segment(path: Path) -> bool:
    return len(path.stem) == 20 and path.stem.isdigit()


def _sealed_entry(seg: Segment) -> SealedSegment:
    return SealedSegment(seg.base_offset, seg.size, seg.next_offset, seg.max_timestamp)


def _checkpoint_for(ckpt: Checkpoint | None, base: int) -> Checkpoint:
    return ckpt if ckpt is not None else Checkpoint(base, 0, base)


def _start_offset(ckpt: Checkpoint | None) -> int:
    return 0 if ckpt is None else ckpt.next_offset


def _quarantined(
    path: Path, base: int, interval: int, next_base: int | None, reasons: dict[int, str]
) -> Segment:
    seg = Segment(path, base, -1, SparseIndex(base, interval), sealed=True)
    seg.quarantined = reasons[base]
    seg.size = path.stat().st_size
    seg.next_offset = next_base if next_base is not None else base
    return seg


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

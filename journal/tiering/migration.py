"""The migration service: sealed segments move from local disk to the object tier.

The order of one move is what makes it crash-safe (see ``docs/tiering.md``):

1. record an *upload intent* (stream, segment, fresh unique key) in the
   catalog, synced -- from here on a crash leaves a findable orphan, not a leak;
2. upload the index files and the log under the key (never overwriting:
   every attempt has its own key);
3. verify: the object's size, and a CRC32C of the bytes read back, against the
   local file;
4. commit, in one synced catalog write: the segment's entry now says
   ``object`` with the key, and the intent is gone;
5. swap the segment in the stream and delete the local file.

A crash before 4 leaves the local file and an intent (the next open trashes
the upload); after 4, the committed copy (the next open deletes a leftover
local file). Nothing is ever deleted locally before 4.

Objects to delete (retention, deleted streams, abandoned uploads) go through
the catalog's trash, so a deletion that fails while the store is down is
retried, not forgotten. On its first pass the service also lists the
journal's own prefix and trashes objects the catalog does not know: orphans
from a crash between an upload and its intent cannot exist, but a store
restored from a backup, or an intent lost with a catalog, can leave some.

Failures never stop appends or hot reads: the service logs, counts, backs off
per stream (doubling up to a ceiling), and tries again.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import crc32c
import trio

from journal.catalog import Catalog, SealedSegment
from journal.errors import ObjectStoreError, ObjectStoreTimeoutError, StorageError
from journal.segments.segment import Segment, segment_name
from journal.stream import Stream
from journal.tiering.base import Tier
from journal.tiering.cache import CachedTier
from journal.tiering.remote import SUFFIXES, RemoteSegment

__all__ = ["Migrator"]

log = logging.getLogger("journal.tiering")

_VERIFY_CHUNK = 8 << 20
SWEEP_INTERVAL = 3600.0
_KEY = re.compile(r"^[^/]+/\d{20}-[0-9a-f]{12}$")  # <stream dir>/<base>-<unique>


class Migrator:
    """Uploads, verifies, commits and deletes; owned by the journal's nursery."""

    def __init__(
        self,
        catalog: Catalog,
        store: Tier,
        reader: CachedTier,
        streams: Callable[[], list[Stream]],
        *,
        journal_id: str,
        concurrency: int,
        backoff: tuple[float, float],
        clock: Callable[[], int],
        grace: float,
    ) -> None:
        self._catalog = catalog
        self.store = store
        self.reader = reader
        self._streams = streams
        self.prefix = journal_id
        self._limiter = trio.CapacityLimiter(concurrency)
        self._backoff = backoff
        self._clock = clock
        self._lock = trio.Lock()  # one pass at a time: no segment is uploaded twice
        self._wake = trio.Event()
        self._retry_at: dict[int, float] = {}  # stream id -> trio time of its next try
        self._delay: dict[int, float] = {}
        self._swept = False
        self._grace = grace
        self._hold_until: dict[str, float] = {}  # trashed keys an abandoned call may still write
        self._last_sweep = -float("inf")
        self.uploads = self.bytes_uploaded = self.failures = 0
        self.objects_deleted = self.orphans_found = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        """Run a pass now rather than at the next interval (after a roll, say)."""
        self._wake.set()

    async def run(self, interval: float, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(interval):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.run_pass(respect_backoff=True)

    async def run_pass(self, *, respect_backoff: bool = False, only: Stream | None = None) -> int:
        """Migrate what is due (of one stream, or all), then empty the trash.

        Returns the segments moved. The orphan sweep runs on the first pass,
        again once the store works after a failure (a call abandoned at its
        timeout may still land an object after its key was trashed and
        deleted), and at least every ``SWEEP_INTERVAL`` seconds.
        """
        async with self._lock:
            if not self._swept or trio.current_time() - self._last_sweep > SWEEP_INTERVAL:
                await self._guard(self._sweep_orphans)
            failures = self.failures
            moved = await self._migrate_all(respect_backoff, only)
            await self._guard(self._empty_trash)
            if self.failures != failures:
                self._swept = False
            return moved

    async def _guard(self, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except (ObjectStoreError, OSError) as exc:
            self._failed(f"{exc}")

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.warning("tiering: %s", message)

    # -- migrating ------------------------------------------------------------------

    async def _migrate_all(self, respect_backoff: bool, only: Stream | None) -> int:
        now_ms = self._clock()
        moved = [0]
        async with trio.open_nursery() as nursery:
            for stream in self._streams() if only is None else [only]:
                if respect_backoff and self._retry_at.get(stream.id, 0.0) > trio.current_time():
                    continue
                segments = stream.migration_candidates(now_ms)
                if segments:
                    nursery.start_soon(self._migrate_stream, stream, segments, moved)
        return moved[0]

    async def _migrate_stream(
        self, stream: Stream, segments: list[Segment], moved: list[int]
    ) -> None:
        async with self._limiter:
            for seg in segments:
                try:
                    if not await self.migrate(stream, seg):
                        return
                except (ObjectStoreError, StorageError, OSError) as exc:
                    delay = min(
                        self._delay.get(stream.id, self._backoff[0] / 2) * 2, self._backoff[1]
                    )
                    self._delay[stream.id] = delay
                    self._retry_at[stream.id] = trio.current_time() + delay
                    self._failed(
                        f"upload of {stream.name}/{seg.name} failed ({exc}); retry in {delay:g} s"
                    )
                    return
                moved[0] += 1
                self._delay.pop(stream.id, None)
                self._retry_at.pop(stream.id, None)

    async def migrate(self, stream: Stream, seg: Segment) -> bool:
        """Move one sealed segment; False if the stream let go of it meanwhile."""
        if not stream.holds(seg):
            return False
        key = f"{self.prefix}/{stream.directory.name}/{segment_name(seg.base_offset)}-"
        key += uuid.uuid4().hex[:12]
        self._catalog.begin_upload(stream.id, seg.base_offset, key)
        committed = False
        abandoned_call = False
        try:
            with seg.pinned():
                crc = await trio.to_thread.run_sync(_file_crc32c, seg.path, seg.size)
                offsets, times = seg.index.encode()
                await self.store.put(key + ".index", offsets)
                await self.store.put(key + ".timeindex", times)
                await self.store.put_file(key + ".log", seg.path)
                await self._verify_upload(stream, seg, key, crc)
            if not stream.holds(seg):
                return False
            entry = SealedSegment(
                seg.base_offset, seg.size, seg.next_offset, seg.max_timestamp,
                tier="object", key=key, crc32c=crc,
            )  # fmt: skip
            self._catalog.commit_upload(stream.id, entry)
            committed = True
            remote = RemoteSegment(
                entry, self.reader, index_interval=seg.index.interval, stream=stream.name
            )
            remote.index = seg.index  # already at hand: no need to fetch it back
            remote._index_loaded = True
            stream.replace_segment(seg, remote)
        except (ObjectStoreTimeoutError, trio.Cancelled):
            abandoned_call = True
            raise
        finally:
            if not committed:
                self._catalog.abandon_upload(stream.id, seg.base_offset, key)
                if abandoned_call:
                    self._hold_until[key] = trio.current_time() + self._grace
        self.uploads += 1
        self.bytes_uploaded += seg.size
        log.info("tiering: moved %s/%s to %s", stream.name, seg.name, key)
        return True

    async def _verify_upload(self, stream: Stream, seg: Segment, key: str, crc: int) -> None:
        size = await self.store.size(key + ".log")
        if size != seg.size:
            raise ObjectStoreError(
                f"uploaded object has {size} bytes, the segment {seg.size}",
                stream=stream.name, segment=seg.name,
            )  # fmt: skip
        remote_crc = 0
        for start in range(0, size, _VERIFY_CHUNK):
            data = await self.store.get(key + ".log", start, min(start + _VERIFY_CHUNK, size))
            if data is None:
                raise ObjectStoreError(
                    "uploaded object vanished", stream=stream.name, segment=seg.name
                )
            remote_crc = crc32c.crc32c(data, remote_crc)
        if remote_crc != crc:
            raise ObjectStoreError(
                f"uploaded CRC32C {remote_crc:#010x} differs from the segment's {crc:#010x}",
                stream=stream.name, segment=seg.name,
            )  # fmt: skip

    # -- deleting -------------------------------------------------------------------

    async def _empty_trash(self) -> None:
        """Delete trashed objects. A key whose upload was abandoned mid-call stays in the
        trash for a grace period and is deleted again on each pass, in case the
        abandoned request lands late (after a restart no such request is left)."""
        now = trio.current_time()
        for key in self._catalog.trashed():
            for suffix in SUFFIXES:
                await self.reader.delete(key + suffix)
            if self._hold_until.get(key, now) > now:
                continue
            self._hold_until.pop(key, None)
            self._catalog.untrash(key)
            self.objects_deleted += 1

    async def _sweep_orphans(self) -> None:
        known = self._catalog.object_keys()
        stems: set[str] = set()
        for key in await self.store.keys(self.prefix + "/"):
            stem, dot, suffix = key.rpartition(".")
            if dot and "." + suffix in SUFFIXES and _KEY.match(stem[len(self.prefix) + 1 :]):
                stems.add(stem)
        for stem in sorted(stems - known):
            log.warning("tiering: trashing orphaned upload %s", stem)
            self._catalog.trash(stem)
            self.orphans_found += 1
        self._swept = True
        self._last_sweep = trio.current_time()


def _file_crc32c(path: Path, size: int) -> int:
    crc = 0
    with open(path, "rb") as f:
        remaining = size
        while remaining:
            chunk = f.read(min(_VERIFY_CHUNK, remaining))
            if not chunk:
                raise StorageError(f"segment file ends {remaining} bytes early", segment=path.name)
            crc = crc32c.crc32c(chunk, crc)
            remaining -= len(chunk)
    return crc

"""A sealed segment that lives in the object tier.

It answers the same questions as a local :class:`~journal.segments.Segment`
(offsets, size, index, ``fetch`` of a byte range), so the stream's read path
does not care where a segment is. Its sparse index is fetched from the object
tier on first use and kept in memory; its bytes are read through the tier it
was given (a :class:`~journal.tiering.cache.CachedTier`, so ranges, not whole
segments, travel).

Object layout: a segment uploaded under key stem ``K`` is three objects,
``K.log``, ``K.index`` and ``K.timeindex``, byte-identical to the local files.
"""

from __future__ import annotations

import trio

from journal.catalog import SealedSegment
from journal.errors import ObjectStoreError
from journal.segments.index import SparseIndex
from journal.tiering.base import Tier

__all__ = ["SUFFIXES", "RemoteSegment"]

SUFFIXES = (".log", ".index", ".timeindex")


class RemoteSegment:
    """A sealed, immutable segment read from the object tier."""

    sealed = True
    tier = "object"

    def __init__(
        self, entry: SealedSegment, objects: Tier, *, index_interval: int, stream: str
    ) -> None:
        if entry.key is None:
            raise ValueError("an object-tier segment needs a key")
        self.key: str = entry.key
        self.base_offset = entry.base_offset
        self.next_offset = entry.next_offset
        self.size = entry.size
        self.crc32c = entry.crc32c
        self.quarantined: str | None = None
        self.index = SparseIndex(entry.base_offset, index_interval)
        self.index.max_timestamp = entry.max_timestamp
        self._index_loaded = False
        self._objects = objects
        self._stream = stream

    @property
    def name(self) -> str:
        return f"{self.key}.log"

    @property
    def max_timestamp(self) -> int:
        return self.index.max_timestamp

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1

    async def ready(self) -> None:
        """Fetch the sparse index once; a missing or damaged one leaves an empty index.

        An empty index is still correct, only slower: a read walks the
        segment's headers from its start.
        """
        if self._index_loaded:
            return
        found: dict[str, bytes] = {}

        async def fetch(suffix: str) -> None:
            found[suffix] = await self._get(suffix) or b""

        try:
            async with trio.open_nursery() as nursery:  # both at once: one round trip, not two
                nursery.start_soon(fetch, ".index")
                nursery.start_soon(fetch, ".timeindex")
        except BaseExceptionGroup as group:
            failed, other = group.split(ObjectStoreError)
            if failed is None or other is not None:
                raise
            raise _first(failed) from None  # callers expect the StorageError itself
        offsets, times = found[".index"], found[".timeindex"]
        max_ts = self.index.max_timestamp
        index = SparseIndex.from_files(
            self.base_offset, self.index.interval, offsets, times, limit=self.size
        )
        index.max_timestamp = max_ts
        self.index = index
        self._index_loaded = True

    async def _get(self, suffix: str, start: int = 0, end: int | None = None) -> bytes | None:
        try:
            return await self._objects.get(self.key + suffix, start, end)
        except ObjectStoreError as exc:
            raise ObjectStoreError(
                f"cannot read from the object tier: {exc}",
                stream=self._stream, segment=self.name, position=start,
            ) from exc  # fmt: skip

    async def fetch(self, position: int, length: int) -> bytes:
        data = await self._get(".log", position, position + length)
        if data is None:
            raise ObjectStoreError(
                "segment object is missing from the object tier",
                stream=self._stream, segment=self.name, position=position,
            )  # fmt: skip
        return data

    def rebuild_index(self) -> str | None:
        """The fetched index disagreed with the log: fall back to an empty one (a walk)."""
        max_ts = self.index.max_timestamp
        self.index = SparseIndex(self.base_offset, self.index.interval)
        self.index.max_timestamp = max_ts
        return None

    def file_size(self) -> int:
        return self.size

    def close(self) -> None:
        """Nothing is held open."""

    def entry(self) -> SealedSegment:
        return SealedSegment(
            self.base_offset, self.size, self.next_offset, self.max_timestamp,
            tier="object", key=self.key, crc32c=self.crc32c,
        )  # fmt: skip


def _first(group: BaseExceptionGroup[ObjectStoreError]) -> ObjectStoreError:
    leaf = group.exceptions[0]
    return _first(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf

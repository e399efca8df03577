"""The memory tier: a byte-budgeted LRU store, and a stream's window of recent batches.

:class:`MemoryTier` implements the tier contract with least-recently-used
eviction once ``budget_bytes`` is exceeded (``None``: no limit, for tests).

:class:`RecentBatches` is the hot end of a stream: the newest batches exactly
as written, so tail readers are served without disk I/O. It always holds a
suffix of the stream -- from :attr:`RecentBatches.first_offset` to the newest
batch -- within its byte budget; a reader that asks for anything older goes to
the segments.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict

import trio

from journal.tiering.base import Tier, check_key

__all__ = ["MemoryTier", "RecentBatches"]


class MemoryTier(Tier):
    kind = "memory"

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._objects: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        check_key(key)
        await trio.lowlevel.checkpoint()
        data = self._objects.get(key)
        if data is None:
            return None
        self._objects.move_to_end(key)
        return data[start:end]

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        await trio.lowlevel.checkpoint()
        old = self._objects.pop(key, None)
        if old is not None:
            self.used_bytes -= len(old)
        if self.budget_bytes is not None and len(data) > self.budget_bytes:
            return  # would evict everything and still not fit
        self._objects[key] = bytes(data)
        self.used_bytes += len(data)
        while self.budget_bytes is not None and self.used_bytes > self.budget_bytes:
            _, evicted = self._objects.popitem(last=False)
            self.used_bytes -= len(evicted)

    async def size(self, key: str) -> int | None:
        check_key(key)
        await trio.lowlevel.checkpoint()
        data = self._objects.get(key)
        return None if data is None else len(data)

    async def delete(self, key: str) -> None:
        check_key(key)
        await trio.lowlevel.checkpoint()
        data = self._objects.pop(key, None)
        if data is not None:
            self.used_bytes -= len(data)

    async def keys(self, prefix: str = "") -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(k for k in self._objects if k.startswith(prefix))


class RecentBatches:
    """The newest batches of one stream, within ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._bases: list[int] = []
        self._batches: list[bytes] = []
        self._start = 0  # entries before it were evicted (compacted in bulk)
        self._next = -1  # next offset after the newest batch

    @property
    def first_offset(self) -> int | None:
        """The oldest offset held, or None when empty."""
        return self._bases[self._start] if self._start < len(self._bases) else None

    def add(self, base_offset: int, next_offset: int, batch: bytes | bytearray) -> None:
        """Remember (a copy of) a batch just written; a gap (a batch not added) starts afresh."""
        if base_offset != self._next:
            self.clear()
        self._next = next_offset
        if len(batch) > self.budget_bytes:
            self.clear()
            self._next = next_offset
            return
        self._bases.append(base_offset)
        self._batches.append(bytes(batch))
        self.used_bytes += len(batch)
        while self.used_bytes > self.budget_bytes:
            self.used_bytes -= len(self._batches[self._start])
            self._start += 1
        if self._start > 64 and self._start * 2 > len(self._bases):
            del self._bases[: self._start], self._batches[: self._start]
            self._start = 0

    def clear(self) -> None:
        self._bases.clear()
        self._batches.clear()
        self._start = self.used_bytes = 0
        self._next = -1

    def read(self, offset: int, limit: int, max_bytes: int) -> list[bytes] | None:
        """Batches from the one holding ``offset``, below offset ``limit``; None if not held.

        Like a segment read, the first batch is returned even when larger than
        ``max_bytes``.
        """
        first = self.first_offset
        if first is None or offset < first:
            return None
        if offset >= limit:
            return []
        i = bisect_right(self._bases, offset, lo=self._start) - 1
        out: list[bytes] = []
        budget = max_bytes
        while i < len(self._bases) and self._bases[i] < limit:
            batch = self._batches[i]
            if out and len(batch) > budget:
                break
            out.append(batch)
            budget -= len(batch)
            if budget <= 0:
                break
            i += 1
        return out

"""A read cache in front of a slow tier, itself a tier (STYLE habit 8).

Reads are cut into fixed-size blocks (``block_size``, 1 MiB by default); each
block is fetched from ``inner`` with one ranged read and kept in ``cache``
(any tier: memory for tests, a byte-budgeted :class:`LocalTier` in the
journal). Two readers wanting the same block share one fetch. When a key is
read block after block, the next ``prefetch`` blocks are fetched in the
background (in the nursery given to :meth:`CachedTier.start_prefetching`), so
a sequential cold read overlaps network time with consumption.

Objects are immutable (unique keys), so a cached block never goes stale;
:meth:`CachedTier.forget` drops a key's blocks when it is deleted or found bad.
Writes go to ``inner`` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from journal.errors import ObjectStoreError
from journal.tiering.base import Tier, check_key

__all__ = ["CacheStatistics", "CachedTier"]

log = logging.getLogger("journal.tiering")

DEFAULT_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    hits: int
    misses: int
    prefetch_started: int
    prefetched: int
    bytes_fetched: int
    cached_bytes: int


class CachedTier(Tier):
    def __init__(
        self,
        inner: Tier,
        cache: Tier,
        *,
        block_size: int = DEFAULT_BLOCK,
        prefetch: int = 2,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.kind = inner.kind  # type: ignore[misc]  # a cache is the tier it fronts
        self.block_size = block_size
        self.prefetch = prefetch
        self._nursery: trio.Nursery | None = None
        self._fetching: dict[tuple[str, int], trio.Event] = {}
        self._last_block: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._sizing: dict[str, trio.Event] = {}
        self.hits = self.misses = self.prefetch_started = self.prefetched = 0
        self.bytes_fetched = 0

    def start_prefetching(self, nursery: trio.Nursery) -> None:
        """Prefetch in ``nursery`` from now on (without one, reads only fetch what they need)."""
        self._nursery = nursery

    def statistics(self) -> CacheStatistics:
        used = getattr(self.cache, "used_bytes", 0)
        return CacheStatistics(
            self.hits, self.misses, self.prefetch_started, self.prefetched,
            self.bytes_fetched, int(used),
        )  # fmt: skip

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        check_key(key)
        if end is None:
            size = await self.size(key)
            if size is None:
                return None
            end = size
        if end <= start:
            return b"" if await self.size(key) is not None else None
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        parts: list[bytes] = []
        for n in range(first, last + 1):
            lo, hi = max(start - n * bs, 0), min(end - n * bs, bs)
            part = await self._block(key, n, lo, hi)
            if part is None:
                return None
            parts.append(part)
            if len(part) < hi - lo:
                break  # the object ends here
        self._after_read(key, first, last)
        return b"".join(parts)

    async def _block(
        self, key: str, n: int, lo: int, hi: int, *, prefetching: bool = False
    ) -> bytes | None:
        """Bytes ``lo:hi`` of block ``n``: from the cache, else fetch the whole block once."""
        ckey = f"{key}#{n}"
        while True:
            part = await self.cache.get(ckey, lo, hi)
            if part is not None:
                if not prefetching:
                    self.hits += 1
                return part
            pending = self._fetching.get((key, n))
            if pending is None:
                break
            await pending.wait()  # then look in the cache again
        done = self._fetching[(key, n)] = trio.Event()
        try:
            if not prefetching:
                self.misses += 1
            start = n * self.block_size
            block = await self.inner.get(key, start, start + self.block_size)
            if block is None:
                return None
            self.bytes_fetched += len(block)
            if len(block) < self.block_size:
                self._sizes[key] = start + len(block)  # the object ends in this block
            if block:
                try:
                    await self.cache.put(ckey, block)
                except OSError as exc:  # a full cache disk costs speed, not the read
                    log.warning("read cache: cannot keep %s: %s", ckey, exc)
            return block[lo:hi]
        finally:
            del self._fetching[(key, n)]
            done.set()

    def _after_read(self, key: str, first: int, last: int) -> None:
        """Prefetch ahead when a read of ``key`` moves on past the block read before."""
        previous = self._last_block.get(key)
        self._last_block[key] = last
        if self._nursery is None or previous is None:
            return
        if not (previous < last and first <= previous + 1):
            return  # a re-read of the same block, or a jump: not a sequential scan
        for n in range(last + 1, last + 1 + self.prefetch):
            if (key, n) not in self._fetching:
                self.prefetch_started += 1
                self._nursery.start_soon(self._prefetch, key, n)

    async def _prefetch(self, key: str, n: int) -> None:
        try:
            size = await self.size(key)
            if size is not None and n * self.block_size < size:
                await self._block(key, n, 0, 0, prefetching=True)
                self.prefetched += 1
        except (ObjectStoreError, OSError):
            pass  # a prefetch is a guess; the real read reports the failure

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)
        await self.forget(key)

    async def put_file(self, key: str, path: Path) -> None:
        await self.inner.put_file(key, path)
        await self.forget(key)

    async def size(self, key: str) -> int | None:
        """The object's size, asked of ``inner`` once however many readers want it."""
        while key not in self._sizes:
            pending = self._sizing.get(key)
            if pending is None:
                break
            await pending.wait()
            if key not in self._sizes:
                break  # missing, or the shared question failed: ask ourselves
        if key in self._sizes:
            return self._sizes[key]
        done = self._sizing[key] = trio.Event()
        try:
            size = await self.inner.size(key)
            if size is not None:
                self._sizes[key] = size
            return size
        finally:
            del self._sizing[key]
            done.set()

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)
        await self.forget(key)

    async def forget(self, key: str) -> None:
        """Drop what is cached of ``key``."""
        size = self._sizes.pop(key, None)
        self._last_block.pop(key, None)
        blocks = (size // self.block_size + 1) if size is not None else 0
        for n in range(blocks):
            await self.cache.delete(f"{key}#{n}")
        if size is None:
            for ckey in await self.cache.keys(f"{key}#"):
                await self.cache.delete(ckey)

    async def keys(self, prefix: str = "") -> list[str]:
        return await self.inner.keys(prefix)

    async def aclose(self) -> None:
        await self.inner.aclose()
        await self.cache.aclose()

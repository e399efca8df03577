"""The tier contract, and what each tier adds to it.

What is covered:

* **Conformance** (STYLE habit 9): :class:`TierContract` holds the contract of
  :class:`journal.tiering.Tier` as tests, and every implementation runs them
  through a subclass that provides a ``tier`` fixture: ``MemoryTier``,
  ``LocalTier``, ``ObjectTier`` over ``file://``, over ``memory://`` (a unique
  root per test) and over S3 (moto), and ``CachedTier`` in front of S3 (memory
  cache) and of ``file://`` (local-disk cache). The contract: whole and ranged
  reads (a range past the end is shorter, or empty), a missing key is ``None``
  for ``get`` and ``size``, ``put`` replaces (also after a read), ``put_file``,
  ``delete`` is idempotent, ``keys`` are sorted and filtered by prefix, keys
  nest, and invalid keys (``""``, ``/abs``, ``a/../b``) raise ``ValueError``.
* **Budgets**: ``MemoryTier`` and ``LocalTier`` evict the least recently used
  objects (a read counts as a use) once over ``budget_bytes``; ``LocalTier``
  also removes the evicted files and empties its root when created.
* **The read cache**: ``CachedTier`` counts hits and misses and serves a
  second read from its cache -- proved by deleting the object from the inner
  tier, or by cutting the network to S3, and reading the range again;
  concurrent readers of one block share a single fetch; sequential reads
  prefetch the next blocks in the given nursery (random reads do not);
  ``forget`` drops a key's blocks.
* **Object store outages**: an ``ObjectTier`` reaching moto through an
  :class:`~objectstores.S3Proxy` raises ``ObjectStoreError`` -- not a hang,
  not a stray botocore error -- when the connection is cut, blackholed or
  answered with 503/500, bounded by a multiple of its timeout; after
  ``restore()`` it works again.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import fsspec
import pytest
import trio
import trio.testing
from objectstores import ObjectStore, S3Proxy, break_store, eventually

from journal.errors import ObjectStoreError
from journal.tiering import CachedTier, LocalTier, MemoryTier, ObjectTier, Tier

DATA = bytes(range(256)) * 4  # 1 KiB, every byte value, no repeating 4-byte window within 256
SMALL_BLOCK = 64  # cache blocks small enough that ranges of DATA span several
TIMEOUT = 1.0  # object-store timeout in the outage tests
HANG_BOUND = 10 * TIMEOUT  # a call taking longer than this hangs, whatever the machine

RANGES: list[tuple[int, int | None]] = [
    (0, None),
    (0, 1),
    (10, 20),
    (60, 70),  # across a cache block boundary
    (0, 200),  # several whole cache blocks and a part
    (512, None),
    (1000, 1024),  # up to the end exactly
    (1023, None),
    (5, 5),  # empty range
]
RUNNING_PAST_THE_END: list[tuple[int, int | None]] = [
    (1000, 2000),
    (0, 5000),
    (1023, 1025),
]
PAST_THE_END: list[tuple[int, int | None]] = [
    (1024, 1100),  # starts at the end
    (1024, None),
    (2000, 3000),  # starts past the end
    (2000, None),
]


class TierContract:
    """The tier contract; a subclass provides the ``tier`` fixture."""

    async def test_kind_names_a_tier(self, tier: Tier) -> None:
        assert tier.kind in ("memory", "local", "object")

    async def test_get_whole_object(self, tier: Tier) -> None:
        await tier.put("obj", DATA)
        assert await tier.get("obj") == DATA
        assert await tier.size("obj") == len(DATA)

    async def test_get_ranges(self, tier: Tier) -> None:
        await tier.put("obj", DATA)
        for start, end in RANGES:
            assert await tier.get("obj", start, end) == DATA[start:end], (start, end)
        # the same ranges again: a tier that caches answers the same from its cache
        for start, end in RANGES:
            assert await tier.get("obj", start, end) == DATA[start:end], (start, end)

    async def test_range_running_past_the_end_is_shorter(self, tier: Tier) -> None:
        await tier.put("obj", DATA)
        for start, end in RUNNING_PAST_THE_END:
            assert await tier.get("obj", start, end) == DATA[start:end], (start, end)

    async def test_range_starting_at_or_past_the_end_is_empty(self, tier: Tier) -> None:
        await tier.put("obj", DATA)
        for start, end in PAST_THE_END:
            assert await tier.get("obj", start, end) == b"", (start, end)

    async def test_empty_object(self, tier: Tier) -> None:
        await tier.put("empty", b"")
        assert await tier.size("empty") == 0
        assert await tier.get("empty") == b""
        assert await tier.get("empty", 0, 10) == b""

    async def test_missing_key_is_none(self, tier: Tier) -> None:
        await tier.put("present", b"x")
        assert await tier.get("absent") is None
        assert await tier.get("absent", 0, 10) is None
        assert await tier.get("absent", 5, 5) is None
        assert await tier.get("dir/absent") is None
        assert await tier.size("absent") is None

    async def test_put_replaces(self, tier: Tier) -> None:
        await tier.put("obj", DATA)
        assert await tier.get("obj", 0, 10) == DATA[:10]  # read before replacing
        assert await tier.size("obj") == len(DATA)
        await tier.put("obj", b"replaced")
        assert await tier.size("obj") == len(b"replaced")
        assert await tier.get("obj") == b"replaced"
        assert await tier.get("obj", 0, 10) == b"replaced"

    async def test_put_file(self, tier: Tier, tmp_path: Path) -> None:
        source = tmp_path / "source.bin"
        source.write_bytes(DATA)
        await tier.put_file("from/file", source)
        assert await tier.get("from/file") == DATA
        assert await tier.get("from/file", 100, 300) == DATA[100:300]
        assert await tier.size("from/file") == len(DATA)
        assert source.read_bytes() == DATA  # the source is left as it was

    async def test_delete_is_idempotent(self, tier: Tier) -> None:
        await tier.put("doomed", DATA)
        await tier.put("kept", b"kept")
        assert await tier.get("doomed", 0, 100) == DATA[:100]
        await tier.delete("doomed")
        assert await tier.get("doomed") is None
        assert await tier.get("doomed", 0, 100) is None
        assert await tier.size("doomed") is None
        await tier.delete("doomed")  # again
        await tier.delete("never/there")
        assert await tier.keys() == ["kept"]
        assert await tier.get("kept") == b"kept"

    async def test_keys_sorted_by_prefix(self, tier: Tier) -> None:
        assert await tier.keys() == []
        for key in ["b/2", "ab", "c/x/y", "a", "b/1", "b/10"]:
            await tier.put(key, key.encode())
        assert await tier.keys() == ["a", "ab", "b/1", "b/10", "b/2", "c/x/y"]
        assert await tier.keys("a") == ["a", "ab"]
        assert await tier.keys("b/") == ["b/1", "b/10", "b/2"]
        assert await tier.keys("b/1") == ["b/1", "b/10"]
        assert await tier.keys("c/") == ["c/x/y"]
        assert await tier.keys("zzz") == []

    async def test_nested_keys(self, tier: Tier) -> None:
        await tier.put("x/y/z/deep", b"deep")
        await tier.put("x/top", b"top")
        await tier.put("x/y/side", b"side")
        assert await tier.get("x/y/z/deep") == b"deep"
        assert await tier.get("x/top") == b"top"
        assert await tier.keys("x/y/") == ["x/y/side", "x/y/z/deep"]
        await tier.delete("x/y/z/deep")
        assert await tier.keys() == ["x/top", "x/y/side"]
        assert await tier.get("x/y/side") == b"side"

    async def test_key_prefix_is_not_an_object(self, tier: Tier) -> None:
        await tier.put("x/y/z", b"deep")
        for prefix in ("x", "x/y"):
            assert await tier.get(prefix) is None, prefix
            assert await tier.get(prefix, 0, 10) is None, prefix
            assert await tier.size(prefix) is None, prefix
        await tier.delete("x/y")  # deleting a prefix deletes nothing
        assert await tier.get("x/y/z") == b"deep"

    @pytest.mark.parametrize("key", ["", "/abs", "a/../b", "../up"])
    async def test_invalid_keys_raise(self, tier: Tier, key: str, tmp_path: Path) -> None:
        source = tmp_path / "source.bin"
        source.write_bytes(b"data")
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: tier.get(key),
            lambda: tier.get(key, 0, 10),
            lambda: tier.put(key, b"data"),
            lambda: tier.put_file(key, source),
            lambda: tier.size(key),
            lambda: tier.delete(key),
        ]
        for call in calls:
            with pytest.raises(ValueError, match="key"):
                await call()
        assert await tier.keys() == []  # nothing was stored anywhere


# -- the implementations ----------------------------------------------------------


class TestMemoryTier(TierContract):
    @pytest.fixture
    def tier(self) -> Tier:
        return MemoryTier()

    async def test_budget_evicts_least_recently_used(self) -> None:
        tier = MemoryTier(budget_bytes=10)
        await tier.put("a", b"aaaa")
        await tier.put("b", b"bbbb")
        assert await tier.get("a") == b"aaaa"  # a is now used more recently than b
        await tier.put("c", b"cccc")  # 12 bytes > 10: the least recently used (b) goes
        assert await tier.keys() == ["a", "c"]
        assert await tier.get("b") is None
        assert tier.used_bytes == 8
        await tier.put("d", b"dddd")  # now a is the oldest use
        assert await tier.keys() == ["c", "d"]
        assert tier.used_bytes == 8

    async def test_budget_refuses_an_object_larger_than_it(self) -> None:
        tier = MemoryTier(budget_bytes=10)
        await tier.put("a", b"aaaa")
        await tier.put("huge", b"h" * 11)
        assert await tier.get("huge") is None
        assert await tier.get("a") == b"aaaa"  # and nothing was evicted for it
        assert tier.used_bytes == 4

    async def test_replacing_counts_bytes_once(self) -> None:
        tier = MemoryTier(budget_bytes=10)
        await tier.put("a", b"aaaa")
        await tier.put("a", b"aaaaaa")
        await tier.put("b", b"bbbb")
        assert tier.used_bytes == 10
        assert await tier.keys() == ["a", "b"]


class TestLocalTier(TierContract):
    @pytest.fixture
    def tier(self, tmp_path: Path) -> Tier:
        return LocalTier(tmp_path / "local")

    async def test_budget_evicts_least_recently_used(self, tmp_path: Path) -> None:
        root = tmp_path / "budgeted"
        tier = LocalTier(root, budget_bytes=10)
        await tier.put("a", b"aaaa")
        await tier.put("dir/b", b"bbbb")
        assert await tier.get("a") == b"aaaa"  # a is now used more recently than b
        await tier.put("c", b"cccc")
        assert await tier.keys() == ["a", "c"]
        assert not (root / "dir" / "b").exists()  # the evicted file is gone from disk
        assert tier.used_bytes == 8
        await tier.put("d", b"dddd")
        assert await tier.keys() == ["c", "d"]
        assert not (root / "a").exists()
        assert (root / "c").read_bytes() == b"cccc"
        await tier.put("huge", b"h" * 11)  # larger than the whole budget: not kept
        assert await tier.keys() == ["c", "d"]
        assert tier.used_bytes == 8

    async def test_empties_its_root_when_created(self, tmp_path: Path) -> None:
        root = tmp_path / "cache"
        (root / "old").mkdir(parents=True)
        (root / "old" / "block").write_bytes(b"stale")
        (root / "top").write_bytes(b"stale")
        tier = LocalTier(root)
        assert await tier.keys() == []
        assert list(root.iterdir()) == []


class TestObjectTierFile(TierContract):
    @pytest.fixture
    def tier(self, file_store: ObjectStore) -> Tier:
        return ObjectTier(file_store.url, file_store.options)


class TestObjectTierMemory(TierContract):
    @pytest.fixture
    def tier(self) -> Iterator[Tier]:
        root = f"tiers-{uuid.uuid4().hex}"
        yield ObjectTier(f"memory://{root}")
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{root}"):
            fs.rm(f"/{root}", recursive=True)


class TestObjectTierS3(TierContract):
    @pytest.fixture
    def tier(self, s3_store: ObjectStore) -> Tier:
        return ObjectTier(s3_store.url, s3_store.options, timeout=10.0)


class TestCachedTierS3(TierContract):
    @pytest.fixture
    def tier(self, s3_store: ObjectStore) -> Tier:
        inner = ObjectTier(s3_store.url, s3_store.options, timeout=10.0)
        return CachedTier(inner, MemoryTier(), block_size=SMALL_BLOCK)


class TestCachedTierFile(TierContract):
    @pytest.fixture
    def tier(self, file_store: ObjectStore, tmp_path: Path) -> Tier:
        inner = ObjectTier(file_store.url, file_store.options)
        return CachedTier(inner, LocalTier(tmp_path / "cache"), block_size=SMALL_BLOCK)


# -- the read cache ---------------------------------------------------------------


class GatedTier(MemoryTier):
    """A memory tier whose ranged reads wait for :attr:`release`, and are counted.

    It lines concurrent readers up behind one slow fetch, deterministically.
    """

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.reads = 0

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        self.reads += 1
        await self.release.wait()
        return await super().get(key, start, end)


class TestCachedTierBehaviour:
    async def test_counts_hits_and_misses_and_serves_from_cache(self) -> None:
        inner = MemoryTier()
        await inner.put("obj", DATA)
        cached = CachedTier(inner, MemoryTier(), block_size=16)
        assert await cached.get("obj", 0, 40) == DATA[:40]  # blocks 0, 1, 2
        stats = cached.statistics()
        assert (stats.hits, stats.misses, stats.bytes_fetched, stats.cached_bytes) == (0, 3, 48, 48)
        assert await cached.get("obj", 20, 40) == DATA[20:40]  # blocks 1, 2 again
        stats = cached.statistics()
        assert (stats.hits, stats.misses, stats.bytes_fetched) == (2, 3, 48)
        await inner.delete("obj")  # gone from the inner tier: only the cache can answer
        assert await cached.get("obj", 0, 48) == DATA[:48]
        assert await cached.get("obj", 64, 80) is None  # never cached: the inner tier says
        assert cached.statistics().misses == 4

    async def test_cached_range_still_reads_with_s3_cut_off(
        self, s3_store: ObjectStore, s3_proxy: S3Proxy
    ) -> None:
        store = s3_store.through(s3_proxy.endpoint)
        cached = CachedTier(
            ObjectTier(store.url, store.options, timeout=TIMEOUT), MemoryTier(), block_size=256
        )
        await cached.put("seg.log", DATA)
        assert await cached.get("seg.log", 0, 300) == DATA[:300]  # blocks 0 and 1
        s3_proxy.cut()
        assert await cached.get("seg.log", 10, 500) == DATA[10:500]
        assert cached.statistics().hits == 2
        with trio.fail_after(HANG_BOUND), pytest.raises(ObjectStoreError):
            await cached.get("seg.log", 600, 700)  # block 2 was never fetched
        s3_proxy.restore()
        assert await cached.get("seg.log", 600, 700) == DATA[600:700]

    async def test_concurrent_readers_share_one_fetch(self) -> None:
        inner = GatedTier()
        await inner.put("obj", DATA)
        cached = CachedTier(inner, MemoryTier(), block_size=64)
        results: list[bytes | None] = []

        async def reader(start: int, end: int) -> None:
            results.append(await cached.get("obj", start, end))

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(reader, i, 64 - i)  # five ranges inside block 0
            await trio.testing.wait_all_tasks_blocked()
            assert inner.reads == 1  # one fetch in flight, four readers waiting on it
            inner.release.set()
        assert sorted(r or b"" for r in results) == sorted(DATA[i : 64 - i] for i in range(5))
        stats = cached.statistics()
        assert (inner.reads, stats.misses, stats.hits, stats.bytes_fetched) == (1, 1, 4, 64)

    async def test_failed_shared_fetch_is_retried_by_the_waiters(self) -> None:
        inner = MemoryTier()
        cached = CachedTier(inner, MemoryTier(), block_size=64)
        assert await cached.get("late", 0, 10) is None  # missing: nothing is cached
        await inner.put("late", DATA)
        assert await cached.get("late", 0, 10) == DATA[:10]

    async def test_sequential_reads_prefetch_the_next_blocks(self, nursery: trio.Nursery) -> None:
        inner = MemoryTier()
        await inner.put("obj", DATA)
        cached = CachedTier(inner, MemoryTier(), block_size=16, prefetch=2)
        cached.start_prefetching(nursery)
        assert await cached.get("obj", 0, 16) == DATA[:16]  # block 0: no pattern yet
        await trio.testing.wait_all_tasks_blocked()
        assert cached.statistics().prefetched == 0
        assert await cached.get("obj", 16, 32) == DATA[16:32]  # block 1: in order
        await trio.testing.wait_all_tasks_blocked()  # the prefetches ran in the nursery
        assert cached.statistics().prefetched == 2
        assert cached.statistics().misses == 2  # prefetches are not misses
        await inner.delete("obj")  # blocks 2 and 3 can only come from the cache now
        assert await cached.get("obj", 32, 64) == DATA[32:64]
        stats = cached.statistics()
        assert (stats.misses, stats.hits, stats.prefetched) == (2, 2, 2)

    async def test_random_reads_do_not_prefetch(self, nursery: trio.Nursery) -> None:
        inner = MemoryTier()
        await inner.put("obj", DATA)
        cached = CachedTier(inner, MemoryTier(), block_size=16, prefetch=2)
        cached.start_prefetching(nursery)
        for block in (0, 7, 3, 40):
            await cached.get("obj", block * 16, block * 16 + 16)
        await trio.testing.wait_all_tasks_blocked()
        assert cached.statistics().prefetched == 0
        assert cached.statistics().misses == 4

    async def test_no_prefetch_without_a_nursery(self) -> None:
        inner = MemoryTier()
        await inner.put("obj", DATA)
        cached = CachedTier(inner, MemoryTier(), block_size=16, prefetch=2)
        for block in range(4):
            await cached.get("obj", block * 16, block * 16 + 16)
        await trio.testing.wait_all_tasks_blocked()
        assert cached.statistics().prefetched == 0

    async def test_a_cache_that_cannot_store_does_not_fail_reads(
        self, nursery: trio.Nursery
    ) -> None:
        class FullDisk(MemoryTier):
            async def put(self, key: str, data: bytes) -> None:
                raise OSError(28, "No space left on device")

        inner = MemoryTier()
        await inner.put("obj", DATA)
        cached = CachedTier(inner, FullDisk(), block_size=16, prefetch=2)
        cached.start_prefetching(nursery)
        for block in range(4):  # in order: prefetches start, and fail to store too
            assert (
                await cached.get("obj", block * 16, block * 16 + 16)
                == DATA[block * 16 : block * 16 + 16]
            )
        await trio.testing.wait_all_tasks_blocked()  # failed prefetches end quietly
        assert cached.statistics().prefetch_started > 0
        assert cached.statistics().hits == 0  # nothing could be kept

    async def test_forget_drops_blocks(self) -> None:
        inner = MemoryTier()
        cache = MemoryTier()
        await inner.put("whole", DATA[:100])
        await inner.put("part", DATA)
        cached = CachedTier(inner, cache, block_size=16)
        assert await cached.get("whole") == DATA[:100]  # its size is known
        assert await cached.get("part", 0, 40) == DATA[:40]  # its size is not
        assert len(await cache.keys("whole#")) == 7
        assert len(await cache.keys("part#")) == 3
        await cached.forget("whole")
        await cached.forget("part")
        assert await cache.keys() == []
        assert cached.statistics().cached_bytes == 0
        await inner.delete("whole")
        await inner.delete("part")
        assert await cached.get("whole", 0, 10) is None  # not served from a stale cache
        assert await cached.get("part", 0, 10) is None
        assert await cached.size("whole") is None

    async def test_delete_goes_through_to_the_inner_tier_and_the_cache(self) -> None:
        inner = MemoryTier()
        cache = MemoryTier()
        cached = CachedTier(inner, cache, block_size=16)
        await cached.put("obj", DATA)
        assert await inner.get("obj") == DATA  # writes go to the inner tier
        assert await cached.get("obj", 0, 32) == DATA[:32]
        await cached.delete("obj")
        assert await inner.get("obj") is None
        assert await cache.keys() == []


# -- object store outages ---------------------------------------------------------


@pytest.mark.parametrize("how", ["cut", "blackhole", "fail_with_503", "fail_with_500"])
async def test_object_tier_outage_raises_then_recovers(
    s3_store: ObjectStore, s3_proxy: S3Proxy, how: str
) -> None:
    store = s3_store.through(s3_proxy.endpoint)
    tier = ObjectTier(store.url, store.options, timeout=TIMEOUT)
    await eventually(lambda: tier.put("before", DATA), HANG_BOUND)
    # pooled keep-alive connections are open now: the outage must reach them too
    assert await eventually(lambda: tier.get("before", 0, 100), HANG_BOUND) == DATA[:100]
    break_store(s3_proxy, how)
    with trio.fail_after(HANG_BOUND), pytest.raises(ObjectStoreError, match="object store"):
        await tier.get("before", 0, 100)
    with trio.fail_after(HANG_BOUND), pytest.raises(ObjectStoreError, match="object store"):
        await tier.put("during", b"lost")
    if how.startswith("fail_with"):
        assert s3_proxy.failed_requests > 0  # the errors came back as HTTP answers
    s3_proxy.restore()
    assert await eventually(lambda: tier.get("before"), HANG_BOUND) == DATA
    await eventually(lambda: tier.put("after", b"kept"), HANG_BOUND)
    assert await eventually(lambda: tier.get("after"), HANG_BOUND) == b"kept"
    assert "before" in await eventually(lambda: tier.keys(), HANG_BOUND)

"""Tiering benchmark: migration to the object tier, cold reads from it, hot tail reads.

Run it as ``python -m tools.bench tiering`` (``--quick`` for a demo of a few
seconds, ``--json FILE`` to keep the numbers). It starts its own moto S3
server on 127.0.0.1 (``tools/s3local.py``) and stops it at the end, works in a
temporary directory it removes, and is bounded in bytes (``segments`` x
``segment_bytes`` per object tier), in time and in operation counts.

What is measured, and how
-------------------------

Data: records of 1 KiB random values, 16 per RecordBatch v2 batch, one batch
encoded before any timed loop and appended again and again with
``append_batch`` (``fsync="none"``: filling is not what is measured). Rates
are MiB/s (2**20 bytes) of segment bytes. Each case runs against two object
tiers: ``file://`` (a directory on the same disk) and ``s3://`` on the moto
server. Every journal is opened with ``maintenance_interval=3600`` so that
nothing moves unless the benchmark says so, and holds two streams with the same
bytes: ``cold`` (``local_retention_bytes=0``: every sealed segment is due for
the object tier) and its twin ``local`` (never migrated); both have
``memory_bytes=0`` so reads go through the segments.

1. **Migration throughput.** ``segments`` segments of ``segment_bytes`` are
   appended to each stream and sealed (``roll``). A first ``migrate()``, made
   before the appends, did the service's one-off listing of its prefix and
   opened the connections. Timed: one ``await j.migrate()``, which uploads the
   ``cold`` segments one after the other: CRC32C of the local file, the two
   index objects, ``put_file`` of the log, size check and CRC32C read-back in
   8 MiB ranged reads, the synced catalog commit, the local file's deletion.
   Every sealed segment must then be in the object tier. References, timed the
   same way just before, on the twin's segment files: for S3 a plain s3fs
   ``put_file`` of each file to the same server (and, as a second reference,
   ``put_file`` followed by ``cat_file`` of the whole object, about the work
   of an upload with its read-back); for ``file://`` ``shutil.copyfile`` (and
   copy plus reading the copy back). Ratio = journal / reference MiB/s.

2. **Cold reads.** The journal is closed and opened again: its read cache
   (``<data>/cache``) starts empty on every open. After one ``migrate()`` with
   nothing due (to open the object store's connection, as the first pass of a
   running server would), sequential passes of ``read_batches(cold, offset,
   1 MiB)`` from the first to the last sealed offset: "object, cold" is the
   first pass after an open (the median of ``cold_repeats`` opens); "object,
   cached" a second pass in the same open, served from the read cache.
   "store, ranged GETs" reads the same objects straight from the store with
   fsspec ``cat_file`` in 1 MiB ranges (the cache's block size), one at a
   time, on a client of its own: what the store gives a simple loop. The
   reference is the same reads of the twin ``local`` stream: "local, page
   cache" (the files were just written: as many passes as fit in
   ``local_seconds``, at least one, median pass), and "local, evicted" (one
   pass after ``os.sync()`` and ``posix_fadvise(DONTNEED)`` on the twin's
   segment files, so the bytes come from the (virtual) disk, or from the
   host's cache behind it). Ratio = MiB/s / "local, page cache".

   First-byte latency: after another fresh open, ``read(cold, offset, 1)``
   (one batch) of random offsets, each in a 1 MiB block of the read cache
   that no earlier sample touched and at least 3 blocks from any other (the
   cache prefetches 2 blocks ahead on sequential reads, so no sample could be
   served by one), in a shuffled order (seeded). After each sample the
   benchmark waits, polling ``statistics().tiering`` with a deadline, until
   every prefetch started is done (a point read starts none), so samples do
   not queue behind background fetches; "KiB fetched/read" counts prefetched
   bytes too. The first sample in a segment also fetches the segment's sparse
   index (two HEADs and two GETs), so those are reported apart. "store, one
   ranged GET" is the latency of each 1 MiB read of the "store, ranged GETs"
   passes. The same offsets are then read from the twin stream, from the page
   cache and after eviction.

3. **Hot tail reads.** A journal without object tier, two streams holding
   the same 2 MiB of newest batches: one with the default ``memory_bytes``
   (4 MiB: the batches are served from memory), one with ``memory_bytes=0``
   (served by ``pread`` from the active segment, in the page cache). A reader
   walks the batches one read per batch, as a caught-up tail reader does:
   ``read`` (records decoded) and ``read_batches`` (raw bytes; a segment read
   checks each batch's CRC, the memory window serves batches it already
   checked on append), with per-read latency; and ``tail`` (the
   ``Journal.tail`` iterator, 1 MiB per read inside) over the window,
   records/s. Each case gets ``hot_seconds`` per stream, in ``hot_rounds``
   rounds alternating between the two streams, so a change in the machine's
   load hits both alike. Ratio = memory / segment records/s.

The moto server is a Python process on the same machine as the benchmark:
its per-request CPU cost, not a network, bounds the S3 figures, and it
competes with the journal for the same cores.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import fsspec
import trio

from journal import Journal, Record, StreamConfig, TieringStatistics
from journal.segments.batch import encode_batch
from journal.tiering.cache import DEFAULT_BLOCK
from tools.bench.common import (
    MIB,
    announce,
    bench_root,
    fmt,
    json_rows,
    machine_info,
    mib_per_s,
    percentile,
    publish_report,
    settle,
    table,
)

__all__ = ["BenchConfig", "Report", "main", "run"]

TierName = Literal["file", "s3"]
TIERS: tuple[TierName, ...] = ("file", "s3")
RECORD_BYTES = 1 << 10
RECORDS_PER_BATCH = 16
READ_MAX_BYTES = 1 << 20
BLOCK = DEFAULT_BLOCK  # the read cache's block: one ranged GET each
SAMPLE_STRIDE = 3  # blocks between latency samples: beyond each other's prefetch
SAMPLE_MARGIN = 256 << 10  # a sample's batch ends this far before its block does
HOT_WINDOW_BYTES = 2 * MIB
MAX_OPS = 1_000_000  # hard bound on reads per case, whatever the time budget
COLD, TWIN = "cold", "local"
SEED = 20261126


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchConfig:
    segment_bytes: int = 16 * MIB
    segments: int = 8  # sealed segments per stream and object tier
    cold_repeats: int = 3  # fresh opens, each one cold pass
    local_seconds: float = 0.5  # page-cache reference passes
    hot_seconds: float = 1.0  # per hot-tail case, in all
    hot_rounds: int = 10  # memory and segment alternate this many times per case
    quick: bool = False

    @classmethod
    def make(cls, *, quick: bool, segment_mib: int | None, segments: int | None) -> BenchConfig:
        if quick:
            return cls(
                segment_bytes=(4 if segment_mib is None else segment_mib) * MIB,
                segments=4 if segments is None else segments,
                cold_repeats=1,
                local_seconds=0.05,
                hot_seconds=0.1,
                hot_rounds=2,
                quick=True,
            )
        return cls(
            segment_bytes=(16 if segment_mib is None else segment_mib) * MIB,
            segments=8 if segments is None else segments,
        )


# -- results ------------------------------------------------------------------------


@dataclass(slots=True)
class MigrationRow:
    tier: TierName
    segments: int
    bytes: int
    seconds: float
    reference: str
    ref_seconds: float
    ref_readback: str
    ref_readback_seconds: float

    @property
    def mib_s(self) -> float:
        return mib_per_s(self.bytes, self.seconds)

    @property
    def ref_mib_s(self) -> float:
        return mib_per_s(self.bytes, self.ref_seconds)

    @property
    def ref_readback_mib_s(self) -> float:
        return mib_per_s(self.bytes, self.ref_readback_seconds)

    @property
    def ratio(self) -> float:
        return self.mib_s / self.ref_mib_s if self.ref_mib_s > 0 else math.nan

    @property
    def ratio_readback(self) -> float:
        r = self.ref_readback_mib_s
        return self.mib_s / r if r > 0 else math.nan


ReadSource = Literal[
    "object, cold", "object, cached", "store, ranged GETs", "local, page cache", "local, evicted"
]


@dataclass(slots=True)
class ReadRow:
    tier: TierName
    source: ReadSource
    bytes: int
    calls: int
    seconds: float
    passes: int
    all_mib_s: list[float] = field(default_factory=list)  # one per pass or open
    ratio: float = math.nan  # to "local, page cache" of the same tier

    @property
    def mib_s(self) -> float:
        return mib_per_s(self.bytes, self.seconds)


LatencySource = Literal[
    "object, cold, new segment",
    "object, cold block",
    "store, one ranged GET",
    "local, page cache",
    "local, evicted",
]


@dataclass(slots=True)
class LatencyRow:
    tier: TierName
    source: LatencySource
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    ratio: float = math.nan  # p50 / p50 of "local, page cache"
    fetched_kib: float = math.nan  # mean KiB fetched from the store per read, prefetch too
    note: str = ""


HotApi = Literal["read", "read_batches", "tail"]
Served = Literal["memory", "segment"]


@dataclass(slots=True)
class HotRow:
    api: HotApi
    served_from: Served
    reads: int
    records: int
    bytes: int
    seconds: float
    p50_us: float
    p99_us: float
    ratio: float = math.nan  # memory / segment records/s

    @property
    def records_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    @property
    def mib_s(self) -> float:
        return mib_per_s(self.bytes, self.seconds)


@dataclass(slots=True)
class Report:
    machine: dict[str, str | int]
    settings: dict[str, Any]
    migrations: list[MigrationRow] = field(default_factory=list)
    reads: list[ReadRow] = field(default_factory=list)
    latencies: list[LatencyRow] = field(default_factory=list)
    hot: list[HotRow] = field(default_factory=list)
    total_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "migrations": json_rows(
                self.migrations,
                "mib_s",
                "ref_mib_s",
                "ref_readback_mib_s",
                "ratio",
                "ratio_readback",
            ),
            "reads": json_rows(self.reads, "mib_s"),
            "latencies": json_rows(self.latencies),
            "hot": json_rows(self.hot, "records_s", "mib_s"),
            "total_seconds": self.total_seconds,
        }


# -- the object stores --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Store:
    """Where one case's journal keeps its objects, and the reference copy to compare with."""

    tier: TierName
    url: str
    options: dict[str, Any]
    reference: str
    copy: Callable[[Path, int], None]  # the reference: copy one segment file, blocking
    copy_and_read: Callable[[Path, int], None]  # the reference with a read-back
    get_range: Callable[[str, int, int], bytes]  # bytes start..end-1 of a journal object


def file_store(root: Path) -> Store:
    target = root / "reference"
    target.mkdir(parents=True, exist_ok=True)

    def copy(src: Path, i: int) -> None:
        shutil.copyfile(src, target / f"{i}.log")

    def copy_and_read(src: Path, i: int) -> None:
        dst = target / f"{i}-rb.log"
        shutil.copyfile(src, dst)
        with open(dst, "rb") as f:
            while f.read(8 * MIB):
                pass

    objects = root / "objects"
    fs = fsspec.filesystem("file")

    def get_range(key: str, start: int, end: int) -> bytes:
        return bytes(fs.cat_file(str(objects / key), start=start, end=end))

    return Store("file", f"file://{objects}", {}, "shutil.copyfile", copy, copy_and_read, get_range)


def s3_store(endpoint: str, bucket: str) -> Store:
    import s3fs

    from tools.s3local import s3_options

    options = s3_options(endpoint)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.pipe_file(f"{bucket}/reference/warm-up", b"x")  # open the connection pool

    def copy(src: Path, i: int) -> None:
        fs.put_file(str(src), f"{bucket}/reference/{i}.log")

    def copy_and_read(src: Path, i: int) -> None:
        path = f"{bucket}/reference/{i}-rb.log"
        fs.put_file(str(src), path)
        fs.cat_file(path)

    def get_range(key: str, start: int, end: int) -> bytes:
        return bytes(fs.cat_file(f"{bucket}/journal/{key}", start=start, end=end))

    return Store(
        "s3", f"s3://{bucket}/journal", options, "s3fs put_file", copy, copy_and_read, get_range
    )


# -- filling and locating segments --------------------------------------------------


def make_batch() -> bytes:
    value = os.urandom(RECORD_BYTES)
    records = [Record(value=value) for _ in range(RECORDS_PER_BATCH)]
    return bytes(encode_batch(records, now_ms=time.time_ns() // 1_000_000))


async def fill(j: Journal, name: str, batch: bytes, nbytes: int) -> None:
    """Append the batch until about ``nbytes`` are written (at least one batch)."""
    for _ in range(max(1, nbytes // len(batch))):
        await j.append_batch(name, batch)


def stream_directory(root: Path, name: str) -> Path:
    """The stream's directory (``<data>/streams/<id>-<name>``, docs/architecture.md)."""
    found = sorted((root / "streams").glob(f"*-{name}"))
    if len(found) != 1:
        raise RuntimeError(f"cannot find the directory of stream {name!r} under {root}")
    return found[0]


def sealed_files(j: Journal, name: str) -> list[Path]:
    directory = stream_directory(j.root, name)
    return [
        directory / f"{info.base_offset:020d}.log"
        for info in j.segments(name)
        if info.tier == "local"
    ]


def evict(paths: Sequence[Path]) -> None:
    """Drop the files' pages from the page cache (clean pages: works unprivileged)."""
    os.sync()
    for path in paths:
        for suffix in (".log", ".index", ".timeindex"):
            fd = os.open(path.with_suffix(suffix), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# -- 1. migration -------------------------------------------------------------------


async def measure_migration(
    j: Journal, store: Store, sealed_bytes: int, segments: int
) -> MigrationRow:
    files = sealed_files(j, TWIN)
    ref_seconds: list[float] = []
    for copy in (store.copy, store.copy_and_read):
        settle(j.root, sealed_bytes)
        t0 = time.perf_counter()
        for i, path in enumerate(files):
            await trio.to_thread.run_sync(copy, path, i)
        ref_seconds.append(time.perf_counter() - t0)
    settle(j.root, sealed_bytes)
    before = _uploaded(j)
    t0 = time.perf_counter()
    moved = await j.migrate()
    elapsed = time.perf_counter() - t0
    left = [s for s in j.segments(COLD) if s.tier == "local"]
    if moved != segments or left:
        raise RuntimeError(
            f"migration moved {moved} of {segments} segments, {len(left)} left local: "
            f"{j.statistics().tiering}"
        )
    uploaded = _uploaded(j) - before
    return MigrationRow(
        store.tier, moved, uploaded, elapsed,
        store.reference, ref_seconds[0],
        store.reference + " + read-back", ref_seconds[1],
    )  # fmt: skip


def _uploaded(j: Journal) -> int:
    return _cache(j).bytes_uploaded


# -- 2. cold reads ------------------------------------------------------------------


async def read_pass(j: Journal, name: str, start: int, end: int) -> tuple[int, int, float]:
    """One sequential ``read_batches`` pass over ``start..end-1``: bytes, calls, seconds."""
    offset, nbytes, calls = start, 0, 0
    t0 = time.perf_counter()
    while offset < end:
        batches = await j.read_batches(name, offset, READ_MAX_BYTES)
        if not batches:
            raise RuntimeError(f"read_batches({name!r}, {offset}) returned nothing")
        calls += 1
        for raw in batches:
            nbytes += len(raw)
        offset = _next_offset(batches[-1])
    return nbytes, calls, time.perf_counter() - t0


async def ranged_pass(
    store: Store, objects: Sequence[tuple[str, int]]
) -> tuple[tuple[int, int, float], list[float]]:
    """The objects read straight from the store in cache-block ranges, one at a time.

    Returns (bytes, calls, seconds) and the seconds of each ranged read.
    """
    lat: list[float] = []
    nbytes = 0
    t0 = time.perf_counter()
    for key, size in objects:
        for start in range(0, size, BLOCK):
            t1 = time.perf_counter()
            end = min(start + BLOCK, size)
            data = await trio.to_thread.run_sync(store.get_range, key, start, end)
            lat.append(time.perf_counter() - t1)
            if len(data) != end - start:
                raise RuntimeError(f"{store.tier}: {key} [{start}:{end}] gave {len(data)} bytes")
            nbytes += len(data)
    return (nbytes, len(lat), time.perf_counter() - t0), lat


def _next_offset(raw: bytes) -> int:
    """Base offset + last offset delta + 1, from the RecordBatch v2 header."""
    return int.from_bytes(raw[0:8], "big") + int.from_bytes(raw[23:27], "big") + 1


def _read_row(
    tier: TierName, source: ReadSource, passes: Sequence[tuple[int, int, float]]
) -> ReadRow:
    """The median pass (by rate), with every pass's rate kept."""
    rates = [mib_per_s(b, s) for b, _, s in passes]
    median = sorted(passes, key=lambda p: mib_per_s(p[0], p[2]))[(len(passes) - 1) // 2]
    return ReadRow(tier, source, median[0], median[1], median[2], len(passes), rates)


@dataclass(frozen=True, slots=True)
class Sample:
    offset: int
    segment: int
    new_segment: bool  # the first sample read in its segment: includes the index fetch


def latency_samples(
    segments: Sequence[tuple[int, int]], batch_bytes: int, rng: random.Random
) -> list[Sample]:
    """Offsets to read, each alone in its own cache block; ``segments`` = (base, size)."""
    picks: list[tuple[int, int]] = []
    for i, (base, size) in enumerate(segments):
        blocks = -(-size // BLOCK)
        for block in range(0, blocks, SAMPLE_STRIDE):
            # The batch, and the 64 KiB a point read fetches, stay inside the block.
            end = (block + 1) * BLOCK - SAMPLE_MARGIN if (block + 1) * BLOCK < size else size
            first = -(-block * BLOCK // batch_bytes)
            last = min(end, size) // batch_bytes - 1
            if last < first:
                continue
            k = rng.randint(first, last)
            offset = base + k * RECORDS_PER_BATCH + rng.randrange(RECORDS_PER_BATCH)
            picks.append((i, offset))
    rng.shuffle(picks)
    seen: set[int] = set()
    out = []
    for i, offset in picks:
        out.append(Sample(offset, i, i not in seen))
        seen.add(i)
    return out


@dataclass(slots=True)
class Timed:
    seconds: list[float] = field(default_factory=list)
    fetched: list[int] = field(default_factory=list)  # bytes from the store, prefetch too
    unsettled: int = 0  # samples whose prefetches did not finish within the bound


async def time_reads(
    j: Journal, name: str, samples: Sequence[Sample], *, cold: bool = False
) -> Timed:
    """Seconds of ``read(name, offset, 1)`` per sample (each returns the record asked for).

    With ``cold``, after each read, wait (polling, with a deadline) until every
    prefetch the read cache started is done, so that samples do not queue
    behind each other's background fetches (a point read starts none).
    """
    out = Timed()
    for sample in samples:
        before = _cache(j) if cold else None
        t0 = time.perf_counter()
        records = await j.read(name, sample.offset, 1)
        out.seconds.append(time.perf_counter() - t0)
        if not records or records[0].offset != sample.offset:
            raise RuntimeError(f"read({name!r}, {sample.offset}) did not start there")
        if before is not None:
            target = _cache(j).cache_prefetch_started
            out.unsettled += not await _prefetched(j, target, trio.current_time() + 10.0)
            out.fetched.append(_cache(j).bytes_fetched - before.bytes_fetched)
    return out


async def _prefetched(j: Journal, target: int, deadline: float) -> bool:
    """Poll until the read cache has done ``target`` prefetches in all, or ``deadline``."""
    while True:
        if _cache(j).cache_prefetched >= target:
            return True
        if trio.current_time() >= deadline:
            return False
        await trio.sleep(0.001)


def _cache(j: Journal) -> TieringStatistics:
    stats = j.statistics().tiering
    assert stats is not None, "the journal has an object tier"
    return stats


def _latency_row(
    tier: TierName,
    source: LatencySource,
    seconds: Sequence[float],
    fetched: Sequence[int] = (),
    note: str = "",
) -> LatencyRow:
    s = sorted(seconds)
    ms = 1000.0
    return LatencyRow(
        tier, source, len(s),
        percentile(s, 0.5) * ms, percentile(s, 0.99) * ms, s[-1] * ms if s else math.nan,
        fetched_kib=sum(fetched) / len(fetched) / 1024 if fetched else math.nan,
        note=note,
    )  # fmt: skip


# -- 3. hot tail reads --------------------------------------------------------------


@dataclass(slots=True)
class HotTotals:
    """What the rounds of one hot case add up to."""

    reads: int = 0
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def row(self, api: HotApi, served_from: Served) -> HotRow:
        lat = sorted(self.latencies)
        us = 1e6
        return HotRow(
            api, served_from, self.reads, self.records, self.bytes, self.seconds,
            percentile(lat, 0.5) * us, percentile(lat, 0.99) * us,
        )  # fmt: skip


async def measure_hot(
    j: Journal, name: str, api: HotApi, end: int, seconds: float, totals: HotTotals
) -> None:
    """Walk the window one batch per read (or with ``tail``) until the time budget is spent."""
    lat = totals.latencies
    reads = records = nbytes = 0
    step = RECORDS_PER_BATCH
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while reads < MAX_OPS:
        if api == "tail":
            tail = cast(AsyncGenerator[Record, None], j.tail(name, 0))
            async with aclosing(tail):
                async for rec in tail:
                    records += 1
                    nbytes += len(rec.value or b"")
                    if rec.offset == end - 1:
                        break
            reads += 1
        else:
            for offset in range(0, end, step):
                t0 = time.perf_counter()
                if api == "read":
                    got = await j.read(name, offset, 1)
                    lat.append(time.perf_counter() - t0)
                    records += len(got)
                    nbytes += sum(len(r.value or b"") for r in got)
                else:
                    raw = await j.read_batches(name, offset, 1)
                    lat.append(time.perf_counter() - t0)
                    records += step * len(raw)
                    nbytes += sum(len(b) for b in raw)
                reads += 1
        if time.perf_counter() >= deadline:
            break
    totals.seconds += time.perf_counter() - start
    totals.reads += reads
    totals.records += records
    totals.bytes += nbytes


# -- the run ------------------------------------------------------------------------


async def run(root: Path, cfg: BenchConfig, report: Report, stores: Sequence[Store]) -> None:
    """Every case of the benchmark, in order, appending rows to ``report``."""

    def _progress(message: str) -> None:
        if not cfg.quick:
            print(message, file=sys.stderr, flush=True)

    batch = make_batch()
    for store in stores:
        await _tier_cases(root / f"journal-{store.tier}", store, batch, cfg, report, _progress)
    await _hot_cases(root / "journal-hot", batch, cfg, report, _progress)


async def _tier_cases(
    path: Path,
    store: Store,
    batch: bytes,
    cfg: BenchConfig,
    report: Report,
    progress: Callable[[str], None],
) -> None:
    tier = store.tier
    open_journal = partial(
        Journal.open, path, fsync="none", maintenance_interval=3600.0,
        object_url=store.url, object_options=store.options,
    )  # fmt: skip
    per_segment = cfg.segment_bytes // len(batch)  # whole batches that fit in one segment
    async with open_journal() as j:
        await j.migrate()  # the first pass lists the prefix: not what is measured
        for name, local_retention in ((COLD, 0), (TWIN, None)):
            config = StreamConfig(
                segment_bytes=cfg.segment_bytes,
                local_retention_bytes=local_retention,
                local_retention_ms=None,
                memory_bytes=0,
            )
            await j.create_stream(name, config)
            await fill(j, name, batch, per_segment * cfg.segments * len(batch))
            await j.roll(name)
        layout = [(s.base_offset, s.size_bytes) for s in j.segments(COLD)[:-1]]
        sealed_bytes = sum(size for _, size in layout)
        end = j.stream_info(COLD).next_offset
        row = await measure_migration(j, store, sealed_bytes, len(layout))
        objects = [(s.key, s.size_bytes) for s in j.segments(COLD) if s.key is not None]
        report.migrations.append(row)
        progress(
            f"migrate  {tier:<4} {row.mib_s:8.1f} MiB/s  ({store.reference} "
            f"{row.ref_mib_s:.1f} MiB/s, ratio {row.ratio:.2f})"
        )

    cold: list[tuple[int, int, float]] = []
    cached: list[tuple[int, int, float]] = []
    for repeat in range(cfg.cold_repeats):
        async with open_journal() as j:
            await j.migrate()  # nothing due: opens the store's connection
            cold.append(await read_pass(j, COLD, 0, end))
            if repeat == 0:
                cached.append(await read_pass(j, COLD, 0, end))
        progress(f"cold     {tier:<4} {mib_per_s(cold[-1][0], cold[-1][2]):8.1f} MiB/s")
    ranged: list[tuple[int, int, float]] = []
    get_seconds: list[float] = []
    for _ in range(cfg.cold_repeats):
        whole, each = await ranged_pass(store, objects)
        ranged.append(whole)
        get_seconds += each

    rng = random.Random(SEED)
    samples = latency_samples(layout, len(batch), rng)
    async with open_journal() as j:
        await j.migrate()
        obj = await time_reads(j, COLD, samples, cold=True)
        local_passes = [await read_pass(j, TWIN, 0, end)]
        deadline = time.perf_counter() + cfg.local_seconds
        while time.perf_counter() < deadline and len(local_passes) < 1000:
            local_passes.append(await read_pass(j, TWIN, 0, end))
        local = (await time_reads(j, TWIN, samples)).seconds
        files = sealed_files(j, TWIN)
        evict(files)
        evicted_pass = await read_pass(j, TWIN, 0, end)
        evict(files)
        evicted = (await time_reads(j, TWIN, samples)).seconds

    page = _read_row(tier, "local, page cache", local_passes)
    rows = [
        _read_row(tier, "object, cold", cold),
        _read_row(tier, "object, cached", cached),
        _read_row(tier, "store, ranged GETs", ranged),
        page,
        _read_row(tier, "local, evicted", [evicted_pass]),
    ]
    for r in rows:
        r.ratio = r.mib_s / page.mib_s if page.mib_s > 0 else math.nan
    report.reads += rows

    def split(new: bool) -> tuple[list[float], list[int]]:
        picked = [
            (t, f)
            for t, f, s in zip(obj.seconds, obj.fetched, samples, strict=True)
            if s.new_segment == new
        ]
        return [t for t, _ in picked], [f for _, f in picked]

    note = f"prefetch still running after 10 s: {obj.unsettled}" if obj.unsettled else ""
    lrows = [
        _latency_row(tier, "object, cold, new segment", *split(True), note=note),
        _latency_row(tier, "object, cold block", *split(False), note=note),
        _latency_row(tier, "store, one ranged GET", get_seconds, [BLOCK] * len(get_seconds)),
        _latency_row(tier, "local, page cache", local),
        _latency_row(tier, "local, evicted", evicted),
    ]
    ref = lrows[3].p50_ms
    for lr in lrows:
        lr.ratio = lr.p50_ms / ref if ref > 0 else math.nan
    report.latencies += lrows
    progress(
        f"latency  {tier:<4} cold p50 {lrows[1].p50_ms:.2f} ms, local p50 {ref:.3f} ms "
        f"({len(samples)} samples)"
    )


async def _hot_cases(
    path: Path, batch: bytes, cfg: BenchConfig, report: Report, progress: Callable[[str], None]
) -> None:
    async with Journal.open(path, fsync="none", maintenance_interval=3600.0) as j:
        streams: dict[Served, str] = {
            "memory": "hot-memory",
            "segment": "hot-segment",
        }
        await j.create_stream(streams["memory"], StreamConfig())
        await j.create_stream(streams["segment"], StreamConfig(memory_bytes=0))
        for name in streams.values():
            await fill(j, name, batch, HOT_WINDOW_BYTES)
        end = j.stream_info(streams["memory"]).next_offset
        held = j.statistics(streams["memory"]).memory_bytes
        if held < end // RECORDS_PER_BATCH * len(batch):
            raise RuntimeError(f"the memory window holds only {held} bytes")
        settle(j.root)
        apis: tuple[HotApi, ...] = (
            "read", "read_batches", "tail",
        )  # fmt: skip
        for api in apis:
            totals = {served: HotTotals() for served in streams}
            for _ in range(cfg.hot_rounds):  # alternate, so drift in load hits both alike
                for served, name in streams.items():
                    seconds = cfg.hot_seconds / cfg.hot_rounds
                    await measure_hot(j, name, api, end, seconds, totals[served])
            pair = [totals[served].row(api, served) for served in streams]
            seg = pair[1].records_s
            for row in pair:
                row.ratio = row.records_s / seg if seg > 0 else math.nan
            report.hot += pair
            progress(
                f"hot      {api:<12} memory {pair[0].records_s:,.0f} rec/s, "
                f"segment {pair[1].records_s:,.0f} rec/s"
            )


# -- the report ---------------------------------------------------------------------


def format_report(report: Report) -> str:
    m, s = report.machine, report.settings
    lines = [
        "StrataMQ tiering benchmark",
        f"machine: nproc {m['nproc']}, CPU {m['cpu_model']}, {m['python']}, trio {m['trio']}, "
        f"{m['kernel']}",
        f"storage: {m['filesystem']}; S3 = moto server on 127.0.0.1, same machine",
        f"settings: {s['segments']} segments x {s['segment_bytes'] // MIB} MiB per tier, "
        f"batches of {RECORDS_PER_BATCH} x {RECORD_BYTES} B records ({s['batch_bytes']:,} B), "
        f"{s['cold_repeats']} cold opens, hot {s['hot_seconds']:g} s per case"
        + (" [quick]" if s["quick"] else ""),
        "units: MiB/s = 2**20 bytes/s of segment bytes",
        "",
        "1. Migration: one migrate() of every sealed segment (upload, read-back check, "
        "catalog commit) vs a plain copy of the same files",
    ]
    lines += table(
        [("tier", -5), ("segments", 8), ("MiB", 6), ("migrate s", 9), ("MiB/s", 8),
         ("reference", -16), ("MiB/s", 8), ("ratio", 6), ("+ read-back MiB/s", 17),
         ("ratio", 6)],
        [
            [r.tier, str(r.segments), f"{r.bytes / MIB:.0f}", f"{r.seconds:.3f}",
             fmt(r.mib_s, ",.1f"), r.reference, fmt(r.ref_mib_s, ",.1f"),
             fmt(r.ratio, ".2f"), fmt(r.ref_readback_mib_s, ",.1f"),
             fmt(r.ratio_readback, ".2f")]
            for r in report.migrations
        ],
    )  # fmt: skip

    lines += [
        "",
        "2a. Sequential read_batches (1 MiB per call) over the sealed segments; "
        "ratio = MiB/s / local page cache",
    ]
    lines += table(
        [("tier", -5), ("source", -18), ("MiB", 6), ("calls", 6), ("seconds", 8),
         ("MiB/s", 9), ("ratio", 6), ("runs", 5), ("all MiB/s", -24)],
        [
            [r.tier, r.source, f"{r.bytes / MIB:.0f}", str(r.calls), f"{r.seconds:.3f}",
             fmt(r.mib_s, ",.1f"), fmt(r.ratio, ".3f"), str(r.passes),
             " ".join(f"{x:.0f}" for x in r.all_mib_s[:6])]
            for r in report.reads
        ],
    )  # fmt: skip

    lines += [
        "",
        "2b. First-byte latency: read(offset, 1 batch) at random offsets, each in an uncached "
        "1 MiB block; ratio = p50 / local page cache p50",
    ]
    lines += table(
        [("tier", -5), ("source", -26), ("samples", 7), ("p50 ms", 8), ("p99 ms", 8),
         ("max ms", 8), ("ratio", 7), ("KiB fetched/read", 16), ("", -1)],
        [
            [r.tier, r.source, str(r.samples), fmt(r.p50_ms, ".3f"), fmt(r.p99_ms, ".3f"),
             fmt(r.max_ms, ".3f"), fmt(r.ratio, ",.1f"), fmt(r.fetched_kib, ",.0f"),
             r.note]
            for r in report.latencies
        ],
    )  # fmt: skip

    lines += [
        "",
        f"3. Hot tail reads over the newest {HOT_WINDOW_BYTES // MIB} MiB, one batch per read "
        "(tail: the iterator); ratio = memory / segment records/s",
    ]
    lines += table(
        [("api", -12), ("served from", -11), ("reads", 8), ("records/s", 11),
         ("MiB/s", 8), ("p50 us", 7), ("p99 us", 7), ("ratio", 6)],
        [
            [r.api, r.served_from, f"{r.reads:,}", fmt(r.records_s, ",.0f"),
             fmt(r.mib_s, ",.1f"), fmt(r.p50_us, ".1f"), fmt(r.p99_us, ".1f"),
             fmt(r.ratio, ".2f")]
            for r in report.hot
        ],
    )  # fmt: skip
    lines.append("  (MiB/s: value bytes for read/tail, batch bytes for read_batches)")
    lines.append(f"\ntotal run time {report.total_seconds:.1f} s")
    return "\n".join(lines)


def main(
    *,
    quick: bool = False,
    directory: Path | None = None,
    segment_mib: int | None = None,
    segments: int | None = None,
    json_path: Path | None = None,
) -> int:
    from tools.s3local import create_bucket, start_moto

    cfg = BenchConfig.make(quick=quick, segment_mib=segment_mib, segments=segments)
    root = bench_root(directory, ".bench-tiering-")
    settings: dict[str, Any] = asdict(cfg)
    settings["batch_bytes"] = len(make_batch())
    settings["directory"] = str(root)
    report = Report(machine=machine_info(root), settings=settings)
    announce("tiering benchmark", report.machine, root)
    started = time.perf_counter()
    try:
        with start_moto() as server:
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            create_bucket(server.endpoint, bucket)
            stores = [file_store(root / "file-store"), s3_store(server.endpoint, bucket)]
            trio.run(run, root, cfg, report, stores)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.total_seconds = time.perf_counter() - started
    publish_report(format_report(report), report.to_json(), json_path)
    return 0

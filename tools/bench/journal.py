"""Journal benchmark: append, read and tail against the raw disk rate, in one run.

Run it as ``python -m tools.bench journal`` (``--quick`` for a demo of a few
seconds, ``--seconds``/``--max-mib`` to size the cases, ``--json FILE`` to keep
the numbers). Every case is bounded by a time budget (``--seconds``), a bytes
budget (``--max-mib``) and an operation count, so the run always stops by
itself; the full run takes about three to four minutes on a 2-core machine.

What is measured, and how
-------------------------

Workloads ("shapes"): records of 100 B, 1 KiB and 64 KiB values (random bytes,
no key, no headers) in batches of 1, 100 and 1000 records. For each shape the
``Record`` objects and one RecordBatch v2 (``encode_batch``) are built *before*
any timed loop; the same objects are appended again and again (the journal
copies what it stores, so reusing them is safe). All byte rates are in MiB/s
(2**20 bytes) of *encoded batch bytes*, the bytes that reach the segment file.

1. **Raw disk reference.** A plain file is written with ``os.write`` of the
   shape's encoded batch size (after one untimed warm-up write), for the same
   time and bytes budget, with the fsync cadence of each journal policy:
   ``always`` fsyncs after every write; ``interval`` writes continuously and
   fsyncs whenever ``fsync_interval_ms`` have passed since the previous fsync
   returned (plus a final fsync, so every byte counted is durable); ``none``
   never fsyncs (page-cache speed). The file
   is deleted afterwards. One writer: this is "what the disk gives a simple
   loop", the denominator of every ratio. Per-operation latency (one write,
   plus its fsync when one followed) is reported too: under ``always`` its p99
   is the disk's fsync tail, the floor for any acknowledged latency.

2. **Append throughput.** For each policy (``Journal.open(fsync=policy,
   fsync_interval_ms=...)``), each shape, each API (``append`` with the
   pre-built records, ``append_batch`` with the pre-encoded batch) and each
   concurrency C (``--concurrency``, default 1, 8 and 64 for ``always``
   and ``interval``; 1 for ``none``), a fresh stream with the default
   ``StreamConfig`` is created, one untimed warm-up append is made, then C
   trio tasks append in a loop until the time or bytes budget is spent (each
   task reserves the budget before it appends, so at least one and at most
   budget/batch appends run). Records and bytes come from the journal's own
   statistics (``Journal.statistics``); elapsed time runs from the start of the
   tasks to the end of the last acknowledged append. An append returns only
   once durable under the policy, so these are *acknowledged* rates. Segment
   rolls (every 128 MiB, with their fsync) fall inside the timed region when
   the budget reaches them, as they would in production. The stream is deleted
   afterwards (its dirty pages are dropped, so cases do not leak writeback into
   each other). Each row also shows per-append latency p50/p99, the number of
   fsyncs, and the ratio to the raw rate of the same cadence. An appender
   waits for its fsync, so the disk is kept busy only by concurrent appenders;
   with C > 1 group commit lets one fsync acknowledge several appends, which
   can also put ``always`` above its one-fsync-per-write reference.
   A pre-encoded batch larger than the default ``max_batch_bytes`` (8 MiB; the
   64 KiB x 1000 shape) gets a stream whose limit is raised to fit, marked in
   the notes; ``append`` splits such lists into several batches itself.

3. **Read throughput.** Over the data of each ``fsync=none``,
   ``append_batch``, C=1 case (still in the page cache: this measures the
   journal's CPU cost per byte, not the disk), sequential passes of
   ``read(name, offset, 1 MiB)`` (records decoded into ``Record`` objects) and of
   ``read_batches(name, offset, 1 MiB)`` (raw bytes, CRC-checked), each for the
   time budget; MiB/s in encoded batch bytes, records/s.

4. **Tail wake latency.** For ``none`` and ``always``: a task iterates
   ``Journal.tail`` while another appends single 100 B records one after the
   other (sequentially, never concurrently). ``time.perf_counter`` is stored per
   offset just before ``await j.append``, just after it returns (the ack), and
   when the tail yields that record. Reported: append-to-wake p50/p99/max (under
   ``always`` this includes the fsync, since readers only see acknowledged
   data) and ack-to-wake p50/p99, which is *negative* when the reader got the
   record before the appender task was resumed. The first samples are
   discarded as warm-up.

Before every case, outside its timed region, :func:`settle` flushes the
machine's dirty pages (``os.sync()``), so a case does not pay for the
writeback of the one before it, and then writes and deletes a scratch file as
large as the case's bytes budget so that the page cache and heap memory the
case will use is warm (virtual machines that return freed memory to their host
make the first touch of it about ten times slower; a long-running server does
not see that). The tail cases run first under their policy, on a quiet disk.

Targets (printed with PASS/MISS): ``append_batch`` of >= 64 KiB batches under
``interval`` at >= 80% of the raw ``interval`` rate (judged per shape at the
concurrency that did best: a single appender waits for each of its fsyncs, and
the largest batches fill the bytes budget in a few appends at high C); ``append`` of
100 B records in batches of 1000 at >= 300,000 records/s (highest concurrency
for ``always``/``interval``, C=1 for ``none``); tail wake p99 <= 1 ms.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import trio

from journal import FsyncPolicy, Journal, Record, StreamConfig
from journal.segments.batch import encode_batch
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
from tools.bench.tailing import time_tail

__all__ = ["BenchConfig", "Report", "main", "run"]

Api = Literal["append", "append_batch"]
POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "none")
APIS: tuple[Api, ...] = ("append", "append_batch")
RECORD_SIZES = (100, 1 << 10, 64 << 10)
BATCH_COUNTS = (1, 100, 1000)
READ_MAX_BYTES = 1 << 20
TAIL_RECORD_BYTES = 100
TAIL_WARMUP = 50
MAX_OPS = 2_000_000  # hard bound on operations per case, whatever the budgets
DEFAULT_MAX_BATCH_BYTES = StreamConfig().max_batch_bytes

TARGET_RAW_RATIO = 0.80
TARGET_RECORDS_PER_S = 300_000
TARGET_TAIL_P99_S = 0.001

_BASE_OFFSET = struct.Struct(">q")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_AT = 23  # byte position in the RecordBatch v2 header


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """``count`` records of ``record_bytes`` value bytes each, per append."""

    record_bytes: int
    count: int

    @property
    def label(self) -> str:
        return f"{_size_label(self.record_bytes)} x{self.count}"


def _size_label(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    seconds: float = 1.5  # per append / raw case
    read_seconds: float = 0.45  # per read case
    tail_seconds: float = 2.25  # per tail case
    tail_max_samples: int = 20_000
    max_bytes: int = 256 * MIB  # per write case
    concurrency: tuple[int, ...] = (1, 8, 64)  # for always / interval; none runs C=1
    fsync_interval_ms: int = 5
    shapes: tuple[Shape, ...] = tuple(Shape(s, n) for s in RECORD_SIZES for n in BATCH_COUNTS)
    quick: bool = False

    @classmethod
    def make(
        cls,
        *,
        quick: bool,
        seconds: float | None,
        max_mib: int | None,
        concurrency: tuple[int, ...] | None,
        fsync_interval_ms: int,
    ) -> BenchConfig:
        if quick:
            secs = 0.03 if seconds is None else seconds
            return cls(
                seconds=secs,
                read_seconds=secs,
                tail_seconds=min(5 * secs, 10.0),
                tail_max_samples=500,
                max_bytes=(8 if max_mib is None else max_mib) * MIB,
                concurrency=concurrency or (1, 8),
                fsync_interval_ms=fsync_interval_ms,
                shapes=tuple(
                    Shape(s, n)
                    for s in RECORD_SIZES
                    for n in BATCH_COUNTS
                    if s * n < 64 * 1000 * 1024
                ),
                quick=True,
            )
        secs = 1.5 if seconds is None else seconds
        return cls(
            seconds=secs,
            read_seconds=min(0.3 * secs, 10.0),
            tail_seconds=min(1.5 * secs, 30.0),
            max_bytes=(256 if max_mib is None else max_mib) * MIB,
            concurrency=concurrency or (1, 8, 64),
            fsync_interval_ms=fsync_interval_ms,
        )

    def concurrencies(self, policy: FsyncPolicy) -> tuple[int, ...]:
        return (1,) if policy == "none" else self.concurrency


# -- results ------------------------------------------------------------------------


@dataclass(slots=True)
class RawRow:
    cadence: FsyncPolicy
    shape: str
    batch_bytes: int
    seconds: float
    writes: int
    bytes: int
    fsyncs: int
    op_p50_ms: float  # one write, plus the fsync when one followed it
    op_p99_ms: float

    @property
    def mib_s(self) -> float:
        return mib_per_s(self.bytes, self.seconds)


@dataclass(slots=True)
class AppendRow:
    api: Api
    policy: FsyncPolicy
    concurrency: int
    shape: str
    batch_bytes: int
    seconds: float
    appends: int
    records: int
    bytes: int
    fsyncs: int
    latency_p50_ms: float
    latency_p99_ms: float
    raw_mib_s: float
    note: str = ""

    @property
    def mib_s(self) -> float:
        return mib_per_s(self.bytes, self.seconds)

    @property
    def records_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    @property
    def ratio(self) -> float:
        return self.mib_s / self.raw_mib_s if self.raw_mib_s > 0 else math.nan


@dataclass(slots=True)
class ReadRow:
    api: Literal["read", "read_batches"]
    shape: str
    seconds: float
    calls: int
    records: int
    bytes: int
    passes: float

    @property
    def mib_s(self) -> float:
        return mib_per_s(self.bytes, self.seconds)

    @property
    def records_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan


@dataclass(slots=True)
class TailRow:
    policy: FsyncPolicy
    samples: int
    append_to_wake_p50_ms: float
    append_to_wake_p99_ms: float
    append_to_wake_max_ms: float
    ack_to_wake_p50_ms: float
    ack_to_wake_p99_ms: float
    append_p50_ms: float
    append_p99_ms: float
    missed: int = 0  # appended records the tail never yielded (should be 0)


@dataclass(slots=True)
class TargetRow:
    target: str
    case: str
    measured: str
    passed: bool


@dataclass(slots=True)
class Report:
    machine: dict[str, str | int]
    settings: dict[str, Any]
    raw: list[RawRow] = field(default_factory=list)
    appends: list[AppendRow] = field(default_factory=list)
    reads: list[ReadRow] = field(default_factory=list)
    tails: list[TailRow] = field(default_factory=list)
    targets: list[TargetRow] = field(default_factory=list)
    total_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "raw": json_rows(self.raw, "mib_s"),
            "appends": json_rows(self.appends, "mib_s", "records_s", "ratio"),
            "reads": json_rows(self.reads, "mib_s", "records_s"),
            "tails": json_rows(self.tails),
            "targets": json_rows(self.targets),
            "total_seconds": self.total_seconds,
        }


# -- workloads ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    shape: Shape
    records: list[Record]
    batch: bytes


def make_workload(shape: Shape) -> Workload:
    value = os.urandom(shape.record_bytes)
    records = [Record(value=value) for _ in range(shape.count)]
    batch = encode_batch(records, now_ms=time.time_ns() // 1_000_000)
    return Workload(shape, records, batch)


# -- 1. raw disk reference ----------------------------------------------------------


def measure_raw(
    directory: Path, batch: bytes, cadence: FsyncPolicy, cfg: BenchConfig, shape: str
) -> RawRow:
    """``os.write`` the batch size in a loop with the policy's fsync cadence."""
    path = directory / f"raw-{cadence}.dat"
    interval = cfg.fsync_interval_ms / 1000
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    view = memoryview(batch)
    size = len(batch)
    writes = fsyncs = written = 0
    ops: list[float] = []
    try:
        os.write(fd, view)  # untimed warm-up, like the journal cases' first append
        if cadence != "none":
            os.fsync(fd)
        start = last_sync = time.perf_counter()
        deadline = start + cfg.seconds
        while True:
            t0 = time.perf_counter()
            done = 0
            while done < size:
                done += os.write(fd, view[done:])
            written += size
            writes += 1
            now = time.perf_counter()
            if cadence == "always" or (cadence == "interval" and now - last_sync >= interval):
                os.fsync(fd)
                fsyncs += 1
                now = last_sync = time.perf_counter()
            ops.append(now - t0)
            if now >= deadline or written + size > cfg.max_bytes or writes >= MAX_OPS:
                break
        if cadence == "interval" and now != last_sync:
            os.fsync(fd)  # count only durable bytes, as the journal's acks do
            fsyncs += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    ops.sort()
    return RawRow(
        cadence,
        shape,
        size,
        elapsed,
        writes,
        written,
        fsyncs,
        percentile(ops, 0.5) * 1000,
        percentile(ops, 0.99) * 1000,
    )


# -- 2. append throughput -----------------------------------------------------------


@dataclass(slots=True)
class _Budget:
    deadline: float
    max_bytes: int
    size: int
    issued: int = 0
    issued_bytes: int = 0

    def take(self) -> bool:
        """Reserve one append of ``size`` bytes, if the budgets allow it (always the first)."""
        if self.issued and (
            time.perf_counter() >= self.deadline
            or self.issued_bytes + self.size > self.max_bytes
            or self.issued >= MAX_OPS
        ):
            return False
        self.issued += 1
        self.issued_bytes += self.size
        return True


async def measure_append(
    j: Journal,
    name: str,
    api: Api,
    work: Workload,
    concurrency: int,
    policy: FsyncPolicy,
    raw: RawRow,
    cfg: BenchConfig,
    note: str = "",
) -> AppendRow:
    """C tasks appending the same pre-built workload until a budget is spent."""
    op: Callable[[], Awaitable[object]]
    if api == "append":
        op = partial(j.append, name, work.records)
    else:
        op = partial(j.append_batch, name, work.batch)
    await op()  # warm-up: the first fsync, file creation, code paths
    before = j.statistics(name)
    latencies: list[float] = []
    budget = _Budget(time.perf_counter() + cfg.seconds, cfg.max_bytes, len(work.batch))

    async def appender() -> None:
        while budget.take():
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(appender)
    elapsed = time.perf_counter() - start
    after = j.statistics(name)
    latencies.sort()
    return AppendRow(
        api=api,
        policy=policy,
        concurrency=concurrency,
        shape=work.shape.label,
        batch_bytes=len(work.batch),
        seconds=elapsed,
        appends=after.appends - before.appends,
        records=after.records - before.records,
        bytes=after.bytes_appended - before.bytes_appended,
        fsyncs=after.fsyncs - before.fsyncs,
        latency_p50_ms=percentile(latencies, 0.50) * 1000,
        latency_p99_ms=percentile(latencies, 0.99) * 1000,
        raw_mib_s=raw.mib_s,
        note=note,
    )


# -- 3. read throughput -------------------------------------------------------------


def _next_offset(batch: bytes) -> int:
    base = _BASE_OFFSET.unpack_from(batch, 0)[0]
    delta = _LAST_OFFSET_DELTA.unpack_from(batch, _LAST_OFFSET_DELTA_AT)[0]
    return int(base) + int(delta) + 1


async def measure_read(
    j: Journal, name: str, api: Literal["read", "read_batches"], work: Workload, seconds: float
) -> ReadRow:
    """Sequential passes over the stream with 1 MiB reads until the time budget is spent."""
    info = j.stream_info(name)
    first, end = info.first_offset, info.next_offset
    bytes_per_record = len(work.batch) / work.shape.count
    offset = first
    calls = records = nbytes = 0
    wrapped = 0
    start = time.perf_counter()
    deadline = start + seconds
    while calls < MAX_OPS and (calls == 0 or time.perf_counter() < deadline):
        if api == "read":
            recs = await j.read(name, offset, READ_MAX_BYTES)
            records += len(recs)
            nbytes += round(len(recs) * bytes_per_record)
            last = recs[-1].offset
            assert last is not None
            offset = last + 1
        else:
            batches = await j.read_batches(name, offset, READ_MAX_BYTES)
            for raw in batches:
                nbytes += len(raw)
            offset = _next_offset(batches[-1])
            records += offset - _BASE_OFFSET.unpack_from(batches[0], 0)[0]
        calls += 1
        if offset >= end:
            offset = first
            wrapped += 1
    elapsed = time.perf_counter() - start
    passes = wrapped + (offset - first) / max(end - first, 1)
    return ReadRow(api, work.shape.label, elapsed, calls, records, nbytes, passes)


# -- 4. tail wake latency -----------------------------------------------------------


async def measure_tail(j: Journal, policy: FsyncPolicy, cfg: BenchConfig) -> TailRow:
    """One sequential appender of single small records, one tail reader; per-offset clocks."""
    name = f"tail-{policy}"
    await j.create_stream(name)
    times = await time_tail(
        j,
        name,
        Record(value=os.urandom(TAIL_RECORD_BYTES)),
        samples=cfg.tail_max_samples,
        warmup=TAIL_WARMUP,
        seconds=cfg.tail_seconds,
    )
    await j.delete_stream(name)

    sent, acked, woke = times.sent, times.acked, times.woke
    idx = times.samples()
    seen = times.delivered()
    missed = len(idx) - len(seen)
    to_wake = sorted(woke[i] - sent[i] for i in seen)
    ack_wake = sorted(woke[i] - acked[i] for i in seen)
    append_lat = sorted(acked[i] - sent[i] for i in idx)
    ms = 1000.0
    return TailRow(
        policy=policy,
        samples=len(seen),
        append_to_wake_p50_ms=percentile(to_wake, 0.5) * ms,
        append_to_wake_p99_ms=percentile(to_wake, 0.99) * ms,
        append_to_wake_max_ms=(to_wake[-1] if to_wake else math.nan) * ms,
        ack_to_wake_p50_ms=percentile(ack_wake, 0.5) * ms,
        ack_to_wake_p99_ms=percentile(ack_wake, 0.99) * ms,
        append_p50_ms=percentile(append_lat, 0.5) * ms,
        append_p99_ms=percentile(append_lat, 0.99) * ms,
        missed=missed,
    )


# -- the run ------------------------------------------------------------------------


async def run(root: Path, cfg: BenchConfig, report: Report) -> None:
    """Every case of the benchmark, in order, appending rows to ``report``."""

    def _progress(message: str) -> None:
        if not cfg.quick:  # the demo prints only the final report
            print(message, file=sys.stderr, flush=True)

    workloads = [make_workload(shape) for shape in cfg.shapes]
    total = sum(len(cfg.concurrencies(p)) for p in POLICIES) * len(APIS) * len(workloads)
    done = 0
    for policy in POLICIES:
        async with Journal.open(
            root / f"journal-{policy}", fsync=policy, fsync_interval_ms=cfg.fsync_interval_ms
        ) as j:
            if policy in ("none", "always"):
                settle(root)
                tail = await measure_tail(j, policy, cfg)
                report.tails.append(tail)
                _progress(
                    f"tail {policy:<8} p50 {tail.append_to_wake_p50_ms:.3f} ms "
                    f"p99 {tail.append_to_wake_p99_ms:.3f} ms ({tail.samples} samples)"
                )
            for work in workloads:
                settle(root, _prime_bytes(work, cfg))
                raw = measure_raw(root, work.batch, policy, cfg, work.shape.label)
                report.raw.append(raw)
                _progress(
                    f"raw  {policy:<8} {work.shape.label:<12} {raw.mib_s:9.1f} MiB/s"
                    f"  ({raw.writes} writes, {raw.fsyncs} fsyncs)"
                )
                for api in APIS:
                    for c in cfg.concurrencies(policy):
                        done += 1
                        t0 = time.perf_counter()
                        row = await _append_case(
                            j, api, work, c, policy, raw, cfg, report, _progress
                        )
                        _progress(
                            f"[{done:3d}/{total}] {api:<12} {policy:<8} C={c:<2} "
                            f"{work.shape.label:<12} {row.mib_s:9.1f} MiB/s "
                            f"{row.records_s:12,.0f} rec/s  ratio {row.ratio:5.2f} "
                            f"({time.perf_counter() - t0:.2f} s) {row.note}"
                        )


def _prime_bytes(work: Workload, cfg: BenchConfig) -> int:
    """About what a write case may touch: its budget plus the warm-up and one spare batch."""
    return cfg.max_bytes + 2 * len(work.batch)


async def _append_case(
    j: Journal,
    api: Api,
    work: Workload,
    c: int,
    policy: FsyncPolicy,
    raw: RawRow,
    cfg: BenchConfig,
    report: Report,
    progress: Callable[[str], None],
) -> AppendRow:
    name = f"{api}-{work.shape.record_bytes}x{work.shape.count}-c{c}"
    config = StreamConfig()
    note = ""
    if api == "append_batch" and len(work.batch) > DEFAULT_MAX_BATCH_BYTES:
        config = StreamConfig(max_batch_bytes=len(work.batch))
        note = "max_batch_bytes raised"
    await j.create_stream(name, config)
    settle(j.root, _prime_bytes(work, cfg))
    try:
        row = await measure_append(j, name, api, work, c, policy, raw, cfg, note)
        report.appends.append(row)
        if policy == "none" and api == "append_batch" and c == 1:
            for read_api in ("read", "read_batches"):
                rrow = await measure_read(j, name, read_api, work, cfg.read_seconds)
                report.reads.append(rrow)
                progress(
                    f"read {read_api:<12} {work.shape.label:<12} {rrow.mib_s:9.1f} MiB/s "
                    f"{rrow.records_s:12,.0f} rec/s"
                )
        return row
    finally:
        await j.delete_stream(name)


# -- targets and the report ---------------------------------------------------------


def evaluate_targets(report: Report, cfg: BenchConfig) -> list[TargetRow]:
    top = max(cfg.concurrency)
    out: list[TargetRow] = []
    t1 = f"append_batch, batch >= 64 KiB, fsync=interval: >= {TARGET_RAW_RATIO:.0%} of raw"
    best: dict[str, AppendRow] = {}  # per shape, the concurrency that did best
    judged = [
        row
        for row in report.appends
        if row.api == "append_batch" and row.policy == "interval" and row.batch_bytes >= 64 << 10
    ]
    for row in judged:
        if row.shape not in best or row.ratio > best[row.shape].ratio:
            best[row.shape] = row
    for row in best.values():
        out.append(
            TargetRow(
                t1,
                f"{row.shape} C={row.concurrency}",
                f"{row.ratio:.0%} ({row.mib_s:.0f} of {row.raw_mib_s:.0f} MiB/s)",
                row.ratio >= TARGET_RAW_RATIO,
            )
        )
    t2 = f"append, 100 B x1000: >= {TARGET_RECORDS_PER_S:,} records/s"
    for row in report.appends:
        judged_c = 1 if row.policy == "none" else top
        if (
            row.api == "append"
            and row.shape == Shape(100, 1000).label
            and row.concurrency == judged_c
        ):
            out.append(
                TargetRow(
                    t2,
                    f"fsync={row.policy} C={row.concurrency}",
                    f"{row.records_s:,.0f} records/s",
                    row.records_s >= TARGET_RECORDS_PER_S,
                )
            )
    t3 = f"tail wake (append-to-wake) p99 <= {TARGET_TAIL_P99_S * 1000:g} ms"
    for tail in report.tails:
        out.append(
            TargetRow(
                t3,
                f"fsync={tail.policy}",
                f"p99 {tail.append_to_wake_p99_ms:.3f} ms",
                tail.append_to_wake_p99_ms <= TARGET_TAIL_P99_S * 1000,
            )
        )
    return out


def format_report(report: Report) -> str:
    m, s = report.machine, report.settings
    lines = [
        "StrataMQ journal benchmark",
        f"machine: nproc {m['nproc']}, CPU {m['cpu_model']}, {m['python']}, trio {m['trio']}, "
        f"{m['kernel']}",
        f"storage: {m['filesystem']}",
        f"settings: {s['seconds']:g} s and {s['max_bytes'] // MIB} MiB per write case, "
        f"reads {s['read_seconds']:g} s, tails {s['tail_seconds']:g} s, "
        f"fsync_interval_ms={s['fsync_interval_ms']}, concurrency {s['concurrency']}"
        + (" [quick]" if s["quick"] else ""),
        "units: MiB/s = 2**20 bytes/s of encoded RecordBatch bytes; ratio = journal / raw "
        "MiB/s at the same fsync cadence",
        "",
        "1. Raw disk reference: os.write of one batch size in a loop, fsync cadence of each "
        "policy (op = one write, plus its fsync if one followed)",
    ]
    order = {p: i for i, p in enumerate(POLICIES)}
    lines += table(
        [("batch", -12), ("fsync", -8), ("bytes", 10), ("MiB/s", 9), ("writes", 8),
         ("fsyncs", 7), ("op p50 ms", 10), ("op p99 ms", 10)],
        [
            [raw.shape, raw.cadence, f"{raw.batch_bytes:,}", fmt(raw.mib_s, ",.1f"),
             f"{raw.writes:,}", f"{raw.fsyncs:,}", fmt(raw.op_p50_ms, ".3f"),
             fmt(raw.op_p99_ms, ".3f")]
            for raw in sorted(report.raw, key=lambda r: (r.batch_bytes, order[r.cadence]))
        ],
    )  # fmt: skip

    lines += ["", "2. Append throughput (acknowledged)"]
    lines += table(
        [("api", -12), ("fsync", -8), ("C", 2), ("batch", -12), ("MiB/s", 9),
         ("records/s", 12), ("raw MiB/s", 10), ("ratio", 6), ("p50 ms", 8), ("p99 ms", 8),
         ("appends", 8), ("fsyncs", 7), ("note", -4)],
        [
            [r.api, r.policy, str(r.concurrency), r.shape, fmt(r.mib_s, ",.1f"),
             fmt(r.records_s, ",.0f"), fmt(r.raw_mib_s, ",.1f"), fmt(r.ratio, ".2f"),
             fmt(r.latency_p50_ms, ".3f"), fmt(r.latency_p99_ms, ".3f"),
             f"{r.appends:,}", f"{r.fsyncs:,}", r.note]
            for r in report.appends
        ],
    )  # fmt: skip

    lines += ["", "3. Read throughput (page-cache data of the fsync=none append_batch C=1 cases)"]
    lines += table(
        [("api", -12), ("batch", -12), ("MiB/s", 9), ("records/s", 12), ("calls", 8),
         ("passes", 7)],
        [
            [rr.api, rr.shape, fmt(rr.mib_s, ",.1f"), fmt(rr.records_s, ",.0f"),
             f"{rr.calls:,}", f"{rr.passes:.2f}"]
            for rr in report.reads
        ],
    )  # fmt: skip

    lines += ["", "4. Tail wake latency: sequential single 100 B appends, one tail reader (ms)"]
    lines += table(
        [("fsync", -8), ("samples", 8), ("wake p50", 9), ("wake p99", 9), ("wake max", 9),
         ("ack->wake p50", 14), ("ack->wake p99", 14), ("append p50", 11),
         ("append p99", 11), ("", -1)],
        [
            [t.policy, f"{t.samples:,}", f"{t.append_to_wake_p50_ms:.3f}",
             f"{t.append_to_wake_p99_ms:.3f}", f"{t.append_to_wake_max_ms:.3f}",
             f"{t.ack_to_wake_p50_ms:.3f}", f"{t.ack_to_wake_p99_ms:.3f}",
             f"{t.append_p50_ms:.3f}", f"{t.append_p99_ms:.3f}",
             f"MISSED {t.missed}" if t.missed else ""]
            for t in report.tails
        ],
    )  # fmt: skip
    lines.append(
        "  (wake = from just before append to the tail yielding the record; ack->wake < 0:"
        " the reader had it before the appender resumed)"
    )
    floor = [r for r in report.raw if r.cadence == "always" and r.shape == Shape(100, 1).label]
    if floor:
        lines.append(
            f"  (disk floor under always: raw write+fsync of {floor[0].batch_bytes} B "
            f"p50 {floor[0].op_p50_ms:.3f} ms, p99 {floor[0].op_p99_ms:.3f} ms)"
        )

    lines += ["", "Targets"]
    for tr in report.targets:
        verdict = "PASS" if tr.passed else "MISS"
        lines.append(f"  {verdict}  {tr.target} | {tr.case}: {tr.measured}")
    passed = sum(t.passed for t in report.targets)
    lines.append(f"  {passed}/{len(report.targets)} target checks passed")
    lines.append(f"\ntotal run time {report.total_seconds:.1f} s")
    return "\n".join(lines)


def main(
    *,
    quick: bool = False,
    directory: Path | None = None,
    seconds: float | None = None,
    max_mib: int | None = None,
    concurrency: tuple[int, ...] | None = None,
    fsync_interval_ms: int = 5,
    json_path: Path | None = None,
) -> int:
    cfg = BenchConfig.make(
        quick=quick,
        seconds=seconds,
        max_mib=max_mib,
        concurrency=concurrency,
        fsync_interval_ms=fsync_interval_ms,
    )
    root = bench_root(directory, ".bench-journal-")
    settings = asdict(cfg)
    settings["shapes"] = [shape.label for shape in cfg.shapes]
    settings["directory"] = str(root)
    report = Report(machine=machine_info(root), settings=settings)
    announce("journal benchmark", report.machine, root)
    started = time.perf_counter()
    try:
        trio.run(run, root, cfg, report)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.total_seconds = time.perf_counter() - started
    report.targets = evaluate_targets(report, cfg)
    publish_report(format_report(report), report.to_json(), json_path)
    return 0

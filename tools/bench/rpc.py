"""Journal RPC benchmark: what the network hop costs, against the in-process journal.

Run it as ``python -m tools.bench rpc`` (``--quick`` for a demo of a few
seconds, ``--json FILE`` to keep the numbers, ``--no-server-process`` to skip
the separate server process). Every case is bounded by a time budget and an
operation count, so the run stops by itself: about a minute in full, under
15 s with ``--quick``.

Targets
-------

The same workload runs, one target after the other, against:

* **in-process**: a :class:`~journal.journal.Journal` called directly (the
  reference, the denominator of every ratio);
* **remote**: a :class:`~journal.remote.RemoteJournal` over loopback TCP to a
  :class:`~journal.rpc.server.JournalServer` on 127.0.0.1, port 0, serving
  that same journal *in this process* (client, server and journal share one
  trio loop and one core);
* **remote, server process**: a ``RemoteJournal`` to ``strata start --role
  journal`` in a child process (``STRATA_JOURNAL_PORT=0``, the other ports 0,
  its own data directory), started before the cases and stopped with SIGTERM
  after them. This is the realistic deployment: the server has its own
  interpreter and can use the second core.

Every stream is created with its fsync policy in its ``StreamConfig``, so the
three targets apply the same policy: ``none`` for the throughput rows (the
figure is the RPC's cost, not the disk's) and ``always`` for one latency row.

Cases
-----

1. **append latency**: one task appends one 100 B record, waits for the ack,
   appends the next; p50/p99 per append (``none`` and ``always``).
2. **append throughput**: ``append`` of 100 pre-built ``Record`` objects of
   100 B, by 1 and by 16 concurrent tasks (over the one connection of the
   client: the RPC pipelines requests); records/s and MiB/s of encoded batch
   bytes. The same with ``append_batch`` of the pre-encoded batch at C=16
   separates the per-record codec work from the per-request work.
3. **append_batch 1 MiB**: one task appends a pre-encoded batch of 1 KiB
   records (about 1 MiB); MiB/s.
4. **read_batches scan**: sequential passes of ``read_batches(offset,
   1 MiB)`` over a stream of 64 MiB (batches of 64 records of 1 KiB, written
   untimed before the case); MiB/s.
5. **tail**: a task iterates ``tail(name, 0)`` while another appends single
   100 B records one after the other; ``trio.current_time()`` is taken just
   before each append call and when the tail yields that record; p50/p99 of
   the difference. The first samples are warm-up.
6. **list_streams** round trip, sequential: p50/p99 (a request and an answer
   of a few dozen bytes; the design brief quotes about 67 µs for a trio
   64-byte round trip). Beside it, the floor: a plain trio client sending
   64 bytes to a plain trio echo server and reading them back, with the echo
   server in this process and in a child process.

Each figure is shown for the three targets with remote / in-process beside
it: above 1 is slower for latencies, below 1 is slower for rates. A second
table gives the CPU time per operation: of this process (client, and for the
first two targets also server and journal) and of the server process (from
``/proc/PID/stat``, 10 ms ticks), which says where the time goes.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from journal import FsyncPolicy, Journal, Record, StreamConfig
from journal.remote import RemoteJournal
from journal.rpc.server import JournalServer
from journal.segments.batch import encode_batch
from journal.service import JournalService
from tools.bench.common import (
    MIB,
    announce,
    bench_root,
    fmt,
    machine_info,
    percentile,
    publish_report,
    settle,
    table,
)
from tools.bench.tailing import time_tail

__all__ = ["BenchConfig", "Report", "main", "run"]

TARGETS = ("in-process", "remote", "remote-proc")
SMALL_BYTES = 100
BATCH_RECORDS = 100
BIG_RECORD_BYTES = 1 << 10
BIG_BATCH_RECORDS = 1000  # 1 KiB x 1000: a batch of about 1 MiB
SCAN_RECORDS = 64  # 1 KiB x 64 per batch in the scanned stream
READ_MAX_BYTES = 1 << 20
TAIL_WARMUP = 50
ECHO_BYTES = 64
ECHO_SERVER = """
import trio

async def echo(stream):
    while data := await stream.receive_some(65536):
        await stream.send_all(data)

async def main():
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        print(listeners[0].socket.getsockname()[1], flush=True)

trio.run(main)
"""
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
DESIGN_ROUND_TRIP_US = 67.0


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchConfig:
    seconds: float = 1.5  # per throughput case and target
    latency_seconds: float = 1.0  # per latency case and target
    latency_samples: int = 5_000  # at most, per latency case and target
    always_samples: int = 1_000  # the fsync=always latency case
    max_bytes: int = 512 * MIB  # per write case and target
    scan_bytes: int = 64 * MIB
    server_process: bool = True
    quick: bool = False

    @classmethod
    def make(cls, *, quick: bool, server_process: bool) -> BenchConfig:
        if quick:
            return cls(
                seconds=0.2,
                latency_seconds=0.15,
                latency_samples=500,
                always_samples=100,
                max_bytes=64 * MIB,
                scan_bytes=16 * MIB,
                server_process=server_process,
                quick=True,
            )
        return cls(server_process=server_process)


# -- results ------------------------------------------------------------------------


@dataclass(slots=True)
class Measured:
    """One case on one target: its figures, and what it cost in CPU."""

    target: str
    values: dict[str, float]
    ops: int
    seconds: float
    cpu_client_s: float = math.nan
    cpu_server_s: float = math.nan

    @property
    def client_us_per_op(self) -> float:
        return self.cpu_client_s / self.ops * 1e6 if self.ops else math.nan

    @property
    def server_us_per_op(self) -> float:
        return self.cpu_server_s / self.ops * 1e6 if self.ops else math.nan


@dataclass(slots=True)
class CaseResult:
    case: str
    metrics: tuple[tuple[str, str], ...]  # (name, format spec), in display order
    targets: dict[str, Measured] = field(default_factory=dict)

    def value(self, target: str, metric: str) -> float:
        m = self.targets.get(target)
        return math.nan if m is None else m.values.get(metric, math.nan)

    def ratio(self, target: str, metric: str) -> float:
        base = self.value("in-process", metric)
        return self.value(target, metric) / base if base > 0 else math.nan


@dataclass(slots=True)
class Report:
    machine: dict[str, str | int]
    settings: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    echo: dict[str, dict[str, float]] = field(default_factory=dict)  # where -> p50/p99 µs
    server_command: str = ""
    total_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        cases = []
        for c in self.cases:
            targets = {}
            for name, m in c.targets.items():
                d = asdict(m)
                d["client_us_per_op"] = m.client_us_per_op
                d["server_us_per_op"] = m.server_us_per_op
                targets[name] = d
            ratios = {
                t: {metric: c.ratio(t, metric) for metric, _ in c.metrics}
                for t in TARGETS[1:]
                if t in c.targets
            }
            cases.append({"case": c.case, "targets": targets, "ratios": ratios})
        return {
            "machine": self.machine,
            "settings": self.settings,
            "server_command": self.server_command,
            "cases": cases,
            "echo": self.echo,
            "total_seconds": self.total_seconds,
        }


# -- the server process -------------------------------------------------------------


@dataclass(slots=True)
class ServerProcess:
    pid: int
    port: int
    command: str


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process ``pid`` (all its threads); this process if None."""
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def server_process(data_dir: Path) -> AsyncIterator[ServerProcess]:
    """``strata start --role journal`` in a child; yields once it says it is ready."""
    cmd = [sys.executable, "-m", "tools.strata.cli", "start", "--role", "journal"]
    cmd += ["--data-dir", str(data_dir)]
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "STRATA_JOURNAL_HOST": "127.0.0.1",
            "STRATA_JOURNAL_PORT": "0",
            "STRATA_JOURNAL_FSYNC": "none",
            "STRATA_ADMIN_PORT": "0",
            "STRATA_MQTT_PORT": "0",
            "STRATA_MQTT_WS_PORT": "0",
            "STRATA_MQTT_TLS_PORT": "0",
            "STRATA_KAFKA_PORT": "0",
            "STRATA_AMQP_PORT": "0",
            "STRATA_META_PORT": "0",
        }
    )
    shown = (
        "STRATA_JOURNAL_PORT=0 STRATA_ADMIN_PORT=0 STRATA_JOURNAL_FSYNC=none "
        "python -m tools.strata.cli start --role journal --data-dir DIR"
    )
    output: list[str] = []
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        )
        assert proc.stdout is not None
        ready = trio.Event()
        port: list[int] = []

        async def drain() -> None:
            """Read the child's output to the end (so it never blocks on a full pipe)."""
            assert proc.stdout is not None
            pending = b""
            async for chunk in proc.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    output.append(line)
                    if "journal_rpc listening on " in line:
                        port.append(int(line.rsplit(":", 1)[1]))
                    if line.startswith("strata ") and "ready" in line:
                        ready.set()
            ready.set()  # it exited: the check below says so

        nursery.start_soon(drain)
        with trio.move_on_after(SERVER_START_TIMEOUT):
            await ready.wait()
        up = proc.returncode is None and bool(port) and ready.is_set()
        if not up:
            nursery.cancel_scope.cancel()  # run_process terminates the child
        else:
            try:
                yield ServerProcess(proc.pid, port[0], shown)
            finally:
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)  # a graceful stop: drain, fsync, close
                    with trio.move_on_after(SERVER_STOP_TIMEOUT):
                        await proc.wait()
                    nursery.cancel_scope.cancel()  # run_process kills it if it is still there
    if not up:
        raise RuntimeError(
            "the journal server process did not start:\n  " + "\n  ".join(output[-20:])
        )


# -- workloads ----------------------------------------------------------------------


def _small_record() -> list[Record]:
    return [Record(value=os.urandom(SMALL_BYTES))]


def _batch(record_bytes: int, count: int) -> tuple[list[Record], bytes]:
    value = os.urandom(record_bytes)
    records = [Record(value=value) for _ in range(count)]
    return records, encode_batch(records, now_ms=time.time_ns() // 1_000_000)


async def append_latency(
    svc: JournalService, name: str, seconds: float, samples: int
) -> tuple[dict[str, float], int]:
    records = _small_record()
    await svc.append(name, records)  # warm-up
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(lat) < samples and (len(lat) < 10 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        await svc.append(name, records)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"p50 µs": percentile(lat, 0.5) * 1e6, "p99 µs": percentile(lat, 0.99) * 1e6}, len(lat)


async def append_rate(
    op: Callable[[], Awaitable[object]],
    concurrency: int,
    batch_bytes: int,
    records_per_op: int,
    cfg: BenchConfig,
) -> tuple[dict[str, float], int]:
    """C tasks calling ``op`` until the time or bytes budget is spent."""
    await op()  # warm-up
    max_ops = max(1, cfg.max_bytes // batch_bytes)
    issued = 0
    deadline = time.perf_counter() + cfg.seconds

    async def appender() -> None:
        nonlocal issued
        while issued == 0 or (issued < max_ops and time.perf_counter() < deadline):
            issued += 1
            await op()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(appender)
    elapsed = time.perf_counter() - start
    return {
        "records/s": issued * records_per_op / elapsed,
        "MiB/s": issued * batch_bytes / MIB / elapsed,
    }, issued


async def fill(svc: JournalService, name: str, nbytes: int) -> None:
    """Untimed: about ``nbytes`` of 1 KiB x 64 batches, appended 16 at a time."""
    _, batch = _batch(BIG_RECORD_BYTES, SCAN_RECORDS)
    remaining = max(1, nbytes // len(batch))
    while remaining:
        n = min(16, remaining)
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(svc.append_batch, name, batch)
        remaining -= n


async def scan(svc: JournalService, name: str, seconds: float) -> tuple[dict[str, float], int]:
    end = (await svc.describe_stream(name)).next_offset
    calls = nbytes = 0
    offset = 0
    start = time.perf_counter()
    deadline = start + seconds
    while calls == 0 or offset != 0 or time.perf_counter() < deadline:
        batches = await svc.read_batches(name, offset, READ_MAX_BYTES)
        calls += 1
        nbytes += sum(len(b) for b in batches)
        offset = _next_offset(batches[-1])
        if offset >= end:
            offset = 0
    elapsed = time.perf_counter() - start
    return {"MiB/s": nbytes / MIB / elapsed}, calls


def _next_offset(batch: bytes) -> int:
    base = int.from_bytes(batch[0:8], "big", signed=True)
    last_delta = int.from_bytes(batch[23:27], "big", signed=True)
    return base + last_delta + 1


async def tail_latency(
    svc: JournalService, name: str, seconds: float, samples: int
) -> tuple[dict[str, float], int]:
    times = await time_tail(
        svc, name, _small_record()[0], samples=samples, warmup=TAIL_WARMUP, seconds=seconds
    )
    delivered = times.delivered()
    lat = sorted(times.woke[i] - times.sent[i] for i in delivered)
    missed = len(times.samples()) - len(delivered)
    if missed:
        print(f"tail: {missed} records never delivered", file=sys.stderr, flush=True)
    return {"p50 µs": percentile(lat, 0.5) * 1e6, "p99 µs": percentile(lat, 0.99) * 1e6}, len(lat)


async def round_trip(
    svc: JournalService, seconds: float, samples: int
) -> tuple[dict[str, float], int]:
    await svc.list_streams()
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(lat) < samples and (len(lat) < 10 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        await svc.list_streams()
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"p50 µs": percentile(lat, 0.5) * 1e6, "p99 µs": percentile(lat, 0.99) * 1e6}, len(lat)


async def echo_round_trip(port: int, seconds: float, samples: int) -> dict[str, float]:
    """A plain trio client: 64 bytes to an echo server and back, one after the other."""
    msg = b"x" * ECHO_BYTES
    lat: list[float] = []
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        for _ in range(10):  # warm-up
            await _echo_once(stream, msg)
        deadline = time.perf_counter() + seconds
        while len(lat) < samples and (len(lat) < 10 or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            await _echo_once(stream, msg)
            lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"p50 µs": percentile(lat, 0.5) * 1e6, "p99 µs": percentile(lat, 0.99) * 1e6}


async def _echo_once(stream: trio.SocketStream, msg: bytes) -> None:
    await stream.send_all(msg)
    got = 0
    while got < len(msg):
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError("the echo server closed the connection")
        got += len(data)


async def _echo(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def measure_echo(cfg: BenchConfig, report: Report) -> None:
    """The floor of any round trip: plain trio echo, server in this process and in a child."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        report.echo["same process"] = await echo_round_trip(
            port, cfg.latency_seconds, cfg.latency_samples
        )
        nursery.cancel_scope.cancel()
    if not cfg.server_process:
        return
    async with trio.open_nursery() as nursery:
        cmd = [sys.executable, "-c", ECHO_SERVER]
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        )
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(SERVER_START_TIMEOUT):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError("the echo server process did not start")
                line += chunk
        report.echo["child process"] = await echo_round_trip(
            int(line), cfg.latency_seconds, cfg.latency_samples
        )
        nursery.cancel_scope.cancel()  # run_process terminates the child


# -- cases --------------------------------------------------------------------------

Workload = Callable[[JournalService, str], Awaitable[tuple[dict[str, float], int]]]
LATENCY: tuple[tuple[str, str], ...] = (("p50 µs", ",.1f"), ("p99 µs", ",.1f"))
RATE: tuple[tuple[str, str], ...] = (("records/s", ",.0f"), ("MiB/s", ",.1f"))


@dataclass(frozen=True, slots=True)
class Case:
    title: str
    metrics: tuple[tuple[str, str], ...]
    fsync: FsyncPolicy
    work: Workload
    setup: Callable[[JournalService, str], Awaitable[None]] | None = None
    prime_bytes: int = 0  # settle() the page cache for a write case


def cases(cfg: BenchConfig) -> list[Case]:
    small, small_batch = _batch(SMALL_BYTES, BATCH_RECORDS)
    _, big_batch = _batch(BIG_RECORD_BYTES, BIG_BATCH_RECORDS)
    lat_s, lat_n = cfg.latency_seconds, cfg.latency_samples

    def records_op(c: int) -> Workload:
        async def work(svc: JournalService, name: str) -> tuple[dict[str, float], int]:
            op = partial(svc.append, name, small)
            return await append_rate(op, c, len(small_batch), BATCH_RECORDS, cfg)

        return work

    def batch_op(batch: bytes, records: int, c: int) -> Workload:
        async def work(svc: JournalService, name: str) -> tuple[dict[str, float], int]:
            op = partial(svc.append_batch, name, batch)
            return await append_rate(op, c, len(batch), records, cfg)

        return work

    async def fill_scan(svc: JournalService, name: str) -> None:
        await fill(svc, name, cfg.scan_bytes)

    prime = cfg.max_bytes + 2 * len(big_batch)
    return [
        Case(
            "1. append 100 B x1, sequential",
            LATENCY,
            "none",
            lambda svc, name: append_latency(svc, name, lat_s, lat_n),
        ),
        Case(
            "1. append 100 B x1, sequential",
            LATENCY,
            "always",
            lambda svc, name: append_latency(svc, name, 1.5 * lat_s, cfg.always_samples),
        ),
        Case("2. append 100 B x100, C=1", RATE, "none", records_op(1), prime_bytes=prime),
        Case("2. append 100 B x100, C=16", RATE, "none", records_op(16), prime_bytes=prime),
        Case(
            "2. append_batch 100 B x100, C=16",
            RATE,
            "none",
            batch_op(small_batch, BATCH_RECORDS, 16),
            prime_bytes=prime,
        ),
        Case(
            "3. append_batch 1 KiB x1000 (1 MiB), C=1",
            (("MiB/s", ",.1f"),),
            "none",
            batch_op(big_batch, BIG_BATCH_RECORDS, 1),
            prime_bytes=prime,
        ),
        Case(
            f"4. read_batches scan {cfg.scan_bytes // MIB} MiB, 1 MiB reads",
            (("MiB/s", ",.1f"),),
            "none",
            lambda svc, name: scan(svc, name, cfg.seconds),
            setup=fill_scan,
        ),
        Case(
            "5. tail: append call to tail delivery",
            LATENCY,
            "none",
            lambda svc, name: tail_latency(svc, name, lat_s, lat_n),
        ),
        Case(
            "6. list_streams round trip",
            LATENCY,
            "none",
            lambda svc, name: round_trip(svc, lat_s, lat_n),
        ),
    ]


# -- the run ------------------------------------------------------------------------


async def run(root: Path, cfg: BenchConfig, report: Report) -> None:
    """Every case on every target, in order, appending results to ``report``."""

    def progress(message: str) -> None:
        if not cfg.quick:
            print(message, file=sys.stderr, flush=True)

    await measure_echo(cfg, report)
    progress(
        "echo 64 B round trip: "
        + ", ".join(f"{k} p50 {v['p50 µs']:.1f} µs" for k, v in report.echo.items())
    )
    async with Journal.open(root / "local", fsync="none") as journal, trio.open_nursery() as n:
        server = JournalServer(journal)
        port = await n.start(server.serve, "127.0.0.1", 0)
        async with RemoteJournal.connect(("127.0.0.1", port), name="bench") as remote:
            targets: list[tuple[str, JournalService, int | None]] = [
                ("in-process", journal, None),
                ("remote", remote, None),
            ]
            if cfg.server_process:
                async with (
                    server_process(root / "server") as proc,
                    RemoteJournal.connect(("127.0.0.1", proc.port), name="bench") as far,
                ):
                    report.server_command = proc.command
                    targets.append(("remote-proc", far, proc.pid))
                    await _run_cases(root, cfg, report, targets, progress)
            else:
                await _run_cases(root, cfg, report, targets, progress)
        await server.shutdown(grace=1.0)
        n.cancel_scope.cancel()


async def _run_cases(
    root: Path,
    cfg: BenchConfig,
    report: Report,
    targets: list[tuple[str, JournalService, int | None]],
    progress: Callable[[str], None],
) -> None:
    for i, case in enumerate(cases(cfg)):
        result = CaseResult(f"{case.title}, fsync {case.fsync}", case.metrics)
        report.cases.append(result)
        for target, svc, pid in targets:
            name = f"case{i}-{target}"
            await svc.create_stream(name, StreamConfig(fsync=case.fsync))
            try:
                if case.setup is not None:
                    await case.setup(svc, name)
                settle(root, case.prime_bytes)
                cpu0, server0 = _cpu_seconds(None), _cpu_seconds(pid)
                t0 = time.perf_counter()
                values, ops = await case.work(svc, name)
                elapsed = time.perf_counter() - t0
                cpu1, server1 = _cpu_seconds(None), _cpu_seconds(pid)
            finally:
                await svc.delete_stream(name)
            m = Measured(target, values, ops, elapsed, cpu1 - cpu0)
            if pid is not None:
                m.cpu_server_s = server1 - server0
            result.targets[target] = m
            shown = ", ".join(
                f"{k} {format(v, spec)}" for k, spec in case.metrics for v in [values[k]]
            )
            progress(f"{result.case:<58} {target:<12} {shown} ({elapsed:.2f} s, {ops:,} ops)")


# -- the report ---------------------------------------------------------------------


def format_report(report: Report) -> str:
    m, s = report.machine, report.settings
    procs = [t for t in TARGETS if any(t in c.targets for c in report.cases)]
    lines = [
        "StrataMQ journal RPC benchmark: in-process Journal vs RemoteJournal over loopback TCP",
        f"machine: nproc {m['nproc']}, CPU {m['cpu_model']}, {m['python']}, trio {m['trio']}, "
        f"{m['kernel']}",
        f"storage: {m['filesystem']}",
        f"settings: {s['seconds']:g} s per rate case, latency cases {s['latency_seconds']:g} s"
        f" or {s['latency_samples']:,} samples, {s['max_bytes'] // MIB} MiB per write case"
        + (" [quick]" if s["quick"] else ""),
        "targets: in-process = Journal; remote = RemoteJournal -> JournalServer in this "
        "process (one trio loop); remote-proc = RemoteJournal -> `strata start --role "
        "journal` in a child process",
        "ratio = remote / in-process of the same figure in this run (latency: > 1 is "
        "slower; rates: < 1 is slower); MiB/s of encoded batch bytes",
        "",
    ]
    cols: list[tuple[str, int]] = [("case", -53), ("figure", -10), ("in-process", 11)]
    for t in procs[1:]:
        cols += [(t, 11), ("ratio", 6)]
    rows = []
    for c in report.cases:
        for metric, spec in c.metrics:
            row = [c.case, metric, fmt(c.value("in-process", metric), spec)]
            for t in procs[1:]:
                row += [fmt(c.value(t, metric), spec), fmt(c.ratio(t, metric), ".2f")]
            rows.append(row)
    lines += table(cols, rows)

    lines += ["", "CPU time per operation, µs (this process; server process for remote-proc)"]
    cpu_cols: list[tuple[str, int]] = [("case", -53), ("in-process", 11)]
    if "remote" in procs:
        cpu_cols.append(("remote", 9))
    if "remote-proc" in procs:
        cpu_cols += [("remote-proc client", 19), ("server", 8), ("ops", 9)]
    cpu_rows = []
    for c in report.cases:
        row = [c.case, fmt(_us(c, "in-process"), ",.1f")]
        if "remote" in procs:
            row.append(fmt(_us(c, "remote"), ",.1f"))
        if "remote-proc" in procs:
            far = c.targets.get("remote-proc")
            row += [
                fmt(far.client_us_per_op if far else math.nan, ",.1f"),
                fmt(far.server_us_per_op if far else math.nan, ",.1f"),
                f"{far.ops:,}" if far else "-",
            ]
        cpu_rows.append(row)
    lines += table(cpu_cols, cpu_rows)
    lines.append(
        "  (op = one request: an append, a 1 MiB read, a list_streams; for the tail, one "
        f"append and its delivery; design brief: trio round trip ~{DESIGN_ROUND_TRIP_US:g} µs)"
    )
    if report.echo:
        lines.append(
            "  floor: plain trio 64 B echo round trip over loopback, p50 / p99 µs: "
            + "; ".join(
                f"server in {k} {v['p50 µs']:.1f} / {v['p99 µs']:.1f}"
                for k, v in report.echo.items()
            )
        )
    if report.server_command:
        lines.append(f"server process: {report.server_command}")
    lines.append("reproduce: .venv/bin/python -m tools.bench rpc" + (" --quick" * s["quick"]))
    lines.append(f"\ntotal run time {report.total_seconds:.1f} s")
    return "\n".join(lines)


def _us(c: CaseResult, target: str) -> float:
    m = c.targets.get(target)
    return m.client_us_per_op if m else math.nan


def main(
    *,
    quick: bool = False,
    directory: Path | None = None,
    server_process: bool = True,
    json_path: Path | None = None,
) -> int:
    cfg = BenchConfig.make(quick=quick, server_process=server_process)
    root = bench_root(directory, ".bench-rpc-")
    settings = asdict(cfg)
    settings["directory"] = str(root)
    report = Report(machine=machine_info(root), settings=settings)
    announce("journal RPC benchmark", report.machine, root)
    started = time.perf_counter()
    try:
        trio.run(run, root, cfg, report)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.total_seconds = time.perf_counter() - started
    publish_report(format_report(report), report.to_json(), json_path)
    return 0

"""MQTT benchmark: StrataMQ's MQTT front end against Mosquitto, same load, same machine.

Run it as ``python -m tools.bench mqtt`` (``--quick`` for a run under 45 s,
``--json FILE`` to keep the numbers, ``--target mosquitto|strata|both``,
``--strata-command CMD`` to start strata another way). About 40 s in full
against one broker, 11 s with ``--quick``; a broker that never answers costs
the 10 s start timeout.

Brokers
-------

Each target is a broker the benchmark starts itself on a free port of
127.0.0.1 and stops (SIGTERM, then SIGKILL) in ``finally``:

* **mosquitto**: ``mosquitto -c <generated conf>`` (one listener on
  127.0.0.1, anonymous, persistence on into the run's temporary directory,
  unbounded queues, log to a file);
* **strata**: ``python -m tools.strata.cli start --data-dir <tmp>`` with
  ``STRATA_MQTT_PORT=<port>`` and every other ``STRATA_*_PORT=0``.

A broker is up when its port answers an MQTT CONNECT with an accepting
CONNACK. One that does not within ``START_TIMEOUT`` (or exits) is reported as
unavailable and skipped; the other target still runs.

Load
----

Clients run in a ``multiprocessing`` pool (spawn) so they use every core:
publishers are paho-mqtt clients paced per millisecond; subscribers are a
minimal MQTT 3.1.1 client on a raw socket that parses whole receive buffers
(see ``tools/bench/mqttload.py``). Every publisher stops at its message count
or its deadline; every subscriber at its deadline, or once it has every
message the publishers say they sent, or after a quiet 0.25 s once they are
done. Topics carry a prefix unique to the run. Payloads are 256 B and start
with ``time.time_ns()``, so latency is end to end (publish call to the
subscriber's receive buffer) on one clock.

Scenarios
---------

1. QoS 0 fan-in: 4 publishers -> 1 subscriber on ``<prefix>/fanin/+``, at
   20,000 msg/s in total.
2. QoS 1 fan-in: the same with QoS 1 publishes (paho's in-flight window of
   20) and a QoS 1 subscription, at 10,000 msg/s.
3. QoS 0 fan-out: 1 publisher at 2,500 msg/s -> 8 subscribers.
4. Offered-rate sweep of scenario 1 (5k, 10k, 20k, 40k, 60k, 80k msg/s; 10k,
   40k, 80k with ``--quick``): the highest total rate delivered with no loss
   and p99 under 50 ms.
5. End-to-end latency at 1,000 msg/s, QoS 1, 1 publisher -> 1 subscriber.
6. Broker CPU seconds per 100,000 delivered messages, for every scenario
   (utime + stime of the broker from ``/proc/PID/stat``, 10 ms ticks).
7. Memory per idle connection: N raw connections (CONNECT, CONNACK, then
   nothing) held by 4 processes; (VmRSS after - before) / N. It runs first,
   on a fresh broker.
8. The load tool's ceiling: the publishers' own send rate at the sweep's top
   step. Where it is below the offered rate the client, not the broker, set
   the figure.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.common import announce, fmt, machine_info, percentile, publish_report, table
from tools.bench.mqttload import (
    IdleResult,
    PubResult,
    SubResult,
    hold_idle,
    mqtt_probe,
    publish,
    subscribe,
)

__all__ = ["BenchConfig", "Report", "main"]

TARGETS = ("mosquitto", "strata")
HOST = "127.0.0.1"
MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
SETUP_TIMEOUT = 15.0  # subscribers connected and subscribed
PAYLOAD_BYTES = 256
INFLIGHT = 20  # paho's default in-flight window for QoS 1
CLEAN_P99_MS = 50.0
IDLE_WORKERS = 4
POOL_SIZE = 9  # 8 subscribers + 1 publisher of the fan-out
DEFAULT_STRATA = "{python} -m tools.strata.cli start --data-dir {data_dir}"


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchConfig:
    seconds: float = 3.0  # publishing time of scenarios 1-3 and 5
    sweep_seconds: float = 2.0
    fanin_rate: float = 20_000.0  # total offered msg/s, scenario 1
    qos1_rate: float = 10_000.0  # scenario 2
    fanout_rate: float = 2_500.0  # published msg/s, scenario 3 (x8 deliveries)
    sweep_rates: tuple[float, ...] = (5_000.0, 10_000.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0)
    latency_rate: float = 1_000.0
    idle_connections: int = 5_000
    quick: bool = False

    @classmethod
    def make(cls, *, quick: bool) -> BenchConfig:
        if quick:
            return cls(
                seconds=1.0,
                sweep_seconds=1.0,
                sweep_rates=(10_000.0, 40_000.0, 80_000.0),
                idle_connections=500,
                quick=True,
            )
        return cls()


# -- results ------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One publish/subscribe run against one broker."""

    offered: float  # total msg/s asked of the publishers
    sent: int
    sent_per_s: float  # the publishers' own achieved rate, summed
    expected: int  # deliveries expected: sent x subscribers
    delivered: int  # unique deliveries
    duplicates: int
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    broker_cpu_s: float
    seconds: float  # wall time from the first publish to the last delivery
    publishers_cpu_s: float = math.nan
    subscribers_cpu_s: float = math.nan
    late_subscribers: int = 0
    unacked: int = 0

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.expected if self.expected else math.nan

    @property
    def clean(self) -> bool:
        return self.expected > 0 and self.delivered == self.expected and self.p99_ms < CLEAN_P99_MS

    @property
    def cpu_per_100k(self) -> float:
        return self.broker_cpu_s / self.delivered * 1e5 if self.delivered else math.nan

    @property
    def broker_cores(self) -> float:
        return self.broker_cpu_s / self.seconds if self.seconds > 0 else math.nan


@dataclass(slots=True)
class TargetResult:
    target: str
    available: bool
    reason: str = ""
    command: str = ""
    runs: dict[str, Run] = field(default_factory=dict)
    sweep: list[Run] = field(default_factory=list)
    idle_opened: int = 0
    idle_rss_kib: tuple[int, int] = (0, 0)
    idle_error: str = ""
    failed: str = ""  # why the scenarios stopped early, if they did

    @property
    def idle_kib_per_conn(self) -> float:
        before, after = self.idle_rss_kib
        return (after - before) / self.idle_opened if self.idle_opened else math.nan

    def top_clean(self) -> Run | None:
        clean = [r for r in self.sweep if r.clean]
        return max(clean, key=lambda r: r.offered) if clean else None


@dataclass(slots=True)
class Report:
    machine: dict[str, str | int]
    settings: dict[str, Any]
    targets: dict[str, TargetResult] = field(default_factory=dict)
    total_seconds: float = 0.0
    reproduce: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "machine": self.machine,
            "settings": self.settings,
            "total_seconds": self.total_seconds,
            "reproduce": self.reproduce,
            "targets": {},
        }
        for name, t in self.targets.items():
            d = {
                "available": t.available,
                "reason": t.reason,
                "command": t.command,
                "idle_opened": t.idle_opened,
                "idle_rss_kib": t.idle_rss_kib,
                "idle_kib_per_conn": t.idle_kib_per_conn,
                "idle_error": t.idle_error,
                "failed": t.failed,
                "runs": {k: _run_json(r) for k, r in t.runs.items()},
                "sweep": [_run_json(r) for r in t.sweep],
            }
            out["targets"][name] = d
        return out


def _run_json(r: Run) -> dict[str, Any]:
    d = asdict(r)
    d.update(loss=r.loss, clean=r.clean, cpu_per_100k=r.cpu_per_100k, broker_cores=r.broker_cores)
    return d


# -- brokers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broker:
    pid: int
    port: int
    command: str


class BrokerUnavailable(Exception):
    """The broker did not start, or its port never answered an MQTT CONNECT."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (a broker started through a wrapper counts whole)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children", encoding="ascii") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` and its descendants, from /proc/PID/stat."""
    total = 0
    for p in _family(pid):
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    """VmRSS of process ``pid`` and its descendants, from /proc/PID/status."""
    total = 0
    for p in _family(pid):
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total


def mosquitto_command(root: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    conf = root / "mosquitto.conf"
    persist = root / "mosquitto-data"
    persist.mkdir()
    conf.write_text(
        f"listener {port} {HOST}\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {persist}/\n"
        "max_queued_messages 10000000\n"
        "max_queued_bytes 0\n"
        "set_tcp_nodelay true\n"  # as trio's sockets, and every load-tool socket, have
        "log_dest file " + str(root / "mosquitto.log") + "\n"
        "log_type error\nlog_type warning\n"
    )
    cmd = [MOSQUITTO, "-c", str(conf)]
    shown = f"{MOSQUITTO} -c CONF (listener PORT 127.0.0.1, persistence true, set_tcp_nodelay true)"
    return cmd, dict(os.environ), shown


def strata_command(root: Path, port: int, template: str) -> tuple[list[str], dict[str, str], str]:
    data_dir = root / "strata-data"
    cmd = shlex.split(template.format(python=sys.executable, data_dir=data_dir, port=port))
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "STRATA_MQTT_HOST": HOST,
            "STRATA_MQTT_PORT": str(port),
            "STRATA_MQTT_WS_PORT": "0",
            "STRATA_MQTT_TLS_PORT": "0",
            "STRATA_JOURNAL_PORT": "0",
            "STRATA_ADMIN_PORT": "0",
            "STRATA_KAFKA_PORT": "0",
            "STRATA_AMQP_PORT": "0",
            "STRATA_META_PORT": "0",
        }
    )
    shown = "STRATA_MQTT_PORT=PORT (other STRATA_*_PORT=0) " + template.format(
        python="python", data_dir="DIR", port="PORT"
    )
    return cmd, env, shown


@contextmanager
def broker(target: str, root: Path, strata_template: str) -> Iterator[Broker]:
    """Start ``target`` on a free port; yield once it answers MQTT; always stop it."""
    port = free_port()
    root.mkdir(parents=True)
    if target == "mosquitto":
        if not os.access(MOSQUITTO, os.X_OK):
            raise BrokerUnavailable(f"{MOSQUITTO} is not installed")
        cmd, env, shown = mosquitto_command(root, port)
    else:
        cmd, env, shown = strata_command(root, port, strata_template)
    log_path = root / "broker.out"
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        except OSError as exc:
            raise BrokerUnavailable(f"{shown}: {exc}") from exc
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not mqtt_probe(HOST, port, timeout=1.0):
            if proc.poll() is not None:
                raise BrokerUnavailable(
                    f"exited with status {proc.returncode} before answering MQTT on port "
                    f"{port}: {_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"port {port} did not answer an MQTT CONNECT within {START_TIMEOUT:g} s "
                    f"(no MQTT listener yet?) {_tail(log_path, 1)}"
                )
            time.sleep(0.1)
        yield Broker(proc.pid, port, shown)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return ("| " + " | ".join(text[-lines:])) if text else ""


# -- scenarios ----------------------------------------------------------------------


class Scenarios:
    """The scenarios against one broker, sharing one worker pool and one run prefix."""

    def __init__(self, pool: multiprocessing.pool.Pool, b: Broker, work: Path, prefix: str) -> None:
        self.pool = pool
        self.broker = b
        self.work = work
        self.prefix = prefix
        self.tag = uuid.uuid4().hex[:8]  # in client ids: unique per run and broker
        self.counter = 0

    def _files(self, key: str) -> Path:
        self.counter += 1
        d = self.work / f"{self.counter:02d}-{key}"
        d.mkdir(parents=True)
        return d

    def pubsub(
        self,
        key: str,
        *,
        qos: int,
        publishers: int,
        subscribers: int,
        rate: float,
        seconds: float,
    ) -> Run:
        """``publishers`` paced at ``rate`` msg/s in total, to ``subscribers`` each."""
        files = self._files(key)
        base = f"{self.prefix}/{key}"
        fan_in = publishers > 1
        topics = [f"{base}/fanin/{i}" for i in range(publishers)] if fan_in else [f"{base}/t"]
        sub_topic = f"{base}/fanin/+" if fan_in else topics[0]
        per_pub_rate = rate / publishers
        per_pub = max(1, math.ceil(per_pub_rate * seconds))
        grace = 2.0 if qos else 1.0
        setup_end = time.time() + SETUP_TIMEOUT
        sub_deadline = setup_end + seconds + grace + 1.0
        done_file = files / "done"
        subs = [
            self.pool.apply_async(
                subscribe,
                (
                    HOST,
                    self.broker.port,
                    f"{key}-sub-{j}-{self.tag}",
                    sub_topic,
                    qos,
                    publishers,
                    per_pub,
                    str(files / f"ready-{j}"),
                    str(done_file),
                    setup_end,
                    sub_deadline,
                ),
            )
            for j in range(subscribers)
        ]
        while not all((files / f"ready-{j}").exists() for j in range(subscribers)):
            for s in subs:
                if s.ready() and not s.successful():
                    s.get()  # raises the subscriber's error
            if time.time() > setup_end:
                raise TimeoutError(f"{key}: subscribers not subscribed in {SETUP_TIMEOUT:g} s")
            time.sleep(0.01)
        start_at = time.time() + 0.2  # every publisher connected by then
        stop_at = start_at + seconds
        cpu0 = proc_cpu_seconds(self.broker.pid)
        pubs = [
            self.pool.apply_async(
                publish,
                (
                    HOST,
                    self.broker.port,
                    f"{key}-pub-{i}-{self.tag}",
                    topics[i if fan_in else 0],
                    qos,
                    i,
                    per_pub_rate,
                    per_pub,
                    PAYLOAD_BYTES,
                    start_at,
                    stop_at,
                    INFLIGHT,
                ),
            )
            for i in range(publishers)
        ]
        pub_results: list[PubResult] = [p.get(timeout=seconds + SETUP_TIMEOUT) for p in pubs]
        tmp = files / "done.tmp"
        tmp.write_text(",".join(str(p.sent) for p in pub_results))
        tmp.rename(done_file)  # subscribers see it whole
        sub_results: list[SubResult] = [
            s.get(timeout=max(1.0, sub_deadline - time.time() + 5.0)) for s in subs
        ]
        cpu1 = proc_cpu_seconds(self.broker.pid)
        return _summarise(rate, start_at, pub_results, sub_results, cpu1 - cpu0)

    def idle(self, count: int) -> tuple[int, tuple[int, int], str]:
        """(connections opened, (RSS before, RSS with them open) in KiB, error)."""
        files = self._files("idle")
        release = files / "release"
        per = [count // IDLE_WORKERS + (i < count % IDLE_WORKERS) for i in range(IDLE_WORKERS)]
        deadline = time.time() + 60.0
        before = proc_rss_kib(self.broker.pid)
        jobs = [
            self.pool.apply_async(
                hold_idle,
                (
                    HOST,
                    self.broker.port,
                    n,
                    i,
                    str(files / f"ready-{i}"),
                    str(release),
                    deadline,
                ),
            )
            for i, n in enumerate(per)
        ]
        try:
            while not all((files / f"ready-{i}").exists() for i in range(IDLE_WORKERS)):
                for j in jobs:
                    if j.ready() and not j.successful():
                        j.get()
                if time.time() > deadline:
                    raise TimeoutError("idle connections not all opened in time")
                time.sleep(0.02)
            time.sleep(0.5)  # let the broker finish handling the last CONNECTs
            after = proc_rss_kib(self.broker.pid)
        finally:
            release.write_text("go")
        results: list[IdleResult] = [j.get(timeout=30) for j in jobs]
        errors = "; ".join(sorted({r.error for r in results if r.error}))
        return sum(r.opened for r in results), (before, after), errors


def _summarise(
    offered: float,
    start_at: float,
    pubs: list[PubResult],
    subs: list[SubResult],
    broker_cpu_s: float,
) -> Run:
    sent = sum(p.sent for p in pubs)
    lat = array("q")
    for s in subs:
        lat.frombytes(s.latencies_us)
    ordered = sorted(lat)
    delivered = sum(s.unique for s in subs)
    lasts = [s.last_s for s in subs if not math.isnan(s.last_s)]
    end = max(lasts) if lasts else start_at
    pub_span = max(p.seconds for p in pubs)
    seconds = max(end - start_at, pub_span, 1e-9)
    return Run(
        offered=offered,
        sent=sent,
        sent_per_s=sum(p.sent / p.seconds for p in pubs),
        expected=sent * len(subs),
        delivered=delivered,
        duplicates=sum(s.received - s.unique for s in subs),
        delivered_per_s=delivered / seconds,
        p50_ms=percentile(ordered, 0.5) / 1e3,
        p99_ms=percentile(ordered, 0.99) / 1e3,
        broker_cpu_s=broker_cpu_s,
        seconds=seconds,
        publishers_cpu_s=sum(p.cpu_s for p in pubs),
        subscribers_cpu_s=sum(s.cpu_s for s in subs),
        late_subscribers=sum(not s.subscribed_in_time for s in subs),
        unacked=sum(p.unacked for p in pubs),
    )


def run_target(
    target: str,
    pool: multiprocessing.pool.Pool,
    root: Path,
    cfg: BenchConfig,
    strata_template: str,
    prefix: str,
) -> TargetResult:
    def progress(message: str) -> None:
        print(f"  {target}: {message}", file=sys.stderr, flush=True)

    result = TargetResult(target, available=False)
    try:
        with broker(target, root / target, strata_template) as b:
            result.available = True
            result.command = b.command
            progress(f"up on port {b.port} (pid {b.pid})")
            sc = Scenarios(pool, b, root / target / "runs", f"{prefix}/{target}")
            try:
                _scenarios(sc, cfg, result, progress)
            except Exception as exc:  # the broker died, refused, or a worker failed
                result.failed = f"{type(exc).__name__}: {exc}"
                progress(f"stopped: {result.failed}")
    except BrokerUnavailable as exc:
        result.reason = str(exc)
    return result


def _scenarios(
    sc: Scenarios, cfg: BenchConfig, result: TargetResult, progress: Callable[[str], None]
) -> None:
    """Every scenario in turn against the broker of ``sc``, results into ``result``."""
    opened, rss, err = sc.idle(cfg.idle_connections)
    result.idle_opened, result.idle_rss_kib, result.idle_error = opened, rss, err
    progress(
        f"7. {opened:,} idle connections: RSS {rss[0]:,} -> {rss[1]:,} KiB, "
        f"{result.idle_kib_per_conn:.2f} KiB each" + (f" ({err})" if err else "")
    )
    plan = (  # key, title, QoS, publishers, subscribers, total offered msg/s
        ("fanin-q0", "1. QoS 0 fan-in", 0, 4, 1, cfg.fanin_rate),
        ("fanin-q1", "2. QoS 1 fan-in", 1, 4, 1, cfg.qos1_rate),
        ("fanout-q0", "3. QoS 0 fan-out", 0, 1, 8, cfg.fanout_rate),
        ("latency-q1", "5. QoS 1 latency", 1, 1, 1, cfg.latency_rate),
    )
    for key, title, qos, pubs, subs, rate in plan:
        run = sc.pubsub(
            key, qos=qos, publishers=pubs, subscribers=subs, rate=rate, seconds=cfg.seconds
        )
        result.runs[key] = run
        progress(f"{title}: {_line(run)}")
    for rate in cfg.sweep_rates:
        run = sc.pubsub(
            f"sweep-{int(rate)}",
            qos=0,
            publishers=4,
            subscribers=1,
            rate=rate,
            seconds=cfg.sweep_seconds,
        )
        result.sweep.append(run)
        progress(f"4. sweep {rate:,.0f} msg/s: {_line(run)}")


def _line(r: Run) -> str:
    return (
        f"offered {r.offered:,.0f}, sent {r.sent_per_s:,.0f}/s, delivered "
        f"{r.delivered_per_s:,.0f}/s, loss {r.loss:.2%}, p50 {r.p50_ms:.2f} ms, "
        f"p99 {r.p99_ms:.2f} ms, broker {r.broker_cores:.2f} cores, "
        f"{r.cpu_per_100k:.2f} CPU s/100k, publishers {r.publishers_cpu_s / r.seconds:.2f} "
        f"cores, subscribers {r.subscribers_cpu_s / r.seconds:.2f} cores"
        + (f", dup {r.duplicates}" if r.duplicates else "")
        + (f", unacked {r.unacked}" if r.unacked else "")
        + (f", {r.late_subscribers} late subscribers" if r.late_subscribers else "")
    )


# -- the report ---------------------------------------------------------------------


def _rows(report: Report) -> list[tuple[str, str, str, dict[str, float]]]:
    """(scenario, figure, format, value per target) in display order."""
    cfg = report.settings
    rows: list[tuple[str, str, str, dict[str, float]]] = []
    live = {n: t for n, t in report.targets.items() if t.available}

    def add(scenario: str, figure: str, spec: str, get: Any) -> None:
        def value(t: TargetResult) -> float:
            try:
                return float(get(t))
            except (KeyError, IndexError, ZeroDivisionError, AttributeError):
                return math.nan  # the scenario did not run (the target failed before it)

        rows.append((scenario, figure, spec, {n: value(t) for n, t in live.items()}))

    def run_rows(key: str, scenario: str, latency_only: bool = False) -> None:
        def r(t: TargetResult) -> Run:
            return t.runs[key]

        if not latency_only:
            add(scenario, "delivered msg/s", ",.0f", lambda t: r(t).delivered_per_s)
            add("", "loss %", ".2f", lambda t: r(t).loss * 100)
        add(scenario if latency_only else "", "p50 ms", ".2f", lambda t: r(t).p50_ms)
        add("", "p99 ms", ".2f", lambda t: r(t).p99_ms)
        add("", "broker CPU s / 100k msgs", ".2f", lambda t: r(t).cpu_per_100k)
        add("", "broker cores", ".2f", lambda t: r(t).broker_cores)

    run_rows("fanin-q0", f"1. QoS 0 fan-in 4→1, offered {cfg['fanin_rate']:,.0f}/s")
    run_rows("fanin-q1", f"2. QoS 1 fan-in 4→1, offered {cfg['qos1_rate']:,.0f}/s")
    run_rows(
        "fanout-q0",
        f"3. QoS 0 fan-out 1→8, {cfg['fanout_rate']:,.0f}/s published",
    )

    def top(t: TargetResult) -> Run | None:
        return t.top_clean()

    add(
        "4. QoS 0 fan-in sweep: top clean rate",
        "offered msg/s",
        ",.0f",
        lambda t: top(t).offered if top(t) else math.nan,  # type: ignore[union-attr]
    )
    add("", "p99 ms there", ".2f", lambda t: top(t).p99_ms if top(t) else math.nan)  # type: ignore[union-attr]
    add("", "broker cores there", ".2f", lambda t: top(t).broker_cores if top(t) else math.nan)  # type: ignore[union-attr]
    add(
        "",
        "broker CPU s / 100k msgs there",
        ".2f",
        lambda t: top(t).cpu_per_100k if top(t) else math.nan,  # type: ignore[union-attr]
    )
    run_rows("latency-q1", f"5. QoS 1 latency 1→1 at {cfg['latency_rate']:,.0f}/s", True)
    add(
        f"7. idle connections ({cfg['idle_connections']:,})",
        "KiB per connection",
        ".2f",
        lambda t: t.idle_kib_per_conn,
    )
    top_rate = cfg["sweep_rates"][-1]
    add(
        f"8. load tool ceiling ({top_rate:,.0f}/s offered)",
        "publishers sent msg/s",
        ",.0f",
        lambda t: t.sweep[-1].sent_per_s,
    )
    add("", "delivered msg/s", ",.0f", lambda t: t.sweep[-1].delivered_per_s)
    add(
        "",
        "publishers CPU µs / msg",
        ".1f",
        lambda t: t.sweep[-1].publishers_cpu_s / t.sweep[-1].sent * 1e6,
    )
    add("", "broker cores there", ".2f", lambda t: t.sweep[-1].broker_cores)
    return rows


def format_report(report: Report) -> str:
    m = report.machine
    lines = [
        "StrataMQ MQTT benchmark: the same load against Mosquitto and StrataMQ's MQTT front end",
        f"machine: nproc {m['nproc']}, CPU {m['cpu_model']}, {m['python']}, {m['kernel']}",
        f"load: {PAYLOAD_BYTES} B payloads, paho-mqtt publishers paced per ms, raw-socket "
        "subscribers, spawn pool of "
        f"{POOL_SIZE} processes; ratio = strata / mosquitto"
        + (" [quick]" if report.settings["quick"] else ""),
        "",
    ]
    for name in TARGETS:
        t = report.targets.get(name)
        if t is None:
            continue
        if t.available:
            lines.append(f"{name}: {t.command}")
            if t.failed:
                lines.append(f"{name}: FAILED part-way, later figures missing ({t.failed})")
        else:
            lines.append(f"{name}: unavailable, skipped ({t.reason})")
    lines.append("")
    cols: list[tuple[str, int]] = [
        ("scenario", -52),
        ("figure", -30),
        ("mosquitto", 10),
        ("strata", 10),
        ("ratio", 6),
    ]
    rows = []
    for scenario, figure, spec, values in _rows(report):
        mq = values.get("mosquitto", math.nan)
        st = values.get("strata", math.nan)
        ratio = st / mq if mq and not math.isnan(st) else math.nan
        rows.append([scenario, figure, fmt(mq, spec), fmt(st, spec), fmt(ratio, ".2f")])
    lines += table(cols, rows)

    lines += ["", "4. sweep steps (QoS 0 fan-in 4→1): offered / sent / delivered msg/s, loss, p99"]
    for name, t in report.targets.items():
        for r in t.sweep:
            lines.append(
                f"  {name:<9} {r.offered:>8,.0f} {r.sent_per_s:>8,.0f} "
                f"{r.delivered_per_s:>8,.0f}  loss {r.loss:6.2%}  p99 {r.p99_ms:8.2f} ms  "
                f"cores: broker {r.broker_cores:.2f}, publishers "
                f"{r.publishers_cpu_s / r.seconds:.2f}, subscriber "
                f"{r.subscribers_cpu_s / r.seconds:.2f}" + ("  clean" if r.clean else "")
            )
    lines.append(f"reproduce: {report.reproduce}")
    lines.append(f"\ntotal run time {report.total_seconds:.1f} s")
    return "\n".join(lines)


def main(
    *,
    quick: bool = False,
    target: str = "both",
    strata_command: str | None = None,
    json_path: Path | None = None,
) -> int:
    cfg = BenchConfig.make(quick=quick)
    template = strata_command or DEFAULT_STRATA
    root = Path(tempfile.mkdtemp(prefix="strata-bench-mqtt-"))
    settings = asdict(cfg)
    settings.update(target=target, strata_command=template, directory=str(root))
    report = Report(machine=machine_info(root), settings=settings)
    args = ["--quick"] * quick + (["--target", target] if target != "both" else [])
    if strata_command:
        args += ["--strata-command", shlex.quote(strata_command)]
    report.reproduce = " ".join([".venv/bin/python -m tools.bench mqtt", *args])
    announce("MQTT benchmark", report.machine, root)
    prefix = f"strata-bench/{uuid.uuid4().hex}"
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(POOL_SIZE, initializer=_warm)
    try:
        for name in TARGETS if target == "both" else (target,):
            result = run_target(name, pool, root, cfg, template, prefix)
            report.targets[name] = result
            if not result.available:
                print(f"  {name}: unavailable, skipped: {result.reason}", file=sys.stderr)
    finally:
        pool.terminate()
        pool.join()
        shutil.rmtree(root, ignore_errors=True)
    report.total_seconds = time.perf_counter() - started
    publish_report(format_report(report), report.to_json(), json_path)
    return 0 if any(t.available for t in report.targets.values()) else 1


def _warm() -> None:
    """Pool initializer: import paho once per worker, not in the first timed publish."""
    import paho.mqtt.client  # noqa: F401

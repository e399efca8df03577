"""Model-based test of the journal: a hypothesis state machine against plain lists.

The machine
-----------
One stream, ``orders``, in a journal opened with a fsync policy drawn once per
run (``always``, ``interval`` or ``none``, set on the journal or on the stream)
and a small ``StreamConfig``: 1-4 KiB segments, index intervals down to 1 byte,
optional ``retention_bytes``, ``retention_ms``, ``segment_ms`` and
``max_batch_bytes``. Half the runs have an object tier: a ``file://`` directory
beside the journal, with ``local_retention_bytes=0`` so that every sealed
segment is due to move. The journal runs in ``trio.run`` on a thread of its own
(:class:`JournalThread`) and stays open across rules, as in real use; rules
call into it with ``trio.from_thread``. Time is a fake clock that a rule
advances: nothing sleeps, and the maintenance task never runs on its own.

Rules: ``append`` (a few records of any size, or many tiny ones), ``append_batch``
of client-encoded batches, concurrent appends sharing fsyncs, concurrent appends
cancelled while they wait for their fsync, explicit rolls, retention passes,
``read``/``read_batches`` at any offset with any ``max_bytes``, reads out of range,
``offset_for_time``, ``verify``, deleting and re-creating the stream, clean
close and reopen, crashes, bit rot in sealed segments, and (with an object
tier) ``migrate``: one pass of the migration service, run by the rule so that
nothing moves behind the model's back.

The model
---------
* ``records``: every record written, by offset, as ``(key, value, headers,
  timestamp)``; a missing timestamp is the fake clock's time, so every
  timestamp is known (they come from a narrow window: many ties, any order);
* ``segments``: the retained segments, each a list of batches ``(base offset,
  record count, encoded size, max timestamp)`` and a quarantine flag; the last
  one is active. Rolls (size, ``segment_ms``, explicit) and retention are
  replayed on the model with the rules of ``docs/architecture.md``, so the
  extent (``first_offset``, ``next_offset``, ``size_bytes``, ``segment_count``)
  is known exactly, and so is where every read must stop. A list that fits
  ``max_batch_bytes`` is one batch; how a larger one was split is learnt from
  ``read_batches`` (and checked);
* ``committed``: what readers see (``stream_info().next_offset``). It trails the
  written records only after appends whose callers were cancelled before their
  fsync; the next fsync (append, roll, retention pass, close) publishes them;
* ``durable``: how many bytes of the active segment a crash cannot take back:
  the committed ones under ``always``/``interval``; under ``none`` what the last
  roll, retention pass, clean close or recovery left;
* with an object tier, which sealed segments live there (``MSegment.remote``):
  a pass moves every sealed local segment in offset order up to the first
  quarantined one; retention removes object-tier segments (their objects go to
  the trash, counted in ``trash``, and leave the store on the next pass) but
  never a local one that is not uploaded yet; the store holds exactly the
  three objects of each object-tier segment after a pass, and the stream
  directory exactly the ``.log`` files of the local segments. Migration must
  not change anything a read returns.

A crash is :meth:`Journal.abandon`, then what a lost page cache could leave: the
active ``.log`` cut anywhere at or after ``durable``, then a tail (garbage, a
torn batch, a batch with a bad CRC or offset, or a whole valid batch that was
never acknowledged); index files of any local segment may also be deleted, cut or
zero-extended (they are derived data). Recovery must keep exactly the original
batches still intact on disk, plus the unacknowledged batch if it follows them
whole. Crashes and bit rot touch local files only (the active segment is
always local; index damage picks local segments). Bit rot flips a byte under a
batch's CRC in a sealed local segment: ``verify`` must report it, and the
segment is then quarantined (reads stop before it and raise inside it,
``offset_for_time`` skips it).

The stream's memory window (the newest batches, served without the segments)
is drawn too: off, small (a few batches, so it slides), or the default.

Longer hunts: ``JOURNAL_MODEL_EXAMPLES=3000 JOURNAL_MODEL_STEPS=60`` (~12 min).
The plain tests at the end pin the bugs this machine found.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from journal import (
    FSYNC_POLICIES,
    AppendResult,
    BatchTooLargeError,
    CorruptSegmentError,
    FsyncPolicy,
    Header,
    Journal,
    OffsetOutOfRangeError,
    Record,
    SegmentInfo,
    StreamConfig,
    StreamInfo,
    StreamStatistics,
    TieringStatistics,
)
from journal.segments.batch import decode_batch, encode_batch
from journal.tiering.remote import SUFFIXES

T = TypeVar("T")

NAME = "orders"
T0 = 1_000_000  # explicit timestamps come from a narrow window after T0
_TS_WINDOW = 40
_PICK_SCALE = 1 << 16
_CALL_TIMEOUT = 30.0  # seconds: a hung journal call fails the test instead of hanging it
# The stream's memory window: off, a few batches, the default.
_MEMORY_BYTES = (0, 2048, 4 << 20)

# -- the journal on its own trio thread ------------------------------------------


class JournalThread:
    """A journal opened in ``trio.run`` on a dedicated thread, driven from this one.

    The thread's main task opens the journal and waits for :meth:`close`;
    :meth:`call` runs one coroutine there and returns its result (or raises).
    """

    def __init__(
        self,
        path: Path,
        fsync: FsyncPolicy,
        interval_ms: int,
        clock: Callable[[], int],
        object_url: str | None = None,
    ) -> None:
        self._path = path
        self._object_url = object_url
        self._fsync: FsyncPolicy = fsync
        self._interval_ms = interval_ms
        self._clock = clock
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._journal: Journal | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="journal-model", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._journal is None:  # Journal.open failed (recovery raised)
            self._thread.join()
            assert self._error is not None
            raise self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with Journal.open(
            self._path,
            fsync=self._fsync,
            fsync_interval_ms=self._interval_ms,
            maintenance_interval=3600.0,  # retention, rolls, migration only when a rule asks
            clock=self._clock,
            object_url=self._object_url,
        ) as journal:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._journal = journal
            self._ready.set()
            await self._stop.wait()

    @property
    def journal(self) -> Journal:
        assert self._journal is not None
        return self._journal

    def call(self, fn: Callable[[Journal], Awaitable[T]]) -> T:
        """Run ``fn(journal)`` on the journal's trio thread."""
        journal = self.journal

        async def guarded() -> T:
            with trio.fail_after(_CALL_TIMEOUT):
                return await fn(journal)

        return trio.from_thread.run(guarded, trio_token=self._token)

    def info(self) -> StreamInfo:
        return trio.from_thread.run_sync(self.journal.stream_info, NAME, trio_token=self._token)

    def statistics(self) -> StreamStatistics:
        return trio.from_thread.run_sync(self.journal.statistics, NAME, trio_token=self._token)

    def segments(self) -> list[SegmentInfo]:
        return trio.from_thread.run_sync(self.journal.segments, NAME, trio_token=self._token)

    def tiering(self) -> TieringStatistics:
        stats = trio.from_thread.run_sync(self.journal.statistics, trio_token=self._token)
        assert stats.tiering is not None
        return stats.tiering

    def close(self, *, crash: bool = False) -> None:
        """Leave the ``async with``: a clean close, or after ``abandon()`` a crash."""
        assert self._stop is not None
        try:
            if crash:
                trio.from_thread.run_sync(self.journal.abandon, trio_token=self._token)
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        except trio.RunFinishedError:
            pass
        self._thread.join()
        if self._error is not None:
            raise self._error


# -- the model --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MRecord:
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int


@dataclass(frozen=True, slots=True)
class MBatch:
    base: int
    count: int
    size: int
    max_timestamp: int

    @property
    def next(self) -> int:
        return self.base + self.count


@dataclass(slots=True)
class MSegment:
    base: int
    batches: list[MBatch] = field(default_factory=list)
    quarantined: bool = False
    remote: bool = False  # moved to the object tier

    @property
    def name(self) -> str:
        return f"{self.base:020d}.log"

    @property
    def size(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def next_offset(self) -> int:
        return self.batches[-1].next if self.batches else self.base

    @property
    def max_timestamp(self) -> int:
        return max((b.max_timestamp for b in self.batches), default=-1)


def _resolve(records: Sequence[Record], now_ms: int) -> list[MRecord]:
    """What the journal stores for ``records`` encoded at ``now_ms``."""
    return [
        MRecord(r.key, r.value, tuple(r.headers), now_ms if r.timestamp is None else r.timestamp)
        for r in records
    ]


def _stored(record: Record) -> MRecord:
    assert record.timestamp is not None
    return MRecord(record.key, record.value, tuple(record.headers), record.timestamp)


# -- strategies -------------------------------------------------------------------

_timestamps = st.integers(T0, T0 + _TS_WINDOW)  # many collisions, any order
_records = st.builds(
    Record,
    value=st.none() | st.binary(max_size=16) | st.binary(min_size=100, max_size=400),
    key=st.none() | st.binary(max_size=16),
    headers=st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=6)), max_size=2),
    timestamp=st.none() | _timestamps,
)
_tiny_records = st.builds(Record, value=st.none() | st.binary(max_size=2), timestamp=_timestamps)
# A few records of any size, or many tiny ones (a size estimate per record is far off).
_record_lists = st.lists(_records, min_size=1, max_size=5) | st.lists(
    _tiny_records, min_size=10, max_size=120
)
_small_records = st.builds(  # always fits one batch of the smallest max_batch_bytes
    Record,
    value=st.none() | st.binary(max_size=24),
    key=st.none() | st.binary(max_size=8),
    timestamp=st.none() | _timestamps,
)

TailKind = Literal["none", "garbage", "torn", "whole", "misnumbered", "corrupt"]
_TAILS: tuple[TailKind, ...] = ("none", "garbage", "torn", "whole", "misnumbered", "corrupt")
_INDEX_DAMAGE = st.sampled_from(["keep", "keep", "delete", "truncate", "zeros"])


def _pick(data: st.DataObject, lo: int, hi: int, label: str) -> int:
    """A value in ``lo..hi`` drawn with fixed constraints, shrinking towards ``lo``.

    Bounds that come from file sizes (or from anything but earlier draws) must
    not reach hypothesis' choice tree, or it reports flaky data generation.
    """
    fraction = data.draw(st.integers(0, _PICK_SCALE), label=label)
    return lo + (hi - lo) * fraction // _PICK_SCALE


async def _read_all_from(journal: Journal, *, offset: int) -> list[Record]:
    return await journal.read(NAME, offset, 1 << 20)


async def _append_into(
    journal: Journal, records: list[Record], results: list[AppendResult | None], i: int
) -> None:
    results[i] = await journal.append(NAME, records)


async def _run_concurrently(
    journal: Journal, groups: list[list[Record]], *, cancel: bool = False
) -> list[AppendResult | None]:
    """Start one ``append`` per group; with ``cancel``, cancel them once all are blocked.

    Each append takes the write lock and writes before the next one starts, so
    offsets follow the list (deterministically) while the appends still share
    fsyncs. A cancelled append that had already written leaves its result None.
    """
    results: list[AppendResult | None] = [None] * len(groups)
    async with trio.open_nursery() as nursery:
        for i, records in enumerate(groups):
            nursery.start_soon(_append_into, journal, records, results, i)
            await trio.testing.wait_all_tasks_blocked()
        if cancel:
            nursery.cancel_scope.cancel()
    return results


async def _delete_and_create(journal: Journal, config: StreamConfig, *, tiered: bool) -> None:
    await journal.delete_stream(NAME)
    if tiered:
        # The deletion woke the migration service. Once every task is blocked its
        # pass holds the migrator's lock or is over, so ours runs after it: no
        # pass is left to run behind the model's back, and the trash is empty.
        await trio.testing.wait_all_tasks_blocked()
        await journal.migrate()
    await journal.create_stream(NAME, config)


# -- the state machine ------------------------------------------------------------


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="journal-model-"))
        self.root = self.base / "journal"
        self.objects: Path | None = None  # the object tier's directory, if any
        self.trash = 0  # object-tier segments removed by retention, objects not deleted yet
        self.now = T0 + _TS_WINDOW // 2
        self.host: JournalThread | None = None
        self.policy: FsyncPolicy = "always"
        self.journal_policy: FsyncPolicy = "always"
        self.journal_interval_ms = 1
        self.config = StreamConfig()
        self._reset_stream()

    def _reset_stream(self) -> None:
        self.records: list[MRecord] = []
        self.segments: list[MSegment] = [MSegment(0)]
        self.committed = 0  # readers see offsets below this
        self.created: int | None = None  # when the active segment got its first batch
        self.durable = 0  # bytes of the active segment that a crash cannot take back

    # -- helpers ------------------------------------------------------------------

    @property
    def j(self) -> JournalThread:
        assert self.host is not None
        return self.host

    @property
    def active(self) -> MSegment:
        return self.segments[-1]

    @property
    def first_offset(self) -> int:
        return self.segments[0].base

    @property
    def next_offset(self) -> int:
        """The offset the next append gets: past every written record."""
        return self.active.next_offset

    def _clock(self) -> int:
        return self.now

    @property
    def tiered(self) -> bool:
        return self.objects is not None

    def _open(self) -> None:
        url = None if self.objects is None else f"file://{self.objects}"
        self.host = JournalThread(
            self.root, self.journal_policy, self.journal_interval_ms, self._clock, url
        )

    def _stream_dir(self) -> Path:
        (directory,) = (self.root / "streams").iterdir()
        return directory

    def _log_path(self, base: int) -> Path:
        return self._stream_dir() / MSegment(base).name

    def _local_logs(self) -> set[int]:
        """The base offsets of the segment files in the stream directory."""
        return {int(p.stem) for p in self._stream_dir().glob("*.log")}

    def _stored_objects(self) -> set[str]:
        """Every object in the object tier, by key."""
        assert self.objects is not None
        return {str(p.relative_to(self.objects)) for p in self.objects.rglob("*") if p.is_file()}

    def _segment_of(self, offset: int) -> MSegment:
        return next(s for s in reversed(self.segments) if s.base <= offset)

    def _aged(self) -> bool:
        return self.created is not None and self.now - self.created >= self.config.segment_ms

    def _synced(self) -> None:
        """An fsync of the active segment: everything written is durable and readable."""
        self.committed = self.next_offset
        if self.policy != "none":
            self.durable = self.active.size

    def _model_roll(self) -> None:
        self._synced()
        self.segments.append(MSegment(self.next_offset))
        self.created = None
        self.durable = 0

    def _would_roll(self, size: int) -> bool:
        seg = self.active
        return bool(seg.size) and (seg.size + size > self.config.segment_bytes or self._aged())

    def _model_write(self, batches: list[tuple[list[MRecord], int]]) -> None:
        """Replay the write of one append (its batches and their sizes) on the model."""
        size = sum(n for _, n in batches)
        if self._would_roll(size):
            full = self.active.size + size > self.config.segment_bytes
            event("append rolled", "full" if full else "aged")
            self._model_roll()
        for records, n in batches:
            max_ts = max(r.timestamp for r in records)
            self.active.batches.append(MBatch(self.next_offset, len(records), n, max_ts))
            self.records += records
        if self.created is None:
            self.created = self.now

    def _model_append(self, batches: list[tuple[list[MRecord], int]]) -> None:
        """An acknowledged append: written, then (under every policy) readable."""
        self._model_write(batches)
        self._synced()

    def _too_large(self, records: Sequence[Record]) -> bool:
        """Whether ``append`` must refuse ``records``: one of them alone exceeds the limit."""
        limit = self.config.max_batch_bytes
        return any(len(encode_batch([r], now_ms=self.now)) > limit for r in records)

    def _stored_batches(
        self, records: list[Record], result: AppendResult
    ) -> list[tuple[list[MRecord], int]]:
        """How ``append`` stored ``records``: one batch if it fits, else learnt and checked."""
        expected = _resolve(records, self.now)
        raw_size = len(encode_batch(records, now_ms=self.now))
        if raw_size <= self.config.max_batch_bytes:
            return [(expected, raw_size)]
        event("append split into batches")
        raws = self.j.call(lambda j: j.read_batches(NAME, result.base_offset, 1 << 20))
        out: list[tuple[list[MRecord], int]] = []
        offset = result.base_offset
        for raw in raws:
            if offset > result.last_offset:
                break
            header, got = decode_batch(raw)
            assert header.base_offset == offset, "an append's batches are consecutive"
            assert len(raw) <= self.config.max_batch_bytes
            stored = [_stored(r) for r in got]
            assert (
                stored
                == expected[offset - result.base_offset : header.next_offset - result.base_offset]
            )
            out.append((stored, len(raw)))
            offset = header.next_offset
        assert offset == result.last_offset + 1, "the batches hold exactly the append"
        return out

    def _after_reopen(self) -> None:
        """A reopened stream: recovered bytes are on disk, the segment's age restarts."""
        self.committed = self.next_offset
        self.durable = self.active.size
        self.created = self.now if self.active.size else None
        self._check_contents()

    def _check_contents(self) -> None:
        """Read the whole stream back (segment by segment) and compare it with the model."""
        info = self.j.info()
        assert (info.first_offset, info.next_offset) == (self.first_offset, self.committed)
        for seg in self.segments:
            offset, end = seg.base, min(seg.next_offset, self.committed)
            if offset < end and seg.quarantined:
                with pytest.raises(CorruptSegmentError):
                    self.j.call(partial(_read_all_from, offset=offset))
                continue
            while offset < end:
                got = self.j.call(partial(_read_all_from, offset=offset))
                assert got, f"read({offset}) returned nothing below next_offset {end}"
                assert [r.offset for r in got] == list(range(offset, offset + len(got)))
                assert [_stored(r) for r in got] == self.records[offset : offset + len(got)]
                offset += len(got)

    def _expected_read(self, offset: int, max_bytes: int) -> list[MBatch] | None:
        """The batches a read from ``offset`` returns: the first always, then while they fit.

        A quarantined segment ends the read; None when the first batch lies in one
        (the read raises CorruptSegmentError).
        """
        out: list[MBatch] = []
        budget = max_bytes
        for seg in self.segments:
            for batch in seg.batches:
                if batch.next <= offset:
                    continue
                if batch.base >= self.committed or (out and batch.size > budget):
                    return out
                if seg.quarantined:
                    return out or None
                out.append(batch)
                budget -= batch.size
        return out

    def _damage_indexes(self, data: st.DataObject) -> None:
        """Index files are derived data: recovery must cope with them missing or torn.

        Local files only: an object-tier segment has none on this disk.
        """
        local = [s for s in self.segments if not s.remote]  # the active one at least
        seg = local[_pick(data, 0, len(local) - 1, "index damage in segment")]
        for suffix in (".index", ".timeindex"):
            path = self._log_path(seg.base).with_suffix(suffix)
            action = data.draw(_INDEX_DAMAGE, label=f"{suffix} damage")
            if action == "keep" or not path.exists():
                continue
            if action == "delete":
                path.unlink()
            elif action == "truncate":
                size = path.stat().st_size
                os.truncate(path, _pick(data, 0, size, f"{suffix} size"))
            else:
                with path.open("ab") as f:
                    f.write(bytes(data.draw(st.integers(1, 40), label="zeros")))

    # -- rules: setup ---------------------------------------------------------------

    @initialize(
        policy=st.sampled_from(FSYNC_POLICIES),
        policy_on_stream=st.booleans(),
        segment_bytes=st.integers(1024, 4096),
        retention_bytes=st.none() | st.integers(2048, 12288),
        retention_ms=st.none() | st.integers(0, 20_000),
        segment_ms=st.none() | st.integers(1, 20_000),
        index_interval_bytes=st.sampled_from([1, 16, 64, 256, 1024, 4096]),
        max_batch_bytes=st.none() | st.integers(256, 2048),
        interval_ms=st.sampled_from([0, 1, 1, 25]),
        tiered=st.booleans(),
        memory_bytes=st.sampled_from(_MEMORY_BYTES),
    )
    def open_journal(
        self,
        policy: FsyncPolicy,
        policy_on_stream: bool,
        segment_bytes: int,
        retention_bytes: int | None,
        retention_ms: int | None,
        segment_ms: int | None,
        index_interval_bytes: int,
        max_batch_bytes: int | None,
        interval_ms: int,
        tiered: bool,
        memory_bytes: int,
    ) -> None:
        self.policy = policy
        if tiered:
            self.objects = self.base / "objects"
        # The stream's own settings override the journal's defaults.
        if policy_on_stream:
            self.journal_policy = "none" if policy == "always" else "always"
            self.journal_interval_ms = 7
        else:
            self.journal_policy, self.journal_interval_ms = policy, interval_ms
        defaults = StreamConfig()
        self.config = StreamConfig(
            segment_bytes=segment_bytes,
            segment_ms=defaults.segment_ms if segment_ms is None else segment_ms,
            retention_bytes=retention_bytes,
            retention_ms=retention_ms,
            index_interval_bytes=index_interval_bytes,
            max_batch_bytes=defaults.max_batch_bytes
            if max_batch_bytes is None
            else max_batch_bytes,
            fsync=policy if policy_on_stream else None,
            fsync_interval_ms=interval_ms if policy_on_stream else None,
            # With an object tier every sealed segment is due to move: the model
            # need not know the local retention rules, only the migrate rule.
            local_retention_bytes=0 if tiered else defaults.local_retention_bytes,
            local_retention_ms=None if tiered else defaults.local_retention_ms,
            memory_bytes=memory_bytes,
        )
        self._open()
        config = self.config
        self.j.call(lambda j: j.create_stream(NAME, config))

    # -- rules: writing -------------------------------------------------------------

    @rule(records=_record_lists)
    def append(self, records: list[Record]) -> None:
        if self._too_large(records):
            event("append refused: a record exceeds max_batch_bytes")
            with pytest.raises(BatchTooLargeError):
                self.j.call(lambda j: j.append(NAME, records))
            return
        expected = AppendResult(self.next_offset, self.next_offset + len(records) - 1)
        result = self.j.call(lambda j: j.append(NAME, records))
        assert result == expected
        self._model_append(self._stored_batches(records, result))

    @rule(
        records=_record_lists,
        client_base=st.sampled_from([0, 7, 1 << 40]),
        client_now=_timestamps,
    )
    def append_raw(self, records: list[Record], client_base: int, client_now: int) -> None:
        raw = encode_batch(records, client_base, now_ms=client_now, producer_id=3)
        if len(raw) > self.config.max_batch_bytes:
            event("append_batch refused: larger than max_batch_bytes")
            with pytest.raises(BatchTooLargeError):
                self.j.call(lambda j: j.append_batch(NAME, raw))
            return
        expected = AppendResult(self.next_offset, self.next_offset + len(records) - 1)
        result = self.j.call(lambda j: j.append_batch(NAME, raw))
        assert result == expected
        self._model_append([(_resolve(records, client_now), len(raw))])

    @rule(groups=st.lists(_record_lists, min_size=2, max_size=4))
    def append_concurrently(self, groups: list[list[Record]]) -> None:
        """Appends queueing for the write lock and sharing fsyncs (group commit)."""
        groups = [g for g in groups if not self._too_large(g)]
        if not groups:
            return
        results = self.j.call(partial(_run_concurrently, groups=groups))
        for result, records in zip(results, groups, strict=True):
            expected = AppendResult(self.next_offset, self.next_offset + len(records) - 1)
            assert result == expected
            self._model_write(self._stored_batches(records, result))
        self._synced()

    @rule(groups=st.lists(st.lists(_small_records, min_size=1, max_size=3), min_size=1, max_size=3))
    def append_cancelled(self, groups: list[list[Record]]) -> None:
        """Concurrent callers give up while their appends wait for an fsync.

        Each batch is written and keeps its offsets; it becomes readable at
        once under ``none``, else when an fsync covers it (the one it was
        waiting for, or a later one), and until then a crash may take it back.
        """
        sizes = [len(encode_batch(g, now_ms=self.now)) for g in groups]
        if self._would_roll(sizes[0]):  # so that cancels land in fsync waits, not in a roll
            self.roll()
        room = self.config.segment_bytes - self.active.size
        kept = 1
        while kept < len(groups) and sum(sizes[: kept + 1]) <= room:
            kept += 1
        groups, sizes = groups[:kept], sizes[:kept]

        committed = self.committed
        results = self.j.call(partial(_run_concurrently, groups=groups, cancel=True))
        ends = [committed]
        acknowledged = committed
        for result, records, size in zip(results, groups, sizes, strict=True):
            expected = AppendResult(self.next_offset, self.next_offset + len(records) - 1)
            if result is not None:
                assert result == expected
                acknowledged = expected.last_offset + 1
            self._model_write([(_resolve(records, self.now), size)])
            ends.append(self.next_offset)
        visible = self.j.info().next_offset
        assert visible in ends, "readers see whole appends"
        assert visible >= acknowledged, "an acknowledged append is readable"
        if self.policy == "none":
            assert visible == self.next_offset, "under none an append is readable at once"
        self.committed = visible
        if self.policy != "none":
            self.durable = sum(b.size for b in self.active.batches if b.next <= visible)
        outcome = "all acknowledged" if acknowledged == self.next_offset else "some cancelled"
        event(
            "cancelled appends",
            f"{outcome}, {'pending' if visible < self.next_offset else 'readable'}",
        )

    @rule()
    def roll(self) -> None:
        self.j.call(lambda j: j.roll(NAME))
        if self.active.size:
            self._model_roll()

    @rule()
    def delete_and_recreate(self) -> None:
        self.j.call(partial(_delete_and_create, config=self.config, tiered=self.tiered))
        self._reset_stream()
        if self.tiered:
            self.trash = 0
            assert self._stored_objects() == set(), "a deleted stream's objects are deleted"

    # -- rules: time and retention -------------------------------------------------

    @rule(ms=st.integers(1, 4000))
    def advance_clock(self, ms: int) -> None:
        self.now += ms

    @rule(migrate_first=st.booleans())
    def apply_retention(self, migrate_first: bool) -> None:
        """A retention pass; with an object tier, after a migration pass if drawn (as
        the migration service and the maintenance task both run every interval)."""
        if migrate_first and self.tiered:
            self._migrate()
        self._retention()

    def _retention(self) -> None:
        bases = [s.base for s in self.segments]
        # Like maintain(): roll an aged active segment, fsync what is not yet
        # durable (under "none" too), then retention.
        if self.active.size and self._aged():
            self._model_roll()
            bases.append(self.active.base)
        self._synced()
        self.durable = self.active.size
        cfg = self.config
        total = sum(s.size for s in self.segments)
        expected_removed = 0
        waiting = False  # a local segment past retention waits for its upload
        while len(self.segments) > 1:
            seg = self.segments[0]
            too_big = cfg.retention_bytes is not None and total > cfg.retention_bytes
            too_old = cfg.retention_ms is not None and (
                0 <= seg.max_timestamp < self.now - cfg.retention_ms
            )
            if not (too_big or too_old):
                break
            if self.tiered and not seg.remote and not seg.quarantined:
                waiting = True
                event("retention waits for an upload")
                break
            del self.segments[0]
            total -= seg.size
            expected_removed += 1
            self.trash += seg.remote
            tier = "object" if seg.remote else "local"
            event("retention removed a segment", f"{tier}, too {'big' if too_big else 'old'}")

        removed = self.j.call(lambda j: j.apply_retention(NAME))
        info = self.j.info()
        assert info.first_offset in bases, "first_offset must move to a segment boundary"
        assert info.first_offset <= bases[-1], "retention must never touch the active segment"
        if cfg.retention_bytes is not None and not waiting:
            assert info.size_bytes <= cfg.retention_bytes or info.segment_count == 1
        assert (removed, info.first_offset) == (expected_removed, self.first_offset)

    # -- rules: the object tier -------------------------------------------------------

    @precondition(lambda self: self.tiered)
    @rule(roll_first=st.booleans(), then_retention=st.booleans())
    def migrate(self, roll_first: bool, then_retention: bool) -> None:
        """One pass: every sealed local segment moves, in order, up to a quarantined one
        (never uploaded); the trash is emptied. Reads must not notice (see the invariant
        and the read rules).

        A roll before and a retention pass after, each drawn, make both meet
        the object tier far more often than the rules alone would.
        """
        if roll_first:
            self.roll()
        self._migrate()
        if then_retention:
            self._retention()

    def _migrate(self) -> None:
        due: list[MSegment] = []
        for seg in self.segments[:-1]:
            if seg.remote:
                continue
            if seg.quarantined:
                event("migration stops at a quarantined segment")
                break
            due.append(seg)
        moved = self.j.call(lambda j: j.migrate())
        assert moved == len(due)
        for seg in due:
            seg.remote = True
        self.trash = 0
        stats = self.j.tiering()
        assert (stats.upload_failures, stats.orphans_found) == (0, 0)
        keys = [s.key.removesuffix(".log") for s in self.j.segments() if s.key is not None]
        assert self._stored_objects() == {k + suffix for k in keys for suffix in SUFFIXES}
        event("migrated segments", min(moved, 3))

    # -- rules: reading -------------------------------------------------------------

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        offset = _pick(data, self.first_offset, self.committed, "offset")
        max_bytes = data.draw(st.integers(1, 8192), label="max_bytes")
        batches = self._expected_read(offset, max_bytes)
        if batches is None:
            with pytest.raises(CorruptSegmentError):
                self.j.call(lambda j: j.read(NAME, offset, max_bytes))
            event("read of a quarantined segment")
            return
        got = self.j.call(lambda j: j.read(NAME, offset, max_bytes))
        end = batches[-1].next if batches else offset
        assert [r.offset for r in got] == list(range(offset, end))
        assert [_stored(r) for r in got] == self.records[offset:end]
        event("read batches", min(len(batches), 3))

    @rule(data=st.data())
    def read_batches(self, data: st.DataObject) -> None:
        offset = _pick(data, self.first_offset, self.committed, "offset")
        max_bytes = data.draw(st.integers(1, 8192), label="max_bytes")
        expected = self._expected_read(offset, max_bytes)
        if expected is None:
            with pytest.raises(CorruptSegmentError):
                self.j.call(lambda j: j.read_batches(NAME, offset, max_bytes))
            return
        raws = self.j.call(lambda j: j.read_batches(NAME, offset, max_bytes))
        got: list[MBatch] = []
        for raw in raws:
            header, records = decode_batch(raw)
            offsets = range(header.base_offset, header.next_offset)
            assert [r.offset for r in records] == list(offsets)
            assert [_stored(r) for r in records] == self.records[offsets.start : offsets.stop]
            got.append(
                MBatch(header.base_offset, header.record_count, len(raw), header.max_timestamp)
            )
        assert got == expected

    @rule(data=st.data())
    def read_out_of_range(self, data: st.DataObject) -> None:
        distance = data.draw(st.integers(1, 5), label="distance")
        if self.first_offset and data.draw(st.booleans(), label="below first_offset"):
            offset = max(0, self.first_offset - distance)
        else:
            offset = self.committed + distance
        with pytest.raises(OffsetOutOfRangeError):
            self.j.call(lambda j: j.read(NAME, offset, 1024))

    @rule(data=st.data())
    def offset_for_time(self, data: st.DataObject) -> None:
        ts = data.draw(
            st.integers(T0 - 2, T0 + _TS_WINDOW + 2) | st.integers(T0 - 2, self.now + 2),
            label="timestamp",
        )
        got = self.j.call(lambda j: j.offset_for_time(NAME, ts))
        readable = (
            i
            for i in range(self.first_offset, self.committed)
            if not self._segment_of(i).quarantined  # skipped, as they cannot be read
        )
        expected = next((i for i in readable if self.records[i].timestamp >= ts), None)
        assert got == expected
        event("offset_for_time", "none" if expected is None else "found")

    @rule()
    def verify(self) -> None:
        """Every batch passes its CRC check, whatever happened, but in quarantined segments."""
        problems = self.j.call(lambda j: j.verify(NAME))
        assert [p.segment for p in problems] == [s.name for s in self.segments if s.quarantined]

    @precondition(
        lambda self: (
            self.config.retention_ms is None  # see the docstring
            and any(not (s.quarantined or s.remote) for s in self.segments[:-1])
        )
    )
    @rule(data=st.data(), closed=st.booleans())
    def bit_rot(self, data: st.DataObject, closed: bool) -> None:
        """A byte under a batch's CRC goes bad in a sealed local segment, while open or closed.

        ``verify()`` must find it, and from then on the segment is quarantined: reads
        stop before it and raise inside it, ``offset_for_time`` skips it, retention
        by size still counts and deletes it. (Not with ``retention_ms``: whether a
        quarantined segment still knows its newest timestamp depends on when it
        was quarantined, which the docs leave open.)
        """
        sealed = [s for s in self.segments[:-1] if not (s.quarantined or s.remote)]
        seg = sealed[_pick(data, 0, len(sealed) - 1, "rotten segment")]
        i = _pick(data, 0, len(seg.batches) - 1, "rotten batch")
        at = sum(b.size for b in seg.batches[:i])
        at += _pick(data, 17, seg.batches[i].size - 1, "rotten byte")  # from the CRC on
        flip = data.draw(st.integers(1, 255), label="xor")
        if closed:
            self.j.close()
        with self._log_path(seg.base).open("r+b") as f:
            f.seek(at)
            (byte,) = f.read(1)
            f.seek(at)
            f.write(bytes([byte ^ flip]))
        if closed:
            self._open()
        seg.quarantined = True
        event("bit rot", "while closed" if closed else "while open")
        self.verify()
        if closed:
            self._after_reopen()
        else:
            self._check_contents()

    # -- rules: restarts ------------------------------------------------------------

    @rule(data=st.data())
    def close_reopen(self, data: st.DataObject) -> None:
        self.j.close()
        self._damage_indexes(data)
        self._open()
        self._after_reopen()

    @rule(data=st.data(), tail=st.sampled_from(_TAILS))
    def crash(self, data: st.DataObject, tail: TailKind) -> None:
        self.j.close(crash=True)
        self.host = None
        seg = self.active
        logs = sorted(p for p in self._stream_dir().glob("*.log"))
        assert logs[-1] == self._log_path(seg.base), "the active segment is the newest .log"
        path = logs[-1]
        original = path.read_bytes()
        assert len(original) == seg.size

        # The page cache is lost: bytes after `durable` may be gone...
        keep = _pick(data, self.durable, seg.size, "bytes kept")
        os.truncate(path, keep)
        whole = 0  # batches wholly before the cut
        while whole < len(seg.batches) and sum(b.size for b in seg.batches[: whole + 1]) <= keep:
            whole += 1
        after_cut = seg.batches[whole - 1].next if whole else seg.base

        # ...and a write that was never acknowledged may have left a tail.
        unacked: tuple[list[MRecord], bytes] | None = None
        bytes_tail = b""
        if tail == "garbage":
            bytes_tail = data.draw(st.binary(min_size=1, max_size=80), label="garbage")
        elif tail != "none":
            records = data.draw(st.lists(_records, min_size=1, max_size=3), label="unacked")
            base = after_cut
            if tail == "misnumbered":
                delta = data.draw(st.integers(1, 1000), label="offset error")
                negative = data.draw(st.booleans(), label="negative") and delta <= base
                base += -delta if negative else delta
            raw = bytearray(encode_batch(records, base, now_ms=self.now))
            if tail == "torn":
                raw = raw[: data.draw(st.integers(1, len(raw) - 1), label="torn at")]
            elif tail == "corrupt":  # a byte from magic on (the epoch is outside the CRC)
                at = data.draw(st.integers(16, len(raw) - 1), label="corrupt at")
                raw[at] ^= data.draw(st.integers(1, 255), label="xor")
            elif tail == "whole":
                unacked = (_resolve(records, self.now), bytes(raw))
            bytes_tail = bytes(raw)
        with path.open("ab") as f:
            f.write(bytes_tail)

        # What recovery must keep: the original batches still intact on disk (a
        # tail may happen to restore cut bytes), then a whole unacknowledged batch.
        content = original[:keep] + bytes_tail
        surviving: list[MBatch] = []
        end = 0
        for batch in seg.batches:
            if content[end : end + batch.size] != original[end : end + batch.size]:
                break
            surviving.append(batch)
            end += batch.size
        next_offset = surviving[-1].next if surviving else seg.base
        extra: list[MRecord] = []
        if unacked is not None and len(surviving) == whole and content[end:] == unacked[1]:
            extra = unacked[0]
            max_ts = max(r.timestamp for r in extra)
            surviving.append(MBatch(next_offset, len(extra), len(unacked[1]), max_ts))
        self._damage_indexes(data)
        lost = len(seg.batches) + len(extra and [1]) - len(surviving)
        event("crash", f"{self.policy}, tail {tail}, lost {min(lost, 2)} batches")

        self._open()
        seg.batches = surviving
        self.records = self.records[:next_offset] + extra
        self._after_reopen()

    # -- checks ---------------------------------------------------------------------

    @invariant()
    def extent_matches_model(self) -> None:
        if self.host is None:
            return
        info = self.j.info()
        got = (info.first_offset, info.next_offset, info.size_bytes, info.segment_count)
        size = sum(s.size for s in self.segments)
        assert got == (self.first_offset, self.committed, size, len(self.segments))
        quarantined = tuple(s.name for s in self.segments if s.quarantined)
        assert info.quarantined == quarantined
        stats = self.j.statistics()
        got = (stats.first_offset, stats.next_offset, stats.size_bytes, stats.segments)
        assert got == (self.first_offset, self.committed, size, len(self.segments))
        assert stats.quarantined_segments == len(quarantined)

    @invariant()
    def tiers_match_model(self) -> None:
        """Where each segment is: in the catalog, in the statistics and on disk."""
        if self.host is None:
            return
        tiers = ["object" if s.remote else "local" for s in self.segments[:-1]] + ["memory"]
        got = self.j.segments()
        assert [(s.base_offset, s.tier) for s in got] == [
            (s.base, tier) for s, tier in zip(self.segments, tiers, strict=True)
        ]
        assert [s.key is not None for s in got] == [s.remote for s in self.segments]
        remote = [s for s in self.segments if s.remote]
        stats = self.j.statistics()
        assert (stats.object_segments, stats.object_bytes) == (
            len(remote),
            sum(s.size for s in remote),
        )
        assert stats.object_bytes + stats.local_bytes == stats.size_bytes
        assert self._local_logs() == {s.base for s in self.segments if not s.remote}
        if self.tiered:
            assert self.j.tiering().trash_pending == self.trash

    def teardown(self) -> None:
        host, self.host = self.host, None
        try:
            if host is not None:
                with contextlib.suppress(Exception):  # a failing rule already reported it
                    host.close(crash=True)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


JournalMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("JOURNAL_MODEL_EXAMPLES", "100")),
    stateful_step_count=int(os.environ.get("JOURNAL_MODEL_STEPS", "40")),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
TestJournalModel = JournalMachine.TestCase


# -- bugs the machine found, as plain regression tests -----------------------------


async def test_small_reads_do_not_quarantine_good_segments(tmp_path: Path) -> None:
    """A read whose chunk (budget + 2 * index_interval_bytes) was under a header's 61
    bytes took the short pread for corruption and quarantined a good segment."""
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream(NAME, StreamConfig(index_interval_bytes=16))
        for value in (b"a", b"b", b"c"):  # three one-batch segments of 68 bytes
            await j.append(NAME, [Record(value=value, timestamp=1)])
            await j.roll(NAME)
        # 22 bytes of budget are left when the read reaches the second segment.
        got = await j.read(NAME, 0, max_bytes=90)
        assert [r.value for r in got] == [b"a"]
        assert j.stream_info(NAME).quarantined == ()
        assert [r.value for r in await j.read(NAME, 1, max_bytes=1)] == [b"b"]
        assert j.stream_info(NAME).quarantined == ()


async def test_a_list_that_fits_max_batch_bytes_is_one_batch(tmp_path: Path) -> None:
    """The split by estimated record sizes cut lists that fit into several batches,
    which a crash could keep a prefix of; Journal.append promises one batch."""
    records = [Record(value=b"x", timestamp=1) for _ in range(100)]
    size = len(encode_batch(records, now_ms=0))  # 897 bytes
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream(NAME, StreamConfig(max_batch_bytes=1024))
        await j.append(NAME, records)
        assert [len(b) for b in await j.read_batches(NAME, 0)] == [size]


# -- bugs of the memory window the machine found ----------------------------------


async def test_read_batches_at_the_end_returns_nothing_from_the_memory_window(
    tmp_path: Path,
) -> None:
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream(NAME, StreamConfig())  # the default memory window
        await j.append(NAME, [Record(value=b"a")])
        assert await j.read_batches(NAME, 1) == []


async def test_a_quarantined_segment_is_not_served_from_the_memory_window(
    tmp_path: Path,
) -> None:
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream(NAME, StreamConfig())  # the default memory window
        await j.append(NAME, [Record(value=b"abc", timestamp=T0)])
        await j.roll(NAME)
        await j.append(NAME, [Record(value=b"d", timestamp=T0)])
        (directory,) = (tmp_path / "streams").iterdir()
        path = directory / MSegment(0).name
        data = bytearray(path.read_bytes())
        data[-1] ^= 1  # the value's last byte, under the CRC
        path.write_bytes(data)
        assert [p.segment for p in await j.verify(NAME)] == [path.name]
        with pytest.raises(CorruptSegmentError):
            await j.read(NAME, 0)

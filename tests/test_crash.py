"""Durability of the journal across crashes, torn tails and damaged files.

What is covered, and why:

* **SIGKILL at random moments** (``test_sigkill_rounds``): a real child process
  (``tests/crash_child.py``) appends from several trio tasks with
  ``fsync="always"`` and reports every acknowledged append on stdout; the test
  kills it with SIGKILL at seeded random moments (during start-up and recovery,
  right after an ack, a few ms later, before and after segment rolls), round
  after round on one data directory. After every kill the parent reopens the
  journal and checks the promise of ``docs/architecture.md``: every
  acknowledged append of every round is still at its offsets, byte for byte;
  offsets are contiguous; each append is there whole or not at all (one append
  is one CRC-checked batch), never torn; each task's appends appear in order
  with no gaps (a task appends ``seq + 1`` only once ``seq`` was durable);
  whatever one reopen showed is still there at the next; no segment is
  quarantined. Only a real process death leaves the page cache, the catalog's
  unsynced writes and half-done rolls as a crash does.
* **Torn tails and garbage** after the last batch of the active segment:
  random bytes, zeros, a torn header, a torn body, a CRC failure, a CRC failure
  followed by a good batch, a batch that skips offsets; after a clean close and
  after a crash without fsync (``Journal.abandon`` with ``fsync="none"``), in a
  segment with data or an empty one just rolled. Recovery must cut the file
  back to the end of the good data, keep every earlier record, and give new
  appends the next offsets. A complete valid batch past the checkpoint is the
  control: it must be kept, not truncated.
* **Bit rot in a sealed segment**: opening does not rescan sealed segments, so
  a flipped payload bit is found by a read or by ``verify``: the error names
  stream, segment and byte position, the segment is quarantined, kept on disk
  untouched, never served again (also after a reopen), while other segments
  and appends keep working; a read that starts before it serves the good
  segment up to it. A damaged batch header is caught at open.
* **Damaged index files** of a sealed segment (missing, truncated, garbage,
  garbage of the right size, one entry off by a byte, and undamaged as the
  control): reads by offset and by time still give the right records and the
  files are rebuilt as they were. Index files are derived data: damage to them
  must never lose or refuse a record. Time lookups must also survive a torn
  tail being cut.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from crash_child import CONFIG, STREAM, append_records, parse_key

from journal import (
    CorruptSegmentError,
    FsyncPolicy,
    Header,
    Journal,
    Record,
    StorageError,
    StreamConfig,
)
from journal.segments.batch import HEADER_SIZE, BatchHeader, encode_batch, iter_batches

CHILD = Path(__file__).with_name("crash_child.py")

RecordFields = tuple[bytes | None, bytes | None, list[Header]]


def fields(record: Record) -> RecordFields:
    """What must survive byte for byte: key, value, headers."""
    return record.key, record.value, list(record.headers)


def stream_dir(data: Path) -> Path:
    dirs = sorted((data / "streams").iterdir())
    assert len(dirs) == 1, f"expected one stream directory, found {dirs}"
    return dirs[0]


def segment_logs(data: Path) -> list[Path]:
    return sorted(stream_dir(data).glob("*.log"))


def batch_spans(path: Path) -> list[tuple[int, BatchHeader]]:
    """(byte position, header) of every batch in a segment file."""
    data = path.read_bytes()
    spans = []
    pos = 0
    for header in iter_batches(data):
        spans.append((pos, header))
        pos += header.size
    assert pos == len(data)
    return spans


async def read_range(journal: Journal, start: int, stop: int) -> list[Record]:
    """Records ``start..stop-1``, one batch per read, so no read crosses ``stop``'s segment."""
    out: list[Record] = []
    offset = start
    while offset < stop:
        records = await journal.read(STREAM, offset, max_bytes=1)
        assert records, f"read at offset {offset} returned nothing"
        for record in records:
            if offset < stop:
                assert record.offset == offset, f"expected offset {offset}, got {record.offset}"
                out.append(record)
                offset += 1
    return out


async def read_all(journal: Journal) -> list[Record]:
    """Every record, read in 256 KiB steps; checks offsets are contiguous from 0."""
    info = journal.stream_info(STREAM)
    assert info.first_offset == 0
    out: list[Record] = []
    while len(out) < info.next_offset:
        records = await journal.read(STREAM, len(out), max_bytes=256 << 10)
        assert records, f"read at offset {len(out)} of {info.next_offset} returned nothing"
        for record in records:
            assert record.offset == len(out), f"expected offset {len(out)}, got {record.offset}"
            out.append(record)
    assert len(out) == info.next_offset
    assert await journal.read(STREAM, info.next_offset) == [], "records past next_offset"
    return out


# -- SIGKILL rounds -----------------------------------------------------------

ROUNDS = 24
ROUND_TIMEOUT = 30.0  # seconds one round may take before the test gives up on the child


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged append, as the child reported it."""

    round: int
    task: int
    seq: int
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class KillPlan:
    """When to kill: after ``acks`` acks (0: at "ready", -1: during start-up),
    then after ``extra`` more seconds of reading the child's output."""

    acks: int
    extra: float

    @classmethod
    def draws(cls, rng: random.Random, rounds: int) -> list[KillPlan]:
        kinds = ["startup"] * 3 + ["ready"] * 3 + ["few"] * 8
        kinds += ["many"] * (rounds - len(kinds))
        rng.shuffle(kinds)
        plans = []
        for kind in kinds:
            extra = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.02)
            if kind == "startup":  # the child takes about 0.3 s to import, open, recover
                plans.append(cls(-1, rng.uniform(0.0, 0.5)))
            elif kind == "ready":
                plans.append(cls(0, extra))
            elif kind == "few":
                plans.append(cls(rng.randint(1, 20), extra))
            else:
                plans.append(cls(rng.randint(21, 300), extra))
        return plans


class ChildOutput:
    """Lines from the child's stdout pipe, read with deadlines via ``select``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buffer = b""
        self.eof = False

    def _fill(self, deadline: float) -> bool:
        """Read what is there; False if the deadline passed first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([self._fd], [], [], remaining)
        if not readable:
            return False
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.eof = True
        self._buffer += chunk
        return True

    def line(self, deadline: float) -> str | None:
        """The next whole line; None at end of file or when the deadline passes."""
        while b"\n" not in self._buffer:
            if self.eof or not self._fill(deadline):
                return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def lines_until(self, deadline: float) -> Iterator[str]:
        while (line := self.line(deadline)) is not None:
            yield line


def parse_line(line: str, round_: int) -> Ack | None:
    """An ``ack`` line as an :class:`Ack`; None for ``ready``; anything else fails."""
    if line == "ready":
        return None
    words = line.split()
    assert words[0] == "ack", f"unexpected line from the child: {line!r}"
    assert len(words) == 6, f"unexpected line from the child: {line!r}"
    ack = Ack(*(int(w) for w in words[1:]))
    assert ack.round == round_, f"ack of round {ack.round} in round {round_}"
    return ack


def run_and_kill(data: Path, round_: int, plan: KillPlan, stderr_path: Path) -> list[Ack]:
    """Run the child for one round, SIGKILL it as planned; every ack it wrote."""
    acks: list[Ack] = []
    ready = False
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(data), str(round_)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
    try:
        out = ChildOutput(proc)
        give_up = time.monotonic() + ROUND_TIMEOUT
        while plan.acks >= 0 and (not ready or len(acks) < plan.acks):
            line = out.line(give_up)
            assert line is not None, f"child ended or hung before the kill: {_tail(stderr_path)}"
            ack = parse_line(line, round_)
            if ack is None:
                ready = True
            else:
                acks.append(ack)
        # Keep reading (acks keep counting) for the extra time, then kill.
        for line in out.lines_until(time.monotonic() + plan.extra):
            ack = parse_line(line, round_)
            if ack is not None:
                acks.append(ack)
        os.kill(proc.pid, signal.SIGKILL)  # the child is not reaped yet: the pid is still its
        returncode = proc.wait(timeout=ROUND_TIMEOUT)
        assert returncode == -signal.SIGKILL, (
            f"child exited with {returncode} before the kill: {_tail(stderr_path)}"
        )
        # Lines written before the kill are acks too; a last partial line is not.
        for line in out.lines_until(time.monotonic() + ROUND_TIMEOUT):
            ack = parse_line(line, round_)
            if ack is not None:
                acks.append(ack)
        assert out.eof
        return acks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


@functools.cache
def expected_append(round_: int, task: int, seq: int) -> list[RecordFields]:
    """What the child's append ``seq`` of ``task`` in ``round_`` holds (cached across rounds)."""
    return [fields(r) for r in append_records(round_, task, seq)]


async def check_after_crash(
    data: Path, acks: list[Ack], previous: list[bytes | None], current_round: int
) -> list[bytes | None]:
    """Reopen after a kill and check everything; returns the keys found, by offset."""
    async with Journal.open(data, fsync="always") as journal:
        if STREAM not in journal.streams():  # every kill so far came before create_stream
            assert not acks, "acknowledged appends but the stream is gone"
            assert not previous, "the stream vanished"
            return []
        info = journal.stream_info(STREAM)
        assert info.quarantined == (), "a crash must never make a segment look corrupt"
        records = await read_all(journal)
        assert await journal.verify(STREAM) == []
    keys = [record.key for record in records]
    assert keys[: len(previous)] == previous, "records seen after an earlier crash changed"

    # Every record belongs to a whole append, appends of a task come in order
    # and without gaps, and every byte is what the generator made.
    next_seq: dict[tuple[int, int], int] = {}
    offset = 0
    while offset < len(records):
        round_, task, seq, index = parse_key(records[offset].key)
        assert round_ <= current_round, f"offset {offset}: record of a future round"
        assert index == 0, f"offset {offset}: append {round_}:{task}:{seq} starts mid-way"
        expected_seq = next_seq.get((round_, task), 0)
        assert seq == expected_seq, (
            f"offset {offset}: round {round_} task {task} append {seq} where "
            f"{expected_seq} was expected"
        )
        expected = expected_append(round_, task, seq)
        found = [fields(r) for r in records[offset : offset + len(expected)]]
        assert found == expected, f"offset {offset}: append {round_}:{task}:{seq} torn or altered"
        next_seq[(round_, task)] = seq + 1
        offset += len(expected)

    for ack in acks:
        expected = expected_append(ack.round, ack.task, ack.seq)
        assert ack.last_offset - ack.base_offset + 1 == len(expected), f"bad ack {ack}"
        found = [fields(r) for r in records[ack.base_offset : ack.last_offset + 1]]
        assert found == expected, f"acknowledged append {ack} lost or altered"
    return keys


@pytest.mark.slow
def test_sigkill_rounds(tmp_path: Path) -> None:
    rng = random.Random(0x5EED_C4A5)
    data = tmp_path / "data"
    acks: list[Ack] = []
    keys: list[bytes | None] = []
    truncated_rounds = unacked_rounds = 0
    for round_, plan in enumerate(KillPlan.draws(rng, ROUNDS)):
        new_acks = run_and_kill(data, round_, plan, tmp_path / f"child-{round_}.stderr")
        acks += new_acks
        size_before = _log_bytes(data)
        before = len(keys)
        keys = trio.run(check_after_crash, data, acks, keys, round_)
        truncated_rounds += _log_bytes(data) < size_before
        unacked_rounds += len(keys) - before > sum(
            a.last_offset - a.base_offset + 1 for a in new_acks
        )
    # The run must have exercised what it claims to: many acks, many rolls.
    assert len(acks) > 1000, f"only {len(acks)} appends acknowledged in {ROUNDS} rounds"
    assert len(segment_logs(data)) > 20
    print(
        f"{ROUNDS} rounds, {len(acks)} acked appends, {len(keys)} records, "
        f"{len(segment_logs(data))} segments; torn tails cut in {truncated_rounds} rounds, "
        f"unacknowledged appends kept in {unacked_rounds} rounds"
    )


def _log_bytes(data: Path) -> int:
    streams = data / "streams"
    return sum(p.stat().st_size for p in streams.glob("*/*.log")) if streams.exists() else 0


# -- torn tails and garbage ---------------------------------------------------

TAIL_CASES = [
    "random",
    "zeros",
    "torn_header",
    "torn_body",
    "bad_crc",
    "bad_crc_then_valid",
    "offset_gap",
]


def _records(round_: int, appends: int) -> list[list[Record]]:
    return [append_records(round_, 0, seq) for seq in range(appends)]


def _garbage(case: str, next_offset: int, rng: random.Random) -> bytes:
    """Bytes to put after the last good batch, for one case of :data:`TAIL_CASES`."""
    batch = encode_batch(append_records(99, 0, 0), next_offset, now_ms=1_700_000_000_000)
    batch2 = encode_batch(append_records(99, 0, 1), next_offset, now_ms=1_700_000_000_000)
    flipped = bytearray(batch)
    flipped[rng.randrange(21, len(batch))] ^= 1 << rng.randrange(8)  # CRC covers 21..end
    if case == "random":
        return rng.randbytes(rng.randint(1, 5000))
    if case == "zeros":
        return bytes(4096)
    if case == "torn_header":
        return batch[: rng.randint(1, HEADER_SIZE - 1)]
    if case == "torn_body":
        return batch[: rng.randint(HEADER_SIZE, len(batch) - 1)]
    if case == "bad_crc":
        return bytes(flipped)
    if case == "bad_crc_then_valid":
        return bytes(flipped) + batch2
    if case == "offset_gap":
        return encode_batch(append_records(99, 0, 0), next_offset + 5, now_ms=1_700_000_000_000)
    raise AssertionError(case)


async def _write_stream(
    data: Path, appends: list[list[Record]], *, fsync: FsyncPolicy, crash: bool, roll: bool
) -> list[RecordFields]:
    """Create the stream, append, then close cleanly or crash (``abandon``)."""
    written: list[RecordFields] = []
    async with Journal.open(data, fsync=fsync) as journal:
        await journal.create_stream(STREAM, CONFIG)
        for records in appends:
            result = await journal.append(STREAM, records)
            assert result.base_offset == len(written)
            written += [fields(r) for r in records]
        if roll:
            await journal.roll(STREAM)
        if crash:
            journal.abandon()
    return written


@pytest.mark.parametrize("roll", [False, True], ids=["in-segment", "fresh-segment"])
@pytest.mark.parametrize(
    ("fsync", "crash"), [("always", False), ("none", True)], ids=["closed", "crashed-unsynced"]
)
@pytest.mark.parametrize("case", TAIL_CASES)
async def test_torn_tail_is_truncated(
    tmp_path: Path, case: str, fsync: FsyncPolicy, crash: bool, roll: bool
) -> None:
    rng = random.Random(f"{case}-{fsync}-{roll}")
    data = tmp_path / "data"
    written = await _write_stream(data, _records(1, 20), fsync=fsync, crash=crash, roll=roll)
    active = segment_logs(data)[-1]
    good_end = active.stat().st_size
    assert (good_end == 0) == roll
    garbage = _garbage(case, len(written), rng)
    with active.open("ab") as f:
        f.write(garbage)

    async with Journal.open(data, fsync="always") as journal:
        assert active.stat().st_size == good_end, "the bad tail was not cut off"
        info = journal.stream_info(STREAM)
        assert info.next_offset == len(written)
        assert info.quarantined == ()
        assert [fields(r) for r in await read_all(journal)] == written
        more = append_records(2, 0, 0)
        result = await journal.append(STREAM, more)
        assert (result.base_offset, result.last_offset) == (
            len(written),
            len(written) + len(more) - 1,
        )
        written += [fields(r) for r in more]
        assert [fields(r) for r in await read_all(journal)] == written

    async with Journal.open(data, fsync="always") as journal:
        assert [fields(r) for r in await read_all(journal)] == written
        assert await journal.verify(STREAM) == []


@pytest.mark.parametrize(
    ("fsync", "crash"), [("always", False), ("none", True)], ids=["closed", "crashed-unsynced"]
)
async def test_complete_batch_past_checkpoint_is_kept(
    tmp_path: Path, fsync: FsyncPolicy, crash: bool
) -> None:
    """The control for the torn-tail cases: a whole, valid, contiguous batch that
    reached the file but not the checkpoint is data, not garbage."""
    data = tmp_path / "data"
    written = await _write_stream(data, _records(1, 20), fsync=fsync, crash=crash, roll=False)
    extra = append_records(99, 0, 0)
    with segment_logs(data)[-1].open("ab") as f:
        f.write(encode_batch(extra, len(written), now_ms=1_700_000_000_000))
    written += [fields(r) for r in extra]

    async with Journal.open(data, fsync="always") as journal:
        assert journal.stream_info(STREAM).next_offset == len(written)
        assert [fields(r) for r in await read_all(journal)] == written
        result = await journal.append(STREAM, [Record(value=b"after")])
        assert result.base_offset == len(written)


# -- bit rot in a sealed segment ----------------------------------------------


async def _write_segments(data: Path, segments: int, appends: int) -> list[RecordFields]:
    """``segments`` segments of ``appends`` appends each, rolled by hand; the last is active."""
    written: list[RecordFields] = []
    config = StreamConfig(segment_bytes=16 << 20, index_interval_bytes=512)
    async with Journal.open(data, fsync="always") as journal:
        await journal.create_stream(STREAM, config)
        ts = 1_700_000_000_000
        for segment in range(segments):
            for seq in range(appends):
                records = append_records(10 + segment, 0, seq)
                for record in records:
                    record.timestamp = ts
                    ts += 7
                await journal.append(STREAM, records)
                written += [fields(r) for r in records]
            if segment < segments - 1:
                await journal.roll(STREAM)
    assert len(segment_logs(data)) == segments
    return written


def flip_bit(segment: Path, rng: random.Random, *, in_header: bool) -> tuple[int, BatchHeader]:
    """Flip one bit of a batch in ``segment``; returns that batch's position and header.

    In the header: the magic byte of the last batch, which the header walk at
    open reaches. Otherwise: inside the records of a batch in the middle, which
    only a CRC check finds.
    """
    spans = batch_spans(segment)
    if in_header:
        pos, header = spans[-1]
        flip_at = pos + 16
    else:
        pos, header = spans[len(spans) // 2]
        flip_at = rng.randrange(pos + HEADER_SIZE, pos + header.size)
    data = bytearray(segment.read_bytes())
    data[flip_at] ^= 1 << rng.randrange(8)
    segment.write_bytes(data)
    return pos, header


@pytest.mark.parametrize("where", ["payload-read", "payload-verify", "header"])
async def test_bit_flip_in_sealed_segment_is_quarantined(tmp_path: Path, where: str) -> None:
    rng = random.Random(where)
    data = tmp_path / "data"
    written = await _write_segments(data, segments=4, appends=25)
    logs = segment_logs(data)
    victim = logs[1]
    victim_base, victim_next = int(logs[1].stem), int(logs[2].stem)
    pos, header = flip_bit(victim, rng, in_header=where == "header")
    corrupt = victim.read_bytes()
    size = len(corrupt)

    def check_error(exc: StorageError, *, position: bool) -> None:
        assert exc.stream == STREAM
        assert exc.segment == victim.name
        if position:
            assert exc.position == pos, f"error at byte {exc.position}, batch at {pos}"

    async with Journal.open(data, fsync="always") as journal:
        info = journal.stream_info(STREAM)
        assert info.next_offset == len(written)
        if where == "header":
            assert info.quarantined == (victim.name,), "a broken header must be caught at open"
            with pytest.raises(CorruptSegmentError) as read_error:
                await journal.read(STREAM, header.base_offset)
            check_error(read_error.value, position=False)
            problems = await journal.verify(STREAM)
            assert len(problems) == 1
            check_error(problems[0], position=False)
        else:
            assert info.quarantined == (), "sealed segments must not be rescanned at open"
            # The batches before the flipped one are still served until it is found.
            before = await read_range(journal, victim_base, header.base_offset)
            assert [fields(r) for r in before] == written[victim_base : header.base_offset]
            if where == "payload-read":
                with pytest.raises(CorruptSegmentError) as read_error:
                    await journal.read(STREAM, header.base_offset)
                check_error(read_error.value, position=True)
                assert journal.stream_info(STREAM).quarantined == (victim.name,)
                problems = await journal.verify(STREAM)
                assert len(problems) == 1
                check_error(problems[0], position=False)
            else:
                problems = await journal.verify(STREAM)
                assert len(problems) == 1
                assert isinstance(problems[0], CorruptSegmentError)
                check_error(problems[0], position=True)
                assert journal.stream_info(STREAM).quarantined == (victim.name,)
                with pytest.raises(CorruptSegmentError) as read_error:
                    await journal.read(STREAM, header.base_offset)
                check_error(read_error.value, position=False)
        await _check_quarantined(journal, written, victim, victim_base, victim_next)
        more = [Record(value=b"after the quarantine", key=b"k")]
        result = await journal.append(STREAM, more)
        assert result.base_offset == len(written)
        written += [fields(r) for r in more]
        assert [fields(r) for r in await read_range(journal, victim_next, len(written))] == (
            written[victim_next:]
        )
    assert victim.stat().st_size == size, "a quarantined segment must not be truncated"
    assert victim.read_bytes() == corrupt, "a quarantined segment must be left as it is"

    async with Journal.open(data, fsync="always") as journal:
        assert journal.stream_info(STREAM).quarantined == (victim.name,)
        assert journal.stream_info(STREAM).next_offset == len(written)
        await _check_quarantined(journal, written, victim, victim_base, victim_next)
        problems = await journal.verify(STREAM)
        assert len(problems) == 1
        check_error(problems[0], position=False)
    assert victim.read_bytes() == corrupt


async def _check_quarantined(
    journal: Journal, written: list[RecordFields], victim: Path, base: int, next_base: int
) -> None:
    """The victim is never served, at any of its offsets; its neighbours are."""
    for offset in (base, (base + next_base) // 2, next_base - 1):
        with pytest.raises(CorruptSegmentError) as exc_info:
            await journal.read(STREAM, offset)
        assert exc_info.value.segment == victim.name
        with pytest.raises(CorruptSegmentError):
            await journal.read_batches(STREAM, offset)
    assert [fields(r) for r in await read_range(journal, 0, base)] == written[:base]
    end = journal.stream_info(STREAM).next_offset
    assert [fields(r) for r in await read_range(journal, next_base, end)] == written[next_base:end]


# -- damaged index files ------------------------------------------------------

INDEX_DAMAGE = [
    "both_missing",
    "index_missing",
    "timeindex_missing",
    "index_garbage",
    "none",
    "index_truncated",
    "index_garbage_same_size",
    "index_entry_off_by_one",
]


def _damage_index(segment: Path, damage: str, rng: random.Random) -> None:
    index, timeindex = segment.with_suffix(".index"), segment.with_suffix(".timeindex")
    size = index.stat().st_size
    if damage in ("both_missing", "index_missing"):
        index.unlink()
    if damage in ("both_missing", "timeindex_missing"):
        timeindex.unlink()
    if damage == "index_truncated":  # the first half of the entries and a torn one
        index.write_bytes(index.read_bytes()[: size // 2 + 3])
    if damage == "index_garbage":
        index.write_bytes(rng.randbytes(size // 2))
    if damage == "index_garbage_same_size":
        index.write_bytes(rng.randbytes(size))
    if damage == "index_entry_off_by_one":
        entries = bytearray(index.read_bytes())
        middle = (len(entries) // 8 // 2) * 8
        entries[middle + 4] ^= 1  # the low bit of that entry's byte position
        index.write_bytes(entries)


@pytest.mark.parametrize("damage", INDEX_DAMAGE)
async def test_damaged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    rng = random.Random(damage)
    data = tmp_path / "data"
    written = await _write_segments(data, segments=3, appends=40)
    logs = segment_logs(data)
    victim = logs[1]
    base, next_base = int(logs[1].stem), int(logs[2].stem)
    originals = {
        suffix: victim.with_suffix(suffix).read_bytes() for suffix in (".index", ".timeindex")
    }
    assert len(originals[".index"]) >= 5 * 8, "the test needs an index with several entries"
    _damage_index(victim, damage, rng)

    async with Journal.open(data, fsync="always") as journal:
        timestamps: list[int] = []
        for offset in range(base, next_base):
            records = await journal.read(STREAM, offset, max_bytes=1)
            assert records[0].offset == offset
            assert fields(records[0]) == written[offset]
            assert records[0].timestamp is not None
            timestamps.append(records[0].timestamp)
        assert all(b - a == 7 for a, b in itertools.pairwise(timestamps))
        for offset, ts in zip(range(base, next_base), timestamps, strict=True):
            assert await journal.offset_for_time(STREAM, ts) == offset
            assert await journal.offset_for_time(STREAM, ts - 1) == offset  # 7 ms apart
        assert journal.stream_info(STREAM).quarantined == ()
        assert [fields(r) for r in await read_all(journal)] == written
    for suffix, original in originals.items():
        assert victim.with_suffix(suffix).read_bytes() == original, f"{suffix} not rebuilt"


async def test_time_lookup_after_torn_tail_cut(tmp_path: Path) -> None:
    """After recovery cuts a torn tail, the records before it are still found by time."""
    data = tmp_path / "data"
    ts = 1_700_000_000_000
    async with Journal.open(data, fsync="always") as journal:
        await journal.create_stream(STREAM, CONFIG)
        for i in range(10):
            await journal.append(STREAM, [Record(value=bytes(100), timestamp=ts + 10 * i)])
    with segment_logs(data)[-1].open("ab") as f:
        f.write(bytes(100))  # zeros: the tail of a crash on a file system that extends first

    async with Journal.open(data, fsync="always") as journal:
        assert journal.stream_info(STREAM).next_offset == 10
        found = [await journal.offset_for_time(STREAM, ts + 10 * i) for i in range(10)]
        assert found == list(range(10))


async def test_read_stops_before_a_quarantined_segment(tmp_path: Path) -> None:
    """A read that starts in a good segment serves it up to the quarantined one."""
    data = tmp_path / "data"
    written = await _write_segments(data, segments=3, appends=10)
    logs = segment_logs(data)
    victim_base = int(logs[1].stem)
    flip_bit(logs[1], random.Random(1), in_header=False)
    async with Journal.open(data, fsync="always") as journal:
        assert await journal.verify(STREAM) != []
        assert journal.stream_info(STREAM).quarantined == (logs[1].name,)
        records = await journal.read(STREAM, victim_base - 1, max_bytes=1 << 20)
        assert [r.offset for r in records] == [victim_base - 1]
        assert fields(records[0]) == written[victim_base - 1]

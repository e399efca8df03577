"""Fault injection: what the journal promises when the disk misbehaves.

Faults are injected by wrapping ``os.fsync`` / ``os.pwrite`` (the journal
looks both up on the ``os`` module at call time) so that only one chosen file
fails, matched by device and inode whatever descriptor it is open under; every
other call goes to the real function. What is covered:

* a failed fsync (``EIO``) of one stream's active segment: the append raises
  ``StorageError``, the stream refuses appends until reopened (without
  retrying the fsync), another stream of the same journal keeps working, and
  after a reopen the acknowledged records are all there, intact;
* a failed write (a short ``pwrite``, then ``ENOSPC``) in the middle of an
  append of one batch or of several: the file is cut back to its old size,
  the next append gets the offset the failed one would have had, and only
  acknowledged records are ever read, before and after a reopen;
* a stream directory the catalog does not know (a deletion interrupted by a
  crash) is removed on open, and the streams the catalog knows are kept;
* a crash during a roll (the sealed segment's catalog entry lost, with the
  checkpoint kept or from before the roll): the segment is verified and
  sealed again; with a flipped bit it is quarantined and left untouched
  instead; a lost, empty active segment is recreated at the right offset.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from support import read_all

from journal import (
    CorruptSegmentError,
    Journal,
    Record,
    StorageError,
    StreamConfig,
)
from journal.catalog import Catalog, Checkpoint, SealedSegment
from journal.segments.batch import parse_header

STREAM = "s"
_CRC_START = 21  # RecordBatch v2: attributes onwards are covered by the CRC32C


class FakeClock:
    """Wall time in ms for ``Journal.open(clock=...)``: fixed, so batches are byte-stable."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _open(
    root: Path, clock: Callable[[], int] | None = None
) -> AbstractAsyncContextManager[Journal]:
    # The maintenance task never runs within a test: no background fsync or roll.
    return Journal.open(root, fsync="always", maintenance_interval=3600, clock=clock or FakeClock())


def _stream_dir(root: Path, name: str) -> Path:
    [directory] = [d for d in (root / "streams").iterdir() if d.name.split("-", 1)[1] == name]
    return directory


def _logs(root: Path, name: str) -> list[Path]:
    return sorted(_stream_dir(root, name).glob("*.log"))


def _values(records: list[Record]) -> list[bytes | None]:
    return [r.value for r in records]


def _offsets(records: list[Record]) -> list[int | None]:
    return [r.offset for r in records]


class FileFault:
    """Matches file descriptors of one file (by device and inode) and counts calls on it."""

    def __init__(self, path: Path) -> None:
        st = path.stat()
        self._file = (st.st_dev, st.st_ino)
        self.armed = True
        self.calls = 0  # calls on the file, armed or not

    def matches(self, fd: int) -> bool:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._file:
            return False
        self.calls += 1
        return True


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, fault: FileFault) -> None:
    """``os.fsync`` of the fault's file raises EIO while it is armed."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fault.matches(fd) and fault.armed:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


class DiskFull(FileFault):
    """``os.pwrite`` of one file fills the disk at byte ``limit``.

    A write crossing the limit is short (it stops at the limit); a write
    starting at or past it raises ENOSPC.
    """

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path)
        self.limit = limit
        self.full_writes = self.short_writes = self.enospc = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_pwrite = os.pwrite

        def pwrite(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
            if not (self.matches(fd) and self.armed):
                return real_pwrite(fd, data, offset)
            room = self.limit - offset
            if room <= 0:
                self.enospc += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if len(data) > room:
                self.short_writes += 1
                return real_pwrite(fd, memoryview(data)[:room], offset)
            self.full_writes += 1
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", pwrite)


# -- catalog surgery (the journal must be closed) ----------------------------------------


def _stream_id(catalog: Catalog, name: str) -> int:
    [stream_id] = [e.id for e in catalog.streams() if e.name == name]
    return stream_id


def _sealed(root: Path, name: str) -> dict[int, SealedSegment]:
    catalog = Catalog(root / "catalog")
    try:
        return catalog.sealed_segments(_stream_id(catalog, name))
    finally:
        catalog.close()


def _quarantined(root: Path, name: str) -> dict[int, str]:
    catalog = Catalog(root / "catalog")
    try:
        return catalog.quarantined(_stream_id(catalog, name))
    finally:
        catalog.close()


def _forget_sealed(root: Path, name: str, base: int, *, stale_checkpoint: bool) -> SealedSegment:
    """Undo the catalog writes of the roll that sealed ``base``, as a crash could."""
    catalog = Catalog(root / "catalog")
    try:
        stream_id = _stream_id(catalog, name)
        entry = catalog.sealed_segments(stream_id)[base]
        catalog.forget_segment(stream_id, base)
        if stale_checkpoint:  # the checkpoint the roll's own fsync wrote, before the seal
            catalog.set_checkpoint(
                stream_id, Checkpoint(base, entry.size, entry.next_offset)
            )  # fmt: skip
        assert base not in catalog.sealed_segments(stream_id)
        return entry
    finally:
        catalog.close()


def _flip_middle_bit(path: Path) -> bytes:
    """Flip one bit in the middle of a segment file (inside a CRC-covered range)."""
    data = bytearray(path.read_bytes())
    pos = len(data) // 2
    start = 0
    while not start <= pos < start + parse_header(data, start).size:
        start += parse_header(data, start).size
    assert pos >= start + _CRC_START, "the flip must land where the CRC32C would notice"
    data[pos] ^= 0x10
    path.write_bytes(data)
    return bytes(data)


# -- a failed fsync -----------------------------------------------------------------------


async def test_failed_fsync_fences_its_stream_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acked = [b"a0", b"a1", b"a2"]
    async with _open(tmp_path) as j:
        await j.create_stream("a")
        await j.create_stream("b")
        for value in acked:
            await j.append("a", [Record(value)])
        await j.append("b", [Record(b"b0")])
        [a_log] = _logs(tmp_path, "a")
        fault = FileFault(a_log)
        _fail_fsync(monkeypatch, fault)

        with pytest.raises(StorageError, match="fsync failed") as failed:
            await j.append("a", [Record(b"unacked")])
        assert (failed.value.stream, failed.value.segment) == ("a", a_log.name)
        assert fault.calls == 1
        # Never acknowledged, so never visible.
        assert j.stream_info("a").next_offset == len(acked)
        assert _values(await read_all(j, "a")) == acked

        # Refused until reopened, even with a healthy disk again: nothing is
        # written and the fsync is not retried (a retry can falsely succeed).
        fault.armed = False
        size = a_log.stat().st_size
        with pytest.raises(StorageError, match="fsync failed"):
            await j.append("a", [Record(b"refused")])
        with pytest.raises(StorageError, match="fsync failed"):
            await j.append("a", [Record(b"refused again")])
        assert a_log.stat().st_size == size
        assert fault.calls == 1

        # The other stream of the same journal is unaffected, fault armed or not.
        fault.armed = True
        assert (await j.append("b", [Record(b"b1")])).base_offset == 1
        assert _values(await read_all(j, "b")) == [b"b0", b"b1"]
        assert j.stream_info("b").next_offset == 2
    # Closing neither raises nor fsyncs the failed stream's segment again.
    assert fault.calls == 1
    fault.armed = False

    async with _open(tmp_path) as j:
        records = await read_all(j, "a")
        assert _values(records[: len(acked)]) == acked
        assert _offsets(records) == list(range(len(records)))
        # The failed append was never acknowledged: it may be kept whole or dropped.
        assert _values(records[len(acked) :]) in ([], [b"unacked"])
        assert await j.verify("a") == []
        # Reopened, the stream takes appends again, right after what it holds.
        assert (await j.append("a", [Record(b"a3")])).base_offset == len(records)
        assert _values(await read_all(j, "b")) == [b"b0", b"b1"]


async def test_reopen_after_failed_fsync_serves_only_fsynced_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _open(tmp_path) as j:
        await j.create_stream(STREAM)
        await j.append(STREAM, [Record(b"acked")])
        [log] = _logs(tmp_path, STREAM)
        fault = FileFault(log)
        _fail_fsync(monkeypatch, fault)
        with pytest.raises(StorageError, match="fsync failed"):
            await j.append(STREAM, [Record(b"unacked")])
    fault.armed = False
    fault.calls = 0

    async with _open(tmp_path) as j:
        visible = _values(await read_all(j, STREAM))
        # Serving b"unacked" is only safe once an fsync of the file has succeeded.
        assert visible == [b"acked"] or fault.calls > 0, (visible, fault.calls)


# -- a failed write -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("whole", "room"),
    [
        pytest.param(0, 40, id="one-batch-torn"),
        pytest.param(1, 250, id="second-of-three-batches-torn"),
    ],
)
async def test_failed_write_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: int, room: int
) -> None:
    # With max_batch_bytes=200 each 100-byte record is a batch of its own (~170 bytes),
    # so `room` lets the three-batch append write its first batch whole before failing.
    config = StreamConfig(max_batch_bytes=200)
    acked = [Record(b"first"), Record(b"second")]
    value_size = 100 if whole else 8
    doomed = [Record(bytes([65 + i]) * value_size) for i in range(3)]
    retry = [Record(b"retry")]
    async with _open(tmp_path) as j:
        await j.create_stream(STREAM, config)
        assert (await j.append(STREAM, acked)).base_offset == 0
        [log] = _logs(tmp_path, STREAM)
        size = log.stat().st_size
        base = j.stream_info(STREAM).next_offset
        disk = DiskFull(log, limit=size + room)
        disk.install(monkeypatch)

        with pytest.raises(StorageError, match="write failed") as failed:
            await j.append(STREAM, doomed)
        assert isinstance(failed.value.__cause__, OSError)
        assert failed.value.__cause__.errno == errno.ENOSPC
        # The fault really struck mid-append: batches before it whole, then a short write.
        assert (disk.full_writes, disk.short_writes, disk.enospc) == (whole, 1, 1)
        assert log.stat().st_size == size
        assert j.stream_info(STREAM).next_offset == base
        assert _values(await read_all(j, STREAM)) == _values(acked)

        disk.armed = False
        assert (await j.append(STREAM, retry)).base_offset == base
        records = await read_all(j, STREAM)
        assert _values(records) == _values(acked + retry)
        assert _offsets(records) == list(range(len(acked) + len(retry)))
        assert log.stat().st_size == j.stream_info(STREAM).size_bytes
        assert await j.verify(STREAM) == []

    async with _open(tmp_path) as j:
        records = await read_all(j, STREAM)
        assert _values(records) == _values(acked + retry)
        assert _offsets(records) == list(range(len(acked) + len(retry)))
        assert await j.verify(STREAM) == []


async def test_failed_write_leaves_no_timestamp_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(100_000)
    config = StreamConfig(max_batch_bytes=200, retention_ms=10_000)
    async with _open(tmp_path, clock) as j:
        await j.create_stream(STREAM, config)
        await j.append(STREAM, [Record(b"old", timestamp=50_000)])
        [log] = _logs(tmp_path, STREAM)
        disk = DiskFull(log, limit=log.stat().st_size + 250)
        disk.install(monkeypatch)
        doomed = [Record(bytes([65 + i]) * 100, timestamp=95_000) for i in range(3)]
        with pytest.raises(StorageError, match="write failed"):
            await j.append(STREAM, doomed)
        assert (disk.full_writes, disk.short_writes) == (1, 1)
        disk.armed = False
        await j.roll(STREAM)
        # The sealed segment holds one record, of time 50_000: past retention at 100_000.
        assert _values(await read_all(j, STREAM)) == [b"old"]
        assert await j.apply_retention(STREAM) == 1
        assert j.stream_info(STREAM).first_offset == 1


# -- orphaned stream directories ----------------------------------------------------------


async def test_orphan_stream_directory_is_removed_on_open(tmp_path: Path) -> None:
    async with _open(tmp_path) as j:
        await j.create_stream("kept")
        await j.create_stream("dropped")
        await j.append("kept", [Record(b"k0"), Record(b"k1")])
        await j.roll("kept")
        await j.append("kept", [Record(b"k2")])
        await j.append("dropped", [Record(b"d0")])
    kept_dir, dropped_dir = _stream_dir(tmp_path, "kept"), _stream_dir(tmp_path, "dropped")
    kept_logs = {p.name: p.read_bytes() for p in kept_dir.glob("*.log")}
    assert len(kept_logs) == 2
    # delete_stream interrupted by a crash: the catalog forgot the stream, its files remain.
    catalog = Catalog(tmp_path / "catalog")
    try:
        [entry] = [e for e in catalog.streams() if e.name == "dropped"]
        catalog.remove_stream(entry)
    finally:
        catalog.close()
    stray = tmp_path / "streams" / "000999-never-in-catalog"
    stray.mkdir()
    (stray / f"{0:020d}.log").write_bytes(b"not a batch")

    async with _open(tmp_path) as j:
        assert not dropped_dir.exists()
        assert not stray.exists()
        assert j.streams() == ["kept"]
        assert {p.name: p.read_bytes() for p in kept_dir.glob("*.log")} == kept_logs
        assert _values(await read_all(j, "kept")) == [b"k0", b"k1", b"k2"]
        # The name is free again, and nothing of the old files comes back with it.
        await j.create_stream("dropped")
        assert j.stream_info("dropped").next_offset == 0
        assert await read_all(j, "dropped") == []
        new_dropped_dir = _stream_dir(tmp_path, "dropped")
    assert new_dropped_dir != dropped_dir
    assert sorted(p.name for p in (tmp_path / "streams").iterdir()) == sorted(
        [kept_dir.name, new_dropped_dir.name]
    )


# -- a crash during a roll ----------------------------------------------------------------

_BEFORE_ROLL = [[b"r0", b"r1", b"r2"], [b"r3"]]  # two batches in the segment that is sealed
_AFTER_ROLL = [[b"r4", b"r5"]]
_ALL = [v for batch in _BEFORE_ROLL + _AFTER_ROLL for v in batch]


async def _write_and_roll(root: Path, after_roll: list[list[bytes]]) -> list[Path]:
    """Append, roll, append ``after_roll``, close; returns the stream's .log files."""
    async with _open(root) as j:
        await j.create_stream(STREAM)
        for values in _BEFORE_ROLL:
            await j.append(STREAM, [Record(v) for v in values])
        await j.roll(STREAM)
        for values in after_roll:
            await j.append(STREAM, [Record(v) for v in values])
    logs = _logs(root, STREAM)
    assert [int(p.stem) for p in logs] == [0, sum(map(len, _BEFORE_ROLL))]
    return logs


@pytest.mark.parametrize("stale_checkpoint", [False, True], ids=["checkpoint-kept", "stale"])
async def test_segment_rolled_but_not_in_catalog_is_sealed_again(
    tmp_path: Path, stale_checkpoint: bool
) -> None:
    sealed_log, _ = await _write_and_roll(tmp_path, _AFTER_ROLL)
    entry = _forget_sealed(tmp_path, STREAM, 0, stale_checkpoint=stale_checkpoint)
    assert entry.size == sealed_log.stat().st_size
    content = sealed_log.read_bytes()

    async with _open(tmp_path) as j:
        info = j.stream_info(STREAM)
        assert (info.first_offset, info.next_offset, info.segment_count) == (0, len(_ALL), 2)
        assert info.quarantined == ()
        records = await read_all(j, STREAM)
        assert _values(records) == _ALL
        assert _offsets(records) == list(range(len(_ALL)))
        assert await j.verify(STREAM) == []
        assert (await j.append(STREAM, [Record(b"r6")])).base_offset == len(_ALL)
    assert sealed_log.read_bytes() == content
    # Sealed again, with the very entry the roll had written.
    assert _sealed(tmp_path, STREAM) == {0: entry}

    async with _open(tmp_path) as j:
        assert _values(await read_all(j, STREAM)) == [*_ALL, b"r6"]


async def test_corrupt_segment_rolled_but_not_in_catalog_is_quarantined(tmp_path: Path) -> None:
    sealed_log, active_log = await _write_and_roll(tmp_path, _AFTER_ROLL)
    _forget_sealed(tmp_path, STREAM, 0, stale_checkpoint=False)
    corrupt = _flip_middle_bit(sealed_log)
    first_active = int(active_log.stem)

    for _reopen in range(2):  # the quarantine is recorded: it holds on the next open too
        async with _open(tmp_path) as j:
            info = j.stream_info(STREAM)
            assert info.quarantined == (sealed_log.name,)
            assert (info.first_offset, info.next_offset) == (0, len(_ALL))
            with pytest.raises(CorruptSegmentError) as error:
                await j.read(STREAM, 0)
            assert (error.value.stream, error.value.segment) == (STREAM, sealed_log.name)
            # The segments after it are served.
            records = await j.read(STREAM, first_active)
            assert _values(records) == _ALL[first_active:]
        # Kept for an operator: never truncated, not a byte changed.
        assert sealed_log.read_bytes() == corrupt
    assert 0 in _quarantined(tmp_path, STREAM)
    assert 0 not in _sealed(tmp_path, STREAM)


async def test_lost_empty_active_segment_is_recreated(tmp_path: Path) -> None:
    sealed_log, active_log = await _write_and_roll(tmp_path, [])
    assert active_log.stat().st_size == 0
    active_log.unlink()
    next_offset = len(_ALL) - sum(map(len, _AFTER_ROLL))

    async with _open(tmp_path) as j:
        info = j.stream_info(STREAM)
        assert (info.first_offset, info.next_offset, info.segment_count) == (0, next_offset, 2)
        assert active_log.exists()
        assert (await j.append(STREAM, [Record(b"r4")])).base_offset == next_offset
        records = await read_all(j, STREAM)
        assert _values(records) == _ALL[: next_offset + 1]
        assert _offsets(records) == list(range(next_offset + 1))
    assert _logs(tmp_path, STREAM) == [sealed_log, active_log]

    async with _open(tmp_path) as j:
        assert _values(await read_all(j, STREAM)) == _ALL[: next_offset + 1]
        assert (await j.append(STREAM, [Record(b"r5")])).base_offset == next_offset + 1

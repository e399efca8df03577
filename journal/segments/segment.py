"""One segment: a ``.log`` file of batches laid end to end, plus its indexes.

A segment is named by its base offset (``00000000000000000042.log``) and holds
contiguous offsets. Only the newest segment of a stream is *active* (written
to); the others are *sealed*: fsynced, indexed, recorded in the catalog and
never written again.

All calls here are synchronous. Writes go to the page cache (cheap); the
caller sends :func:`os.fsync` on :attr:`Segment.fd` to a worker thread. Reads
use :func:`os.pread`, so readers never share a file position with the writer.

Opening a segment after a crash is :meth:`Segment.recover`: the rules are in
``docs/architecture.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from journal.errors import InvalidBatchError, StorageError
from journal.segments.batch import HEADER_SIZE, BatchHeader, check_batch, parse_header
from journal.segments.index import SparseIndex

__all__ = ["ScanResult", "Segment", "pread_of", "scan_batches", "segment_name"]

_CHUNK = 1 << 20


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


@dataclass(slots=True)
class ScanResult:
    """Where a scan stopped and why: ``error`` is None when it reached ``end``."""

    position: int
    next_offset: int
    error: str | None = None


def pread_of(fd: int) -> Callable[[int, int], bytes]:
    """A ``read(position, length)`` over a file descriptor, for :func:`scan_batches`."""
    return lambda position, length: os.pread(fd, length, position)


def scan_batches(
    read: Callable[[int, int], bytes],
    start: int,
    end: int,
    next_offset: int,
    *,
    verify: bool,
    on_batch: Callable[[int, BatchHeader], bool | None],
) -> ScanResult:
    """Walk the batches in bytes ``start:end`` of ``read``, calling ``on_batch`` for each good one.

    With ``verify`` every batch's CRC32C is checked, otherwise only headers are
    read. The walk stops at the first batch that is torn, fails its checks or
    does not continue the offsets; the result says where. ``on_batch``
    returning true stops the walk after that batch.
    """
    pos = start
    buf = b""
    buf_start = start
    while pos < end:
        rel = pos - buf_start
        if len(buf) - rel < HEADER_SIZE:
            buf = read(pos, min(_CHUNK, end - pos))
            buf_start, rel = pos, 0
        try:
            header = parse_header(buf, rel)
            if verify:
                if len(buf) - rel < header.size:
                    buf = read(pos, min(max(_CHUNK, header.size), end - pos))
                    buf_start, rel = pos, 0
                check_batch(buf, rel)
            elif pos + header.size > end:
                raise InvalidBatchError("truncated batch", position=rel)
        except InvalidBatchError as exc:
            return ScanResult(pos, next_offset, exc.reason)
        if header.base_offset != next_offset:
            return ScanResult(
                pos, next_offset, f"offset {header.base_offset} where {next_offset} was expected"
            )
        stop = on_batch(pos, header)
        pos += header.size
        next_offset = header.next_offset
        if stop:
            break
    return ScanResult(pos, next_offset)


class Segment:
    """A segment file open for reading (and, when active, appending)."""

    __slots__ = (
        "base_offset",
        "created_ms",
        "fd",
        "index",
        "index_flushed",
        "next_offset",
        "path",
        "quarantined",
        "retired",
        "sealed",
        "size",
        "users",
    )

    tier = "local"
    key = None  # only object-tier segments have one

    def __init__(
        self, path: Path, base_offset: int, fd: int, index: SparseIndex, *, sealed: bool
    ) -> None:
        self.path = path
        self.base_offset = base_offset
        self.fd = fd
        self.index = index
        self.sealed = sealed
        self.size = 0
        self.next_offset = base_offset
        self.created_ms: int | None = None  # wall time of the first batch written
        self.quarantined: str | None = None
        self.index_flushed = 0  # entries already written to the index files
        self.users = 0  # readers that await while using ``fd`` (see :meth:`pinned`)
        self.retired = False  # close ``fd`` once the last user is done

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, index_interval: int) -> Segment:
        path = directory / f"{segment_name(base_offset)}.log"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        for suffix in (".index", ".timeindex"):
            path.with_suffix(suffix).unlink(missing_ok=True)
        return cls(path, base_offset, fd, SparseIndex(base_offset, index_interval), sealed=False)

    @classmethod
    def recover(
        cls,
        path: Path,
        base_offset: int,
        index_interval: int,
        *,
        trusted: int,
        trusted_next: int,
        sealed: bool,
        stream: str,
    ) -> tuple[Segment, ScanResult]:
        """Open an existing segment file and bring its index up to date.

        Bytes before ``trusted`` (the recovery point, or the sealed size) were
        fsynced and verified: only their headers are walked, and only past the
        last usable index entry. Bytes after it are CRC-checked batch by batch.
        The returned :class:`ScanResult` says where good data ends; the caller
        decides whether to truncate (active segment) or quarantine (sealed).
        """
        flags = os.O_RDONLY if sealed else os.O_RDWR
        fd = os.open(path, flags | os.O_CLOEXEC)
        try:
            file_size = os.fstat(fd).st_size
            offsets = _read_or_empty(path.with_suffix(".index"))
            times = _read_or_empty(path.with_suffix(".timeindex"))
            index = SparseIndex.from_files(
                base_offset, index_interval, offsets, times, limit=min(trusted, file_size)
            )
            seg = cls(path, base_offset, fd, index, sealed=sealed)
            walk_from, walk_offset = seg._resume_point()
            read = pread_of(fd)
            result = scan_batches(
                read, walk_from, trusted, walk_offset, verify=False, on_batch=seg._observe
            )
            if result.error is not None or result.next_offset != trusted_next:
                # The recovery point or the index disagrees with the file.
                problem = result.error or f"log ends at offset {result.next_offset}"
                seg.index = SparseIndex(base_offset, index_interval)
                result = scan_batches(
                    read, 0, file_size, base_offset, verify=not sealed, on_batch=seg._observe
                )
                if sealed:
                    result.error = f"sealed segment disagrees with the catalog: {problem}"
            elif result.position < file_size:
                if sealed:
                    result.error = f"sealed segment has {file_size - trusted} unexpected bytes"
                else:
                    result = scan_batches(
                        read, trusted, file_size, result.next_offset,
                        verify=True, on_batch=seg._observe,
                    )  # fmt: skip
            seg.size = result.position
            seg.next_offset = result.next_offset
            if sealed and result.error is None and seg.index.encode() != (offsets, times):
                seg.flush_index(sync=True)  # the index files were missing or damaged
            elif sealed:
                seg.index_flushed = len(seg.index)
            return seg, result
        except OSError as exc:
            os.close(fd)
            raise StorageError(
                f"cannot recover segment: {exc}", stream=stream, segment=path.name
            ) from exc
        except BaseException:
            os.close(fd)
            raise

    def _resume_point(self) -> tuple[int, int]:
        """Where the header walk starts: the last index entry, checked against the log."""
        last = self.index.last_entry()
        while last is not None:
            offset, pos = last
            try:
                header = parse_header(os.pread(self.fd, HEADER_SIZE, pos), 0)
            except InvalidBatchError:
                header = None
            self.index.truncate(pos)  # re-observed by the walk, with its timestamp
            if header is not None and header.base_offset == offset:
                return pos, offset
            last = self.index.last_entry()
        return 0, self.base_offset

    def _observe(self, pos: int, header: BatchHeader) -> bool:
        self.index.observe(pos, header.base_offset, header.max_timestamp)
        return False

    @property
    def name(self) -> str:
        return self.path.name

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Keep ``fd`` open across awaits (a worker-thread scan, an upload)."""
        self.users += 1
        try:
            yield
        finally:
            self.users -= 1
            if self.retired and not self.users:
                self.close()

    def remove(self) -> None:
        """Delete the segment's files (retention, migration); close once unpinned."""
        for suffix in (".log", ".index", ".timeindex"):
            self.path.with_suffix(suffix).unlink(missing_ok=True)
        self.retire()

    def retire(self) -> None:
        """No new reads: close ``fd`` now, or when the last pinned user is done."""
        self.retired = True
        if not self.users:
            self.close()

    def file_size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, position: int) -> None:
        """Cut the active segment at ``position`` (recovery of a torn tail)."""
        os.ftruncate(self.fd, position)
        self.size = position
        self.index.truncate(position)
        self.index_flushed = min(self.index_flushed, len(self.index))

    # -- writing --------------------------------------------------------------

    def write(self, batch: bytes | bytearray, header: BatchHeader) -> None:
        """Append one batch (already carrying its offsets) to the page cache."""
        pos = self.size
        view = memoryview(batch)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(self.fd, view[written:], pos + written)
        except OSError:
            os.ftruncate(self.fd, pos)
            raise
        self.size = pos + len(view)
        self.next_offset = header.next_offset
        self.index.observe(pos, header.base_offset, header.max_timestamp)

    def rebuild_index(self) -> str | None:
        """Rebuild the index by walking every header; returns the problem found, if any."""
        index = SparseIndex(self.base_offset, self.index.interval)

        def observe(pos: int, header: BatchHeader) -> bool:
            index.observe(pos, header.base_offset, header.max_timestamp)
            return False

        result = scan_batches(
            pread_of(self.fd), 0, self.size, self.base_offset, verify=False, on_batch=observe
        )
        if result.error is not None or result.position != self.size:
            return result.error or "the log ends before its recorded size"
        self.index = index
        self.index_flushed = 0
        self.flush_index(sync=self.sealed)
        return None

    def flush_index(self, *, sync: bool = False) -> None:
        """Write index entries not yet in the index files (fsync when sealing)."""
        offsets, times = self.index.encode(self.index_flushed)
        mode = "ab" if self.index_flushed else "wb"
        for suffix, data in ((".index", offsets), (".timeindex", times)):
            with open(self.path.with_suffix(suffix), mode) as f:
                f.write(data)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
        self.index_flushed = len(self.index)

    # -- reading --------------------------------------------------------------

    def read(self, position: int, length: int) -> bytes:
        return os.pread(self.fd, length, position)

    async def fetch(self, position: int, length: int) -> bytes:
        """:meth:`read` for the tier-agnostic read path; never yields (page cache)."""
        return self.read(position, length)

    async def ready(self) -> None:
        """Local segments always have their index at hand."""

    @property
    def max_timestamp(self) -> int:
        return self.index.max_timestamp

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""

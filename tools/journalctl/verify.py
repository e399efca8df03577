"""``strata-journal --verify``: check every segment on every tier against a scan.

For each segment: the file or object is there; every batch parses, is whole,
passes its CRC32C and continues the offsets; the scan ends exactly at the end
of the data; a sealed segment's size, next offset and max timestamp agree
with the catalog, and an object's CRC32C of the whole log with the one
recorded at upload; the ``.index``/``.timeindex`` files (objects) exist and
hold exactly the entries a scan rebuilds (for the active segment, whose
index is flushed in groups, a prefix of them). Across segments the offsets
must be contiguous. Quarantined segments count as problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from crc32c import crc32c

from journal.segments.index import SparseIndex
from tools.journalctl.reader import Cursor, DataDir, DataDirError, SegmentView, StreamView

__all__ = ["Problem", "verify"]


@dataclass(frozen=True, slots=True)
class Problem:
    stream: str
    segment: str
    position: int | None
    message: str

    def __str__(self) -> str:
        where = "" if self.position is None else f" position {self.position}"
        return f"stream {self.stream} segment {self.segment}{where}: {self.message}"


def verify(dd: DataDir, streams: list[StreamView], out: TextIO) -> int:
    total = 0
    for stream in streams:
        problems, batches, segs = _verify_stream(dd, stream)
        for problem in problems:
            out.write(f"PROBLEM {problem}\n")
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        out.write(f"{stream.name}: {segs} segments, {batches} batches checked: {status}\n")
        total += len(problems)
    out.flush()
    return 1 if total else 0


def _verify_stream(dd: DataDir, stream: StreamView) -> tuple[list[Problem], int, int]:
    problems: list[Problem] = []
    batches = 0
    segs = dd.segments(stream)
    expected: int | None = None
    for seg in segs:

        def problem(position: int | None, message: str, seg: SegmentView = seg) -> None:
            problems.append(Problem(stream.name, seg.where, position, message))

        if seg.quarantined is not None:
            problem(None, f"quarantined: {seg.quarantined}")
        if expected is not None and seg.base_offset != expected:
            problem(0, f"offsets not contiguous: segment starts at {seg.base_offset}, "
                       f"previous one ends before {expected}")  # fmt: skip
        if seg.sealed and seg.tier == "local" and seg.path is None:
            problem(None, "in the catalog as a local segment, but its file is missing")
            expected = seg.next_offset
            continue
        if not seg.sealed and seg.tier == "local":
            problem(None, "a local segment that is neither the active one nor in the catalog")
        try:
            data = dd.segment_bytes(seg)
        except DataDirError as exc:
            problem(None, str(exc))
            expected = seg.next_offset
            continue
        if data is None:
            problem(None, "missing" if seg.key is None else f"object {seg.key}.log is missing")
            expected = seg.next_offset
            continue
        if seg.sealed and len(data) != seg.size:
            problem(len(data), f"size {len(data)} but the catalog says {seg.size}")
        if seg.crc32c is not None and crc32c(data) != seg.crc32c:
            problem(None, f"object CRC32C {crc32c(data):#010x}, "
                          f"recorded at upload {seg.crc32c:#010x}")  # fmt: skip
        cursor = Cursor(0, seg.base_offset)
        rebuilt = SparseIndex(seg.base_offset, stream.config.index_interval_bytes)
        for item in dd.walk(seg, cursor):
            batches += 1
            if item.error is not None:
                problem(item.position, f"batch at offset {item.header.base_offset}: {item.error}")
            rebuilt.observe(item.position, item.header.base_offset, item.header.max_timestamp)
        if cursor.error is not None:
            kind = "torn tail" if cursor.torn else "bad batch"
            unread = len(data) - cursor.position
            problem(cursor.position, f"{kind}: {cursor.error} ({unread} bytes not readable)")
        if seg.sealed:
            if cursor.next_offset != seg.next_offset:
                problem(cursor.position, f"scan ends before offset {cursor.next_offset}, "
                                         f"the catalog says {seg.next_offset}")  # fmt: skip
            if seg.max_timestamp is not None and rebuilt.max_timestamp != seg.max_timestamp:
                problem(None, f"max timestamp {rebuilt.max_timestamp}, "
                              f"the catalog says {seg.max_timestamp}")  # fmt: skip
        _check_index(dd, seg, stream, rebuilt, len(data), problem)
        expected = cursor.next_offset if seg.next_offset is None else seg.next_offset
    return problems, batches, len(segs)


def _check_index(
    dd: DataDir,
    seg: SegmentView,
    stream: StreamView,
    rebuilt: SparseIndex,
    size: int,
    problem: Callable[[int | None, str], None],
) -> None:
    files: dict[str, bytes | None] = {}
    for suffix in (".index", ".timeindex"):
        if seg.key is not None:
            try:
                files[suffix] = dd.fetch_object(seg.key + suffix)
            except DataDirError as exc:
                problem(None, str(exc))
                return
        elif seg.path is not None:
            path = seg.path.with_suffix(suffix)
            files[suffix] = path.read_bytes() if path.exists() else None
    offsets, times = files.get(".index"), files.get(".timeindex")
    if seg.tier == "memory" and offsets is None and times is None:
        return  # the active segment's index may not be written yet
    for suffix, raw in ((".index", offsets), (".timeindex", times)):
        if raw is None:
            problem(0, f"{suffix} {'object' if seg.key else 'file'} is missing")
    if offsets is None or times is None:
        return
    loaded = SparseIndex.from_files(
        seg.base_offset, stream.config.index_interval_bytes, offsets, times, size
    )
    n_files = min(len(offsets) // 8, len(times) // 12)
    if len(loaded) < n_files:
        problem(None, f"index entry {len(loaded)} of {n_files} fails its sanity checks")
    want = list(zip(rebuilt.relative, rebuilt.positions, rebuilt.times, strict=True))
    have = list(zip(loaded.relative, loaded.positions, loaded.times, strict=True))
    if seg.tier == "memory":
        want = want[: len(have)]
    for i, (h, w) in enumerate(zip(have, want, strict=False)):
        if h != w:
            problem(w[1], f"index entry {i} is (offset +{h[0]}, position {h[1]}, time {h[2]}), "
                          f"a scan gives (+{w[0]}, {w[1]}, {w[2]})")  # fmt: skip
            return
    if len(have) != len(want):
        problem(None, f"index has {len(have)} entries, a scan gives {len(want)}")

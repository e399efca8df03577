"""The sparse offset and time indexes kept beside each segment.

One entry is taken at a batch boundary whenever at least ``interval`` bytes of
log have passed since the previous entry (and always for the first batch). An
entry holds three facts about that boundary:

* the batch's offset, relative to the segment's base offset;
* its byte position in the ``.log`` file;
* the largest timestamp of every batch *before* it in the segment.

Offsets and positions go to ``<base>.index`` (``<II`` pairs); timestamps and
relative offsets to ``<base>.timeindex`` (``<qI`` pairs). Both files are
derived data: they are rebuilt from the log whenever they are missing or fail
:meth:`SparseIndex.from_files`' sanity checks, so they are written without
fsync except when a segment is sealed.

A lookup returns the position of the last entry at or before the target; the
reader walks batch headers from there, at most ``interval`` bytes.

Pure code: no I/O.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right

__all__ = ["OFFSET_ENTRY", "TIME_ENTRY", "SparseIndex"]

OFFSET_ENTRY = struct.Struct("<II")
TIME_ENTRY = struct.Struct("<qI")
_NO_TIMESTAMP = -1


class SparseIndex:
    """Sampled (relative offset, position, max timestamp before) entries."""

    __slots__ = ("base_offset", "interval", "max_timestamp", "positions", "relative", "times")

    def __init__(self, base_offset: int, interval: int) -> None:
        self.base_offset = base_offset
        self.interval = interval
        self.relative = array("I")
        self.positions = array("I")
        self.times = array("q")
        self.max_timestamp = _NO_TIMESTAMP

    def __len__(self) -> int:
        return len(self.positions)

    def observe(self, position: int, base_offset: int, max_timestamp: int) -> None:
        """Account for a batch appended at ``position``; called for every batch."""
        if not self.positions or position - self.positions[-1] >= self.interval:
            self.relative.append(base_offset - self.base_offset)
            self.positions.append(position)
            self.times.append(self.max_timestamp)
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp

    def entry_for_offset(self, offset: int) -> tuple[int, int]:
        """(offset, position) of a batch boundary from which a header walk finds ``offset``."""
        i = bisect_right(self.relative, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative[i], self.positions[i]

    def entry_for_time(self, timestamp: int) -> tuple[int, int]:
        """(offset, position) of a boundary before which no batch reaches ``timestamp``."""
        i = bisect_left(self.times, timestamp) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative[i], self.positions[i]

    def truncate(self, position: int) -> None:
        """Forget entries at or after ``position``, a batch boundary.

        The first forgotten entry knew the largest timestamp before it; that is
        exact when ``position`` is an entry's own position (the callers' case:
        recovery resumes at an entry, and a torn tail is cut after the last
        entry it observed).
        """
        keep = bisect_left(self.positions, position)
        if keep < len(self.positions):
            self.max_timestamp = self.times[keep]
            del self.relative[keep:], self.positions[keep:], self.times[keep:]

    def last_entry(self) -> tuple[int, int] | None:
        """(offset, position) of the newest entry, for a walk that resumes there."""
        if not self.positions:
            return None
        return self.base_offset + self.relative[-1], self.positions[-1]

    # -- files ----------------------------------------------------------------

    def encode(self, start: int = 0) -> tuple[bytes, bytes]:
        """The entries from ``start`` on, as (.index bytes, .timeindex bytes)."""
        offsets = b"".join(
            OFFSET_ENTRY.pack(r, p)
            for r, p in zip(self.relative[start:], self.positions[start:], strict=True)
        )
        times = b"".join(
            TIME_ENTRY.pack(t, r)
            for t, r in zip(self.times[start:], self.relative[start:], strict=True)
        )
        return offsets, times

    @classmethod
    def from_files(
        cls, base_offset: int, interval: int, offsets: bytes, times: bytes, limit: int
    ) -> SparseIndex:
        """Load the entries that pass the sanity checks and lie before ``limit``.

        Entries must be strictly increasing in offset and position, start at
        position 0, and agree between the two files; the first entry that does
        not ends the load (a torn write leaves zeros, which fail these checks).
        ``max_timestamp`` is only known up to the last entry: the caller walks
        the batches after it.
        """
        index = cls(base_offset, interval)
        n = min(len(offsets) // OFFSET_ENTRY.size, len(times) // TIME_ENTRY.size)
        prev_rel = prev_pos = prev_ts = -1
        for i in range(n):
            rel, pos = OFFSET_ENTRY.unpack_from(offsets, i * OFFSET_ENTRY.size)
            ts, trel = TIME_ENTRY.unpack_from(times, i * TIME_ENTRY.size)
            ok = trel == rel and pos < limit and ts >= prev_ts
            ok = ok and ((i == 0 and pos == 0 and rel == 0) or (rel > prev_rel and pos > prev_pos))
            if not ok:
                break
            index.relative.append(rel)
            index.positions.append(pos)
            index.times.append(ts)
            prev_rel, prev_pos, prev_ts = rel, pos, ts
        index.max_timestamp = index.times[-1] if index.times else _NO_TIMESTAMP
        return index

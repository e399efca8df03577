"""The record model every front end stores: what goes in and what comes out.

A record is the unit a producer sends; the journal stores records in batches
(see :mod:`journal.segments.batch`) and hands back the same fields, plus the
offset and timestamp it assigned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AppendResult", "Header", "Record"]

Header = tuple[str, bytes | None]


@dataclass(slots=True)
class Record:
    """One message: value, key and headers, with the offset and time (ms) it got.

    ``timestamp`` None on append means "now"; ``offset`` is filled in on read.
    """

    value: bytes | None = None
    key: bytes | None = None
    headers: list[Header] = field(default_factory=list)
    timestamp: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an acknowledged append landed: offsets ``base_offset..last_offset``."""

    base_offset: int
    last_offset: int

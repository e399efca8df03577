"""JSON views: the documents the admin API answers with for records, streams and users.

Each view is a pure function from a journal or user-store value to a dict
ready for ``JSONResponse``. Record bytes are shown as UTF-8 text or base64, as
the request asked; bytes that are not UTF-8 under ``encoding=utf-8`` are a 400
(``not_utf8``) rather than a lossy answer.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from journal.journal import SegmentInfo, StreamInfo
from journal.records import Record
from journal.stats import JournalStatistics, StreamStatistics
from meta.users import UserInfo
from tools.strata.admin.errors import ApiError

__all__ = [
    "journal_summary_json",
    "record_json",
    "segment_json",
    "statistics_json",
    "stream_json",
    "stream_summary_json",
    "user_json",
]


def _encode(value: bytes | None, encoding: str, what: str) -> str | None:
    if value is None:
        return None
    if encoding == "base64":
        return base64.b64encode(value).decode()
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ApiError(
            400, "not_utf8", f"{what} is not valid UTF-8; ask for encoding=base64"
        ) from None


def record_json(record: Record, encoding: str) -> dict[str, Any]:
    where = f"the record at offset {record.offset}"
    return {
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _encode(record.key, encoding, f"{where}: its key"),
        "value": _encode(record.value, encoding, f"{where}: its value"),
        "headers": [
            [name, _encode(value, encoding, f"{where}: header {name!r}")]
            for name, value in record.headers
        ],
    }


def stream_json(info: StreamInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "first_offset": info.first_offset,
        "next_offset": info.next_offset,
        "size_bytes": info.size_bytes,
        "segment_count": info.segment_count,
        "config": dataclasses.asdict(info.config),
        "quarantined": list(info.quarantined),
    }


def stream_summary_json(stats: StreamStatistics) -> dict[str, Any]:
    """A stream's row in the stream list."""
    return {
        "name": stats.name,
        "first_offset": stats.first_offset,
        "next_offset": stats.next_offset,
        "size_bytes": stats.size_bytes,
        "segment_count": stats.segments,
    }


def segment_json(segment: SegmentInfo) -> dict[str, Any]:
    return dataclasses.asdict(segment)


def statistics_json(stats: StreamStatistics) -> dict[str, Any]:
    doc = dataclasses.asdict(stats)
    h = stats.fsync_latency
    doc["fsync_latency"] = {
        "bounds": list(h.bounds),
        "counts": list(h.counts),
        "count": h.count,
        "sum": h.total,
    }
    return doc


def journal_summary_json(stats: JournalStatistics) -> dict[str, Any]:
    """The journal totals ``/api/v1/status`` reports."""
    streams = stats.per_stream.values()
    tiering = stats.tiering
    backlog = (
        tiering.backlog_bytes
        if tiering is not None
        else sum(s.migration_backlog_bytes for s in streams)
    )
    return {
        "streams": stats.streams,
        "segments": stats.segments,
        "records": sum(s.next_offset - s.first_offset for s in streams),
        "size_bytes": stats.size_bytes,
        "memory_bytes": sum(s.memory_bytes for s in streams),
        "local_bytes": sum(s.local_bytes for s in streams),
        "object_bytes": sum(s.object_bytes for s in streams),
        "backlog_bytes": backlog,
        "appends": stats.appends,
        "records_appended": stats.records,
        "bytes_appended": stats.bytes_appended,
        "fsyncs": stats.fsyncs,
    }


def user_json(info: UserInfo) -> dict[str, Any]:
    return {"name": info.name, "created_ms": info.created_ms}

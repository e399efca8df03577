"""How ``strata-journal`` prints records and batches: one formatter per ``-o`` mode.

Pure functions from a decoded record (or a batch header) to text. Bytes that
are UTF-8 print as text; others as an escaped preview (``short``, ``verbose``)
or base64 (``json``: ``{"base64": "..."}`` in place of the string), so JSON
output round-trips exactly. Header values (where the MQTT and AMQP front ends
keep properties) follow the same rule.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from journal.records import Record
from journal.segments.batch import BatchHeader
from tools.text import human_size

__all__ = [
    "BATCH_MODES",
    "RECORD_MODES",
    "RecordItem",
    "format_batch",
    "format_record",
    "format_time",
    "human_size",
    "json_bytes",
    "preview",
]

RECORD_MODES = ("short", "verbose", "json", "json-pretty", "cat", "hex")
BATCH_MODES = ("batch",)
_PREVIEW = 120


@dataclass(frozen=True, slots=True)
class RecordItem:
    stream: str
    segment: int
    tier: str
    position: int  # of the record's batch in its segment
    record: Record


def format_time(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def text_of(data: bytes | None) -> str | None:
    """``data`` as text when it is UTF-8 without control characters, else None."""
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return None
    return text


def preview(data: bytes | None, limit: int = _PREVIEW) -> str:
    """A one-line preview: text as is (newlines escaped), binary as an escaped bytes literal."""
    if data is None:
        return "null"
    text = text_of(data)
    if text is not None:
        shown = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    else:
        shown = repr(data)
    if len(shown) > limit:
        return shown[:limit] + f"... ({len(data)} bytes)"
    return shown


def json_bytes(data: bytes | None) -> str | dict[str, str] | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _json_doc(item: RecordItem) -> dict[str, object]:
    r = item.record
    return {
        "stream": item.stream,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "time": format_time(r.timestamp),
        "key": json_bytes(r.key),
        "value": json_bytes(r.value),
        "headers": [[k, json_bytes(v)] for k, v in r.headers],
        "segment": item.segment,
        "tier": item.tier,
        "position": item.position,
    }


def _short(item: RecordItem) -> str:
    r = item.record
    key = "" if r.key is None else f" key={preview(r.key, 40)}"
    heads = ""
    if r.headers:
        heads = " {" + ", ".join(f"{k}={preview(v, 40)}" for k, v in r.headers) + "}"
    return f"{format_time(r.timestamp)} {item.stream}[{r.offset}]{key}{heads}: {preview(r.value)}"


def _verbose(item: RecordItem) -> str:
    r = item.record
    lines = [
        f"{format_time(r.timestamp)} {item.stream}[{r.offset}]",
        f"    timestamp={r.timestamp} segment={item.segment:020d} tier={item.tier} "
        f"batch_position={item.position}",
        f"    key={preview(r.key, 1 << 20)}",
        f"    value={preview(r.value, 1 << 20)}"
        + ("" if r.value is None else f" ({len(r.value)} bytes)"),
    ]
    for k, v in r.headers:
        lines.append(f"    header {k}={preview(v, 1 << 20)}")
    return "\n".join(lines)


def _cat(item: RecordItem) -> str:
    value = item.record.value
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace")


def _hex(item: RecordItem) -> str:
    r = item.record
    lines = [f"{format_time(r.timestamp)} {item.stream}[{r.offset}]"]
    for label, data in (("key", r.key), ("value", r.value)):
        if data is None:
            lines.append(f"  {label}: null")
            continue
        lines.append(f"  {label}: {len(data)} bytes")
        lines.extend(_hexdump(data))
    for k, v in r.headers:
        lines.append(f"  header {k}: " + ("null" if v is None else v.hex(" ")))
    return "\n".join(lines)


def _hexdump(data: bytes) -> list[str]:
    out = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"    {start:08x}  {chunk.hex(' '):<47}  |{text}|")
    return out


_FORMATTERS: dict[str, Callable[[RecordItem], str]] = {
    "short": _short,
    "verbose": _verbose,
    "json": lambda item: json.dumps(_json_doc(item), ensure_ascii=False),
    "json-pretty": lambda item: json.dumps(_json_doc(item), ensure_ascii=False, indent=2),
    "cat": _cat,
    "hex": _hex,
}


def format_record(mode: str, item: RecordItem) -> str:
    return _FORMATTERS[mode](item)


def format_batch(
    stream: str, segment: int, tier: str, position: int, header: BatchHeader, error: str | None
) -> str:
    """Kafka dump-log style: one line of header fields per batch."""
    crc = "valid" if error is None else f"INVALID ({error})"
    return (
        f"{stream} segment={segment:020d} tier={tier} position={position} "
        f"baseOffset={header.base_offset} lastOffset={header.last_offset} "
        f"count={header.record_count} size={header.size} "
        f"baseTimestamp={header.base_timestamp} ({format_time(header.base_timestamp)}) "
        f"maxTimestamp={header.max_timestamp} ({format_time(header.max_timestamp)}) "
        f"producerId={header.producer_id} producerEpoch={header.producer_epoch} "
        f"baseSequence={header.base_sequence} compression={header.compression} "
        f"transactional={str(header.is_transactional).lower()} "
        f"control={str(header.is_control).lower()} "
        f"leaderEpoch={header.partition_leader_epoch} crc={header.crc:#010x} {crc}"
    )

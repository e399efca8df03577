"""Counters the journal keeps, and the records :meth:`statistics` returns.

One source of statistics (STYLE habit 11): the CLI, the admin API and
``/metrics`` all read these records; nothing else counts.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "FSYNC_BUCKETS",
    "JournalStatistics",
    "LatencyHistogram",
    "StreamStatistics",
    "TieringStatistics",
    "statistics_from_dict",
]

# Seconds; Prometheus-style cumulative buckets are derived from these bounds.
FSYNC_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


@dataclass(slots=True)
class LatencyHistogram:
    """Counts per bucket (the last is +Inf), plus count and sum, like Prometheus."""

    bounds: tuple[float, ...] = FSYNC_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(FSYNC_BUCKETS) + 1))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def merge(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.count += other.count
        self.total += other.total

    def copy(self) -> LatencyHistogram:
        return LatencyHistogram(self.bounds, list(self.counts), self.count, self.total)


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    name: str
    first_offset: int
    next_offset: int
    size_bytes: int
    segments: int
    quarantined_segments: int
    appends: int
    records: int
    bytes_appended: int
    fsyncs: int
    fsync_latency: LatencyHistogram
    memory_bytes: int  # newest batches held in memory for tail readers
    local_bytes: int  # segment files on local disk, the active one included
    object_bytes: int
    object_segments: int
    migration_backlog_segments: int  # due to move to the object tier, not moved yet
    migration_backlog_bytes: int


@dataclass(frozen=True, slots=True)
class TieringStatistics:
    """The migration service and the object tier's read cache."""

    object_url: str
    uploads: int
    bytes_uploaded: int
    upload_failures: int
    backlog_segments: int
    backlog_bytes: int
    trash_pending: int  # objects waiting to be deleted from the object tier
    objects_deleted: int
    orphans_found: int
    cache_hits: int
    cache_misses: int
    cache_prefetch_started: int
    cache_prefetched: int
    cache_bytes: int
    bytes_fetched: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    streams: int
    appends: int
    records: int
    bytes_appended: int
    fsyncs: int
    fsync_latency: LatencyHistogram
    segments: int
    size_bytes: int
    per_stream: dict[str, StreamStatistics]
    tiering: TieringStatistics | None = None


def _histogram(d: dict[str, Any]) -> LatencyHistogram:
    return LatencyHistogram(tuple(d["bounds"]), list(d["counts"]), d["count"], d["total"])


def _stream(d: dict[str, Any]) -> StreamStatistics:
    values = {f.name: d[f.name] for f in fields(StreamStatistics)}
    values["fsync_latency"] = _histogram(d["fsync_latency"])
    return StreamStatistics(**values)


def statistics_from_dict(d: dict[str, Any]) -> JournalStatistics | StreamStatistics:
    """Rebuild a statistics record from its ``dataclasses.asdict`` (as the RPC sends it as JSON).

    A dict with ``per_stream`` is the whole journal's record, else one stream's.
    """
    if "per_stream" not in d:
        return _stream(d)
    values = {f.name: d[f.name] for f in fields(JournalStatistics)}
    values["fsync_latency"] = _histogram(d["fsync_latency"])
    values["per_stream"] = {name: _stream(s) for name, s in d["per_stream"].items()}
    tiering = d.get("tiering")
    values["tiering"] = None if tiering is None else TieringStatistics(**tiering)
    return JournalStatistics(**values)

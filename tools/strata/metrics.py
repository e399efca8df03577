"""``/metrics``: Prometheus text built from one statistics snapshot per scrape.

Nothing here counts on its own (STYLE habit 11): at scrape time the admin API
takes ``await service.get_statistics()``, the per-protocol connection counts
and its own request counts into a :class:`MetricsSnapshot`, and
:func:`render_metrics` turns it into the text format through a
:class:`StrataCollector` in a fresh :class:`~prometheus_client.CollectorRegistry`
(never the global one), so two servers in one process never share metrics.

Counters are the journal's own, which start at 0 when the process opens the
journal; Prometheus' ``rate()`` handles the reset on restart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from frontends.mqtt.broker import BrokerStatistics
from journal.stats import JournalStatistics, LatencyHistogram

__all__ = [
    "CONTENT_TYPE",
    "AdminRequestCounts",
    "MetricsSnapshot",
    "ProtocolConnections",
    "StrataCollector",
    "histogram_buckets",
    "render_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ProtocolConnections:
    """One protocol's listener: connections open now, accepted since start, protocol errors."""

    open: int
    total: int
    protocol_errors: int


@dataclass(slots=True)
class AdminRequestCounts:
    """The admin API's own requests by method and status, and its error responses by code."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one scrape reports."""

    journal: JournalStatistics | None  # None: the journal did not answer (remote down)
    connections: Mapping[str, ProtocolConnections]
    admin: AdminRequestCounts
    uptime_seconds: float
    version: str
    mqtt: BrokerStatistics | None = None  # None: this process runs no MQTT broker


def histogram_buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    """Prometheus ``(le, cumulative count)`` pairs; the last is ``+Inf`` and equals the count."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        running += count
        buckets.append((_float(bound), running))
    running += sum(histogram.counts[len(histogram.bounds) :])
    buckets.append(("+Inf", running))
    return buckets


class StrataCollector(Collector):
    """Metric families over one :class:`MetricsSnapshot`."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        journal = self.snapshot.journal
        yield GaugeMetricFamily(
            "strata_journal_up",
            "1 if the journal answered this scrape, 0 if it was unavailable.",
            value=0 if journal is None else 1,
        )
        if journal is not None:
            yield from self._journal(journal)
            yield from self._streams(journal)
            yield from self._tiering(journal)
        yield from self._connections()
        if self.snapshot.mqtt is not None:
            yield from self._mqtt(self.snapshot.mqtt)
        yield from self._process()

    def _journal(self, j: JournalStatistics) -> Iterator[Metric]:
        for name, doc, value in (
            ("appends", "Append calls acknowledged.", j.appends),
            ("records", "Records appended.", j.records),
            ("bytes_appended", "Batch bytes appended.", j.bytes_appended),
            ("fsyncs", "fsync calls on segment files.", j.fsyncs),
        ):
            yield CounterMetricFamily(f"strata_journal_{name}", doc, value=value)
        h = j.fsync_latency
        yield HistogramMetricFamily(
            "strata_journal_fsync_seconds",
            "Time taken by each fsync of a segment file.",
            buckets=histogram_buckets(h),
            sum_value=h.total,
        )
        yield GaugeMetricFamily("strata_journal_streams", "Streams.", value=j.streams)
        yield GaugeMetricFamily(
            "strata_journal_segments", "Segments in every tier.", value=j.segments
        )
        yield GaugeMetricFamily(
            "strata_journal_size_bytes", "Bytes of every stream in every tier.", value=j.size_bytes
        )

    def _streams(self, j: JournalStatistics) -> Iterator[Metric]:
        per_stream = sorted(j.per_stream.items())
        size = GaugeMetricFamily(
            "strata_stream_bytes",
            "Bytes of a stream per tier (memory: newest batches cached for tail readers).",
            labels=["stream", "tier"],
        )
        first = GaugeMetricFamily(
            "strata_stream_first_offset", "First retained offset.", labels=["stream"]
        )
        next_ = GaugeMetricFamily(
            "strata_stream_next_offset", "Offset the next record gets.", labels=["stream"]
        )
        segments = GaugeMetricFamily("strata_stream_segments", "Segments.", labels=["stream"])
        records = CounterMetricFamily(
            "strata_stream_records", "Records appended.", labels=["stream"]
        )
        appended = CounterMetricFamily(
            "strata_stream_bytes_appended", "Batch bytes appended.", labels=["stream"]
        )
        backlog = GaugeMetricFamily(
            "strata_stream_migration_backlog_bytes",
            "Bytes due to move to the object tier, not moved yet.",
            labels=["stream"],
        )
        for name, s in per_stream:
            for tier, value in (
                ("memory", s.memory_bytes),
                ("local", s.local_bytes),
                ("object", s.object_bytes),
            ):
                size.add_metric([name, tier], value)
            first.add_metric([name], s.first_offset)
            next_.add_metric([name], s.next_offset)
            segments.add_metric([name], s.segments)
            records.add_metric([name], s.records)
            appended.add_metric([name], s.bytes_appended)
            backlog.add_metric([name], s.migration_backlog_bytes)
        yield from (size, first, next_, segments, records, appended, backlog)

    def _tiering(self, j: JournalStatistics) -> Iterator[Metric]:
        t = j.tiering  # None without an object tier: report zeros
        yield GaugeMetricFamily(
            "strata_tiering_backlog_bytes",
            "Bytes of sealed segments due to move to the object tier.",
            value=t.backlog_bytes if t else 0,
        )
        yield GaugeMetricFamily(
            "strata_tiering_backlog_segments",
            "Sealed segments due to move to the object tier.",
            value=t.backlog_segments if t else 0,
        )
        for name, doc, value in (
            ("uploads", "Segments uploaded to the object tier.", t.uploads if t else 0),
            ("bytes_uploaded", "Bytes uploaded.", t.bytes_uploaded if t else 0),
            ("upload_failures", "Failed uploads.", t.upload_failures if t else 0),
            ("cache_hits", "Cold reads served by the local cache.", t.cache_hits if t else 0),
            (
                "cache_misses",
                "Cold reads fetched from the object tier.",
                t.cache_misses if t else 0,
            ),
            ("bytes_fetched", "Bytes fetched from the object tier.", t.bytes_fetched if t else 0),
        ):
            yield CounterMetricFamily(f"strata_tiering_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "strata_tiering_cache_bytes",
            "Bytes in the cold-read cache.",
            value=t.cache_bytes if t else 0,
        )

    def _connections(self) -> Iterator[Metric]:
        open_ = GaugeMetricFamily(
            "strata_connections", "Open client connections.", labels=["protocol"]
        )
        total = CounterMetricFamily(
            "strata_connections", "Connections accepted.", labels=["protocol"]
        )
        errors = CounterMetricFamily(
            "strata_protocol_errors",
            "Connections closed for breaking their protocol.",
            labels=["protocol"],
        )
        for protocol, c in sorted(self.snapshot.connections.items()):
            open_.add_metric([protocol], c.open)
            total.add_metric([protocol], c.total)
            errors.add_metric([protocol], c.protocol_errors)
        yield from (open_, total, errors)

    def _mqtt(self, m: BrokerStatistics) -> Iterator[Metric]:
        counters = (
            (
                "messages_received",
                "PUBLISHes (and wills) accepted from clients.",
                m.messages_received,
            ),
            ("messages_sent", "PUBLISHes sent to subscribers.", m.messages_sent),
            ("bytes_received", "Bytes read from MQTT connections.", m.bytes_received),
            ("bytes_sent", "Bytes written to MQTT connections.", m.bytes_sent),
            ("store_appends", "Appends to the message shards.", m.store_appends),
            (
                "store_failures",
                "Shard appends that failed (publishers got an error).",
                m.store_failures,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(f"strata_mqtt_{name}", doc, value=value)
        dropped = CounterMetricFamily(
            "strata_mqtt_messages_dropped",
            "Deliveries not made: a full session queue (max_queued), an expired message, or "
            "one larger than the client's Maximum Packet Size.",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], m.dropped_queue_full)
        dropped.add_metric(["expired"], m.dropped_expired)
        dropped.add_metric(["too_large"], m.dropped_too_large)
        yield dropped
        gauges = (
            ("sessions", "Sessions, connected or persistent and offline.", m.sessions),
            ("subscriptions", "Subscriptions of all sessions.", m.subscriptions),
            ("retained_messages", "Retained messages, $SYS included.", m.retained),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"strata_mqtt_{name}", doc, value=value)

    def _process(self) -> Iterator[Metric]:
        s = self.snapshot
        requests = CounterMetricFamily(
            "strata_admin_requests", "Admin API requests answered.", labels=["method", "status"]
        )
        for (method, status), n in sorted(s.admin.requests.items()):
            requests.add_metric([method, str(status)], n)
        yield requests
        errors = CounterMetricFamily(
            "strata_admin_errors", "Admin API error responses by error code.", labels=["code"]
        )
        for code, n in sorted(s.admin.errors.items()):
            errors.add_metric([code], n)
        yield errors
        yield GaugeMetricFamily(
            "strata_uptime_seconds", "Seconds since the server started.", value=s.uptime_seconds
        )
        info = GaugeMetricFamily("strata_build_info", "The running version.", labels=["version"])
        info.add_metric([s.version], 1)
        yield info


def render_metrics(snapshot: MetricsSnapshot) -> bytes:
    """The Prometheus text format (version 0.0.4) of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StrataCollector(snapshot))
    return generate_latest(registry)


def _float(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))

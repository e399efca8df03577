"""The admin HTTP API served for real: Hypercorn on 127.0.0.1, a journal and a user store.

Each test gets a :class:`Admin`: the app over a real :class:`~journal.Journal`
(behind :class:`FlakyJournal`, which can be told to fail every call), served by
``serve_admin`` on a free port in the fixture's nursery, and an httpx client.
Only the non-loopback cases go through ``httpx.ASGITransport`` (whose client
address can be set), since every real socket here is on loopback.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from journal import Journal, Record, StreamConfig
from journal.errors import StorageError
from journal.journal import SegmentInfo, StreamInfo
from journal.records import AppendResult
from journal.rpc import JournalUnavailableError
from journal.stats import JournalStatistics, StreamStatistics
from meta import ScryptParams, UserStore
from tools.strata.admin import MAX_BODY_BYTES, create_app, serve_admin
from tools.strata.metrics import ProtocolConnections

FAST = ScryptParams(n=1 << 4, r=1, p=1)
ALICE = ("alice", "alice-password")
API_PATHS = ["/api/v1/status", "/api/v1/streams", "/api/v1/users"]


class FlakyJournal:
    """A :class:`~journal.service.JournalService` over a real journal that fails while
    ``error`` is set (a stand-in for a remote journal that went away)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.error: Exception | None = None

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    async def create_stream(
        self, name: str, config: StreamConfig | None = None, *, exist_ok: bool = False
    ) -> None:
        self._check()
        await self.journal.create_stream(name, config, exist_ok=exist_ok)

    async def delete_stream(self, name: str) -> None:
        self._check()
        await self.journal.delete_stream(name)

    async def list_streams(self) -> list[str]:
        self._check()
        return await self.journal.list_streams()

    async def describe_stream(self, name: str) -> StreamInfo:
        self._check()
        return await self.journal.describe_stream(name)

    async def list_segments(self, name: str) -> list[SegmentInfo]:
        self._check()
        return await self.journal.list_segments(name)

    @overload
    async def get_statistics(self) -> JournalStatistics: ...
    @overload
    async def get_statistics(self, name: str) -> StreamStatistics: ...

    async def get_statistics(self, name: str | None = None) -> JournalStatistics | StreamStatistics:
        self._check()
        if name is None:
            return await self.journal.get_statistics()
        return await self.journal.get_statistics(name)

    async def append(self, name: str, records: Sequence[Record]) -> AppendResult:
        self._check()
        return await self.journal.append(name, records)

    async def append_batch(self, name: str, batch: bytes | bytearray | memoryview) -> AppendResult:
        self._check()
        return await self.journal.append_batch(name, batch)

    async def roll(self, name: str) -> None:
        self._check()
        await self.journal.roll(name)

    async def read(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[Record]:
        self._check()
        return await self.journal.read(name, offset, max_bytes)

    async def read_batches(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[bytes]:
        self._check()
        return await self.journal.read_batches(name, offset, max_bytes)

    async def offset_for_time(self, name: str, timestamp_ms: int) -> int | None:
        self._check()
        return await self.journal.offset_for_time(name, timestamp_ms)

    async def wait(self, name: str, offset: int) -> None:
        self._check()
        await self.journal.wait(name, offset)

    def tail(self, name: str, from_offset: int) -> AsyncIterator[Record]:
        self._check()
        return self.journal.tail(name, from_offset)

    async def apply_retention(self, name: str | None = None) -> int:
        self._check()
        return await self.journal.apply_retention(name)

    async def migrate(self, name: str | None = None) -> int:
        self._check()
        return await self.journal.migrate(name)

    async def verify(self, name: str) -> list[StorageError]:
        self._check()
        return await self.journal.verify(name)


@dataclass
class Admin:
    app: Starlette
    client: httpx.AsyncClient
    port: int
    service: FlakyJournal
    users: UserStore
    listeners: dict[str, bool]
    connections: dict[str, ProtocolConnections] = field(default_factory=dict)

    async def add_user(self, name: str = ALICE[0], password: str = ALICE[1]) -> None:
        await self.users.add_async(name, password)

    def remote(self, host: str = "10.1.2.3") -> httpx.AsyncClient:
        """A client whose requests come from ``host``, through the app itself."""
        transport = httpx.ASGITransport(app=self.app, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://strata")


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with Journal.open(tmp_path / "journal", "none") as journal:
        with UserStore.open(tmp_path / "users", params=FAST) as users:
            service = FlakyJournal(journal)
            listeners = {"admin": True, "journal_rpc": True}
            connections = {"journal_rpc": ProtocolConnections(open=2, total=5, protocol_errors=1)}
            app = create_app(
                service,
                users,
                ready=lambda: dict(listeners),
                connections=lambda: connections,
                version="9.8.7",
                roles=("journal", "broker"),
                started_at=time.time() - 5,
            )
            async with trio.open_nursery() as nursery:
                port: int = await nursery.start(serve_admin, app, "127.0.0.1", 0)
                base = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    yield Admin(app, client, port, service, users, listeners, connections)
                nursery.cancel_scope.cancel()


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    code: str = body["error"]["code"]
    return code


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


async def scrape(admin: Admin) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await admin.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


# -- probes -------------------------------------------------------------------------------


async def test_health_and_ready(admin: Admin) -> None:
    response = await admin.client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})
    response = await admin.client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "listeners": {"admin": True, "journal_rpc": True},
    }
    admin.listeners["journal_rpc"] = False
    response = await admin.client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "starting",
        "listeners": {"admin": True, "journal_rpc": False},
    }


async def test_status(admin: Admin) -> None:
    await admin.client.post("/api/v1/streams", json={"name": "s"})
    await admin.client.post("/api/v1/streams/s/records", json={"records": [{"value": "x"}] * 3})
    response = await admin.client.get("/api/v1/status")
    assert response.status_code == 200
    doc = response.json()
    assert doc["version"] == "9.8.7"
    assert doc["roles"] == ["journal", "broker"]
    assert 5 <= doc["uptime_seconds"] < 600
    assert doc["ready"] is True
    assert doc["listeners"] == {"admin": True, "journal_rpc": True}
    journal = doc["journal"]
    assert journal["streams"] == 1
    assert journal["records"] == 3
    assert journal["records_appended"] == 3
    assert journal["size_bytes"] > 0
    assert journal["local_bytes"] == journal["size_bytes"]
    assert journal["object_bytes"] == 0
    assert journal["backlog_bytes"] == 0


async def test_unknown_route_and_method(admin: Admin) -> None:
    response = await admin.client.get("/api/v1/nothing")
    assert (response.status_code, error_code(response)) == (404, "not_found")
    response = await admin.client.put("/api/v1/streams", json={})
    assert (response.status_code, error_code(response)) == (405, "method_not_allowed")
    response = await admin.client.put("/api/v1/streams/s/records", json={})
    assert (response.status_code, error_code(response)) == (405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    response = await admin.client.get("/api/v1/streams/s/records/more")
    assert (response.status_code, error_code(response)) == (404, "not_found")


# -- streams ------------------------------------------------------------------------------


async def test_stream_lifecycle(admin: Admin) -> None:
    c = admin.client
    response = await c.post(
        "/api/v1/streams", json={"name": "orders", "config": {"segment_bytes": 1 << 20}}
    )
    assert response.status_code == 201
    doc = response.json()
    assert (doc["name"], doc["first_offset"], doc["next_offset"]) == ("orders", 0, 0)
    assert doc["config"]["segment_bytes"] == 1 << 20
    assert doc["config"]["fsync"] is None

    response = await c.post("/api/v1/streams", json={"name": "orders"})
    assert (response.status_code, error_code(response)) == (409, "stream_exists")
    response = await c.post(
        "/api/v1/streams", json={"name": "orders", "config": {}, "exist_ok": True}
    )
    assert response.status_code == 200
    assert response.json()["config"]["segment_bytes"] == 1 << 20  # kept as it was

    response = await c.get("/api/v1/streams")
    assert response.status_code == 200
    assert response.json() == {
        "streams": [
            {
                "name": "orders",
                "first_offset": 0,
                "next_offset": 0,
                "size_bytes": 0,
                "segment_count": 1,
            }
        ]
    }
    await c.post("/api/v1/streams/orders/records", json={"records": [{"value": "v"}]})
    response = await c.get("/api/v1/streams/orders")
    assert response.status_code == 200
    doc = response.json()
    assert doc["next_offset"] == 1
    assert doc["segment_count"] == 1
    assert [(s["base_offset"], s["tier"]) for s in doc["segments"]] == [(0, "memory")]
    assert doc["statistics"]["records"] == 1
    assert doc["statistics"]["fsync_latency"]["count"] == 0

    response = await c.delete("/api/v1/streams/orders")
    assert response.status_code == 204
    assert response.content == b""
    for method in ("GET", "DELETE"):
        response = await c.request(method, "/api/v1/streams/orders")
        assert (response.status_code, error_code(response)) == (404, "unknown_stream")
    assert (await c.get("/api/v1/streams")).json() == {"streams": []}


async def test_stream_name_with_slash(admin: Admin) -> None:
    c = admin.client
    response = await c.post("/api/v1/streams", json={"name": "mqtt/records"})
    assert response.status_code == 201
    response = await c.post(
        "/api/v1/streams/mqtt%2Frecords/records", json={"records": [{"value": "a"}]}
    )
    assert response.status_code == 200
    response = await c.get("/api/v1/streams/mqtt%2Frecords")
    assert (response.status_code, response.json()["name"]) == (200, "mqtt/records")
    response = await c.get("/api/v1/streams/mqtt/records")  # stream "mqtt": unknown
    assert (response.status_code, error_code(response)) == (404, "unknown_stream")


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"name": "s", "config": {"segment_bytes": 0}}, "invalid_config", "segment_bytes"),
        ({"name": "s", "config": {"fsync": "sometimes"}}, "invalid_config", "fsync"),
        ({"name": "s", "config": {"colour": "red"}}, "invalid_config", "colour"),
        ({"name": "s", "config": {"retention_ms": "1d"}}, "invalid_config", "retention_ms"),
        ({"name": ""}, "invalid_config", "stream name"),
        ({"name": 5}, "invalid_request", "name"),
        ({}, "invalid_request", "name"),
        ({"name": "s", "config": []}, "invalid_request", "config"),
        ({"name": "s", "exist_ok": "yes"}, "invalid_request", "exist_ok"),
    ],
)
async def test_create_stream_bad_input(
    admin: Admin, body: dict[str, Any], code: str, needle: str
) -> None:
    response = await admin.client.post("/api/v1/streams", json=body)
    assert (response.status_code, error_code(response)) == (400, code)
    assert needle in response.json()["error"]["message"]
    assert (await admin.client.get("/api/v1/streams")).json() == {"streams": []}


async def test_bad_json_bodies(admin: Admin) -> None:
    for content in (b"{not json", b"\xff\xfe", b"[1, 2]", b""):
        response = await admin.client.post("/api/v1/streams", content=content)
        assert response.status_code == 400
        assert error_code(response) in ("invalid_json", "invalid_request")


async def test_body_too_large(admin: Admin) -> None:
    response = await admin.client.post("/api/v1/streams", content=b" " * (MAX_BODY_BYTES + 1))
    assert (response.status_code, error_code(response)) == (413, "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(17):
            yield b" " * (1 << 20)

    response = await admin.client.post("/api/v1/streams", content=chunks())
    assert (response.status_code, error_code(response)) == (413, "request_too_large")
    assert (await admin.client.get("/health")).status_code == 200


# -- records ------------------------------------------------------------------------------


async def test_records_round_trip(admin: Admin) -> None:
    c = admin.client
    await c.post("/api/v1/streams", json={"name": "s"})
    body = {
        "records": [
            {"key": "k1", "value": "héllo", "headers": [["h", "1"], ["empty", None]]},
            {"key": None, "value": None},
            {"value": "third", "timestamp": 1_700_000_000_000},
        ]
    }
    response = await c.post("/api/v1/streams/s/records", json=body)
    assert response.status_code == 200
    assert response.json() == {"base_offset": 0, "last_offset": 2}
    response = await c.post("/api/v1/streams/s/records", json={"records": [{"value": "4th"}]})
    assert response.json() == {"base_offset": 3, "last_offset": 3}

    response = await c.get("/api/v1/streams/s/records")
    assert response.status_code == 200
    doc = response.json()
    assert doc["next_offset"] == 4
    records = doc["records"]
    assert [r["offset"] for r in records] == [0, 1, 2, 3]
    assert records[0]["key"] == "k1"
    assert records[0]["value"] == "héllo"
    assert records[0]["headers"] == [["h", "1"], ["empty", None]]
    assert (records[1]["key"], records[1]["value"], records[1]["headers"]) == (None, None, [])
    assert records[2]["timestamp"] == 1_700_000_000_000
    assert isinstance(records[0]["timestamp"], int)

    response = await c.get("/api/v1/streams/s/records", params={"offset": 2})
    assert [r["offset"] for r in response.json()["records"]] == [2, 3]
    response = await c.get("/api/v1/streams/s/records", params={"offset": 4})
    assert response.json() == {"records": [], "next_offset": 4}


async def test_records_base64(admin: Admin) -> None:
    c = admin.client
    await c.post("/api/v1/streams", json={"name": "bin"})
    raw = bytes(range(256))
    b64 = base64.b64encode(raw).decode()
    body = {"encoding": "base64", "records": [{"key": b64, "value": b64, "headers": [["h", b64]]}]}
    response = await c.post("/api/v1/streams/bin/records", json=body)
    assert response.status_code == 200
    response = await c.get("/api/v1/streams/bin/records", params={"encoding": "base64"})
    (record,) = response.json()["records"]
    assert (record["key"], record["value"], record["headers"]) == (b64, b64, [["h", b64]])
    response = await c.get("/api/v1/streams/bin/records")  # not UTF-8: ask for base64
    assert (response.status_code, error_code(response)) == (400, "not_utf8")
    assert "base64" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"records": []}, "non-empty"),
        ({}, "records"),
        ({"records": [5]}, "records[0]"),
        ({"records": [{"value": 5}]}, "records[0].value"),
        ({"records": [{"value": "a", "extra": 1}]}, "unknown fields"),
        ({"records": [{"headers": [["h"]]}]}, "headers[0]"),
        ({"records": [{"headers": "h"}]}, "headers"),
        ({"records": [{"timestamp": -1}]}, "timestamp"),
        ({"records": [{"value": "!!"}], "encoding": "base64"}, "base64"),
        ({"records": [{"value": "a"}], "encoding": "latin-1"}, "encoding"),
    ],
)
async def test_append_bad_input(admin: Admin, body: dict[str, Any], needle: str) -> None:
    await admin.client.post("/api/v1/streams", json={"name": "s"})
    response = await admin.client.post("/api/v1/streams/s/records", json=body)
    assert (response.status_code, error_code(response)) == (400, "invalid_request")
    assert needle in response.json()["error"]["message"]
    assert (await admin.client.get("/api/v1/streams/s")).json()["next_offset"] == 0


async def test_records_errors(admin: Admin) -> None:
    c = admin.client
    response = await c.post("/api/v1/streams/nope/records", json={"records": [{"value": "a"}]})
    assert (response.status_code, error_code(response)) == (404, "unknown_stream")
    response = await c.get("/api/v1/streams/nope/records")
    assert (response.status_code, error_code(response)) == (404, "unknown_stream")
    await c.post("/api/v1/streams", json={"name": "s"})
    for params in ({"offset": "-1"}, {"offset": "x"}, {"max_bytes": "0"}, {"encoding": "hex"}):
        response = await c.get("/api/v1/streams/s/records", params=params)
        assert (response.status_code, error_code(response)) == (400, "invalid_request")
    response = await c.get("/api/v1/streams/s/records", params={"offset": 10})
    assert (response.status_code, error_code(response)) == (400, "offset_out_of_range")
    assert response.json()["error"]["next_offset"] == 0
    await c.post("/api/v1/streams", json={"name": "tiny", "config": {"max_batch_bytes": 100}})
    response = await c.post(
        "/api/v1/streams/tiny/records", json={"records": [{"value": "x" * 1000}]}
    )
    assert (response.status_code, error_code(response)) == (413, "batch_too_large")


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_move_with_appends(admin: Admin) -> None:
    c = admin.client
    await c.post("/api/v1/streams", json={"name": "m", "config": {"fsync": "always"}})
    before = await scrape(admin)
    assert before["strata_journal_appends_total", ()] == 0
    assert before["strata_stream_bytes", (("stream", "m"), ("tier", "local"))] == 0
    response = await c.post(
        "/api/v1/streams/m/records", json={"records": [{"value": "x" * 100}] * 5}
    )
    assert response.status_code == 200
    after = await scrape(admin)
    assert after["strata_journal_appends_total", ()] == 1
    assert after["strata_journal_records_total", ()] == 5
    assert after["strata_journal_bytes_appended_total", ()] > 500
    assert after["strata_journal_fsyncs_total", ()] >= 1  # acknowledged after the fsync
    assert after["strata_journal_streams", ()] == 1
    assert after["strata_journal_segments", ()] == 1
    for tier in ("memory", "local"):
        assert after["strata_stream_bytes", (("stream", "m"), ("tier", tier))] > 500
    assert after["strata_stream_bytes", (("stream", "m"), ("tier", "object"))] == 0
    assert after["strata_stream_next_offset", (("stream", "m"),)] == 5
    assert after["strata_stream_records_total", (("stream", "m"),)] == 5
    assert after["strata_journal_up", ()] == 1
    for name in (
        "strata_tiering_backlog_bytes",
        "strata_tiering_uploads_total",
        "strata_tiering_upload_failures_total",
        "strata_tiering_cache_hits_total",
        "strata_tiering_cache_misses_total",
    ):
        assert after[name, ()] == 0
    assert after["strata_connections", (("protocol", "journal_rpc"),)] == 2
    assert after["strata_connections_total", (("protocol", "journal_rpc"),)] == 5
    assert after["strata_protocol_errors_total", (("protocol", "journal_rpc"),)] == 1
    assert after["strata_build_info", (("version", "9.8.7"),)] == 1
    assert after["strata_uptime_seconds", ()] >= 5
    assert after["strata_admin_requests_total", (("method", "POST"), ("status", "200"))] == 1
    assert after["strata_admin_requests_total", (("method", "GET"), ("status", "200"))] >= 1


async def test_fsync_histogram_is_cumulative(admin: Admin) -> None:
    c = admin.client
    await c.post("/api/v1/streams", json={"name": "h", "config": {"fsync": "always"}})
    for i in range(3):
        await c.post("/api/v1/streams/h/records", json={"records": [{"value": str(i)}]})
    response = await c.get("/metrics")
    (family,) = [
        f
        for f in text_string_to_metric_families(response.text)
        if f.name == "strata_journal_fsync_seconds"
    ]
    assert family.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
    count = next(s.value for s in family.samples if s.name.endswith("_count"))
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert count >= 3
    assert total > 0
    values = [v for _, v in buckets]
    assert values == sorted(values)
    assert buckets[-1] == ("+Inf", count)
    bounds = [float(le) for le, _ in buckets[:-1]]
    assert bounds == sorted(bounds)


async def test_admin_errors_counted(admin: Admin) -> None:
    await admin.client.get("/api/v1/streams/nope")
    after = await scrape(admin)
    assert after["strata_admin_errors_total", (("code", "unknown_stream"),)] == 1
    assert after["strata_admin_requests_total", (("method", "GET"), ("status", "404"))] == 1


# -- retryable and unexpected failures ------------------------------------------------------


async def test_unavailable_journal_is_503_with_retry_after(admin: Admin) -> None:
    c = admin.client
    admin.service.error = JournalUnavailableError("the journal server at 10.0.0.5:7700 is down")
    for method, path, body in [
        ("GET", "/api/v1/status", None),
        ("GET", "/api/v1/streams", None),
        ("POST", "/api/v1/streams", {"name": "s"}),
        ("GET", "/api/v1/streams/s", None),
        ("POST", "/api/v1/streams/s/records", {"records": [{"value": "v"}]}),
        ("GET", "/api/v1/streams/s/records", None),
    ]:
        response = await c.request(method, path, json=body)
        assert response.status_code == 503, (method, path)
        assert response.headers["retry-after"] == "1"
        assert error_code(response) == "unavailable"
        assert "10.0.0.5:7700" in response.json()["error"]["message"]
    metrics = await scrape(admin)  # still answers, saying the journal is down
    assert metrics["strata_journal_up", ()] == 0
    assert metrics["strata_connections", (("protocol", "journal_rpc"),)] == 2
    assert (await c.get("/health")).status_code == 200
    admin.service.error = None
    assert (await c.get("/api/v1/streams")).status_code == 200


async def test_unexpected_error_is_500_without_traceback(admin: Admin) -> None:
    admin.service.error = RuntimeError("secret internals")
    response = await admin.client.get("/api/v1/streams")
    assert (response.status_code, error_code(response)) == (500, "internal_error")
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    response = await admin.client.get("/metrics")
    assert (response.status_code, error_code(response)) == (500, "internal_error")


# -- users --------------------------------------------------------------------------------


async def test_user_routes(admin: Admin) -> None:
    c = admin.client
    assert (await c.get("/api/v1/users")).json() == {"users": []}
    response = await c.post("/api/v1/users", json={"name": "alice", "password": "alice-password"})
    assert response.status_code == 201
    assert set(response.json()) == {"name", "created_ms"}
    auth = httpx.BasicAuth(*ALICE)
    response = await c.post(
        "/api/v1/users", json={"name": "alice", "password": "other-password"}, auth=auth
    )
    assert (response.status_code, error_code(response)) == (409, "user_exists")
    response = await c.post(
        "/api/v1/users", json={"name": "bob", "password": "bob-password"}, auth=auth
    )
    assert response.status_code == 201
    response = await c.get("/api/v1/users", auth=auth)
    assert [u["name"] for u in response.json()["users"]] == ["alice", "bob"]
    for text in (response.text, (await c.get("/api/v1/users/alice", auth=auth)).text):
        assert "password" not in text
        assert "hash" not in text
        assert "salt" not in text

    response = await c.put(
        "/api/v1/users/bob/password", json={"password": "new-password"}, auth=auth
    )
    assert response.status_code == 204
    assert await admin.users.verify_async("bob", "new-password")
    response = await c.put(
        "/api/v1/users/carol/password", json={"password": "new-password"}, auth=auth
    )
    assert (response.status_code, error_code(response)) == (404, "unknown_user")
    response = await c.delete("/api/v1/users/bob", auth=auth)
    assert response.status_code == 204
    response = await c.delete("/api/v1/users/bob", auth=auth)
    assert (response.status_code, error_code(response)) == (404, "unknown_user")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "no spaces", "password": "long-enough"}, "invalid_user_name"),
        ({"name": "x" * 65, "password": "long-enough"}, "invalid_user_name"),
        ({"name": "alice", "password": "short"}, "invalid_password"),
        ({"name": "alice", "password": "x" * 1025}, "invalid_password"),
        ({"name": "alice"}, "invalid_request"),
        ({"name": "alice", "password": 12345678}, "invalid_request"),
    ],
)
async def test_add_user_bad_input(admin: Admin, body: dict[str, Any], code: str) -> None:
    response = await admin.client.post("/api/v1/users", json=body)
    assert (response.status_code, error_code(response)) == (400, code)
    assert admin.users.empty


async def test_change_password_bad_input(admin: Admin) -> None:
    await admin.add_user()
    auth = httpx.BasicAuth(*ALICE)
    response = await admin.client.put(
        "/api/v1/users/alice/password", json={"password": "short"}, auth=auth
    )
    assert (response.status_code, error_code(response)) == (400, "invalid_password")
    response = await admin.client.put("/api/v1/users/alice/password", json={}, auth=auth)
    assert (response.status_code, error_code(response)) == (400, "invalid_request")


# -- authentication ------------------------------------------------------------------------


async def test_empty_store_allows_loopback_anonymously(admin: Admin) -> None:
    for path in ["/health", "/ready", "/metrics", *API_PATHS]:
        assert (await admin.client.get(path)).status_code == 200, path


async def test_with_a_user_the_api_needs_basic_auth(admin: Admin) -> None:
    c = admin.client
    await admin.add_user()
    wrong: list[dict[str, Any]] = [
        {},
        {"auth": httpx.BasicAuth("alice", "wrong-password")},
        {"auth": httpx.BasicAuth("nobody", "alice-password")},
        {"headers": {"Authorization": "Basic !!!"}},
        {"headers": {"Authorization": "Bearer abc"}},
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}},
    ]
    messages = set()
    for path in API_PATHS:
        for kwargs in wrong:
            response = await c.get(path, **kwargs)
            assert response.status_code == 401, (path, kwargs)
            assert response.headers["www-authenticate"] == 'Basic realm="strata"'
            assert error_code(response) == "unauthorized"
            if "auth" in kwargs:
                messages.add(response.json()["error"]["message"])
        response = await c.get(path, auth=httpx.BasicAuth(*ALICE))
        assert response.status_code == 200, path
    assert len(messages) == 1  # a wrong password and an unknown user look the same
    for path in ("/health", "/ready", "/metrics"):  # still open on loopback
        assert (await c.get(path)).status_code == 200


async def test_password_change_takes_effect_at_once(admin: Admin) -> None:
    c = admin.client
    await admin.add_user()
    old = httpx.BasicAuth(*ALICE)
    assert (await c.get("/api/v1/users", auth=old)).status_code == 200  # now cached
    response = await c.put(
        "/api/v1/users/alice/password", json={"password": "changed-password"}, auth=old
    )
    assert response.status_code == 204
    assert (await c.get("/api/v1/users", auth=old)).status_code == 401
    new = httpx.BasicAuth("alice", "changed-password")
    assert (await c.get("/api/v1/users", auth=new)).status_code == 200


async def test_remote_clients_before_the_first_user(admin: Admin) -> None:
    async with admin.remote() as remote:
        for path in ["/health", "/ready", "/metrics", *API_PATHS]:
            response = await remote.get(path)
            assert (response.status_code, error_code(response)) == (403, "no_users"), path
            assert "strata user add NAME" in response.json()["error"]["message"]
        response = await remote.post("/api/v1/users", json={"name": "eve", "password": "p" * 8})
        assert response.status_code == 403
    assert admin.users.empty
    for host in ("127.0.0.2", "::1", "::ffff:127.0.0.1"):
        async with admin.remote(host) as local:
            assert (await local.get("/api/v1/users")).status_code == 200, host


async def test_remote_clients_need_auth_everywhere(admin: Admin) -> None:
    await admin.add_user()
    async with admin.remote() as remote:
        for path in ["/health", "/ready", "/metrics", *API_PATHS]:
            response = await remote.get(path)
            assert (response.status_code, error_code(response)) == (401, "unauthorized"), path
            response = await remote.get(path, auth=httpx.BasicAuth(*ALICE))
            assert response.status_code == 200, path


# -- the listener ------------------------------------------------------------------------


async def test_garbage_closes_only_that_connection(admin: Admin) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", admin.port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01\x00\xff\x00garbage\r\n\x00\x01\x02\r\n\r\n")
            received = b""
            while chunk := await stream.receive_some(4096):
                received += chunk
        assert received.startswith(b"HTTP/1.1 400")  # then the server closed it
        response = await admin.client.get("/health")
        assert response.status_code == 200


async def test_serve_admin_stops_when_cancelled(tmp_path: Path) -> None:
    async with Journal.open(tmp_path / "journal", "none") as journal:
        with UserStore.open(tmp_path / "users", params=FAST) as users:
            app = create_app(journal, users, ready=dict, started_at=time.time())
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    port: int = await nursery.start(serve_admin, app, "127.0.0.1", 0)
                    async with httpx.AsyncClient() as client:
                        response = await client.get(f"http://127.0.0.1:{port}/health")
                        assert response.status_code == 200
                    nursery.cancel_scope.cancel()
                with pytest.raises(OSError, match="all attempts to connect"):  # nobody listens
                    await trio.open_tcp_stream("127.0.0.1", port)


async def test_serve_admin_graceful_shutdown_and_busy_port(tmp_path: Path) -> None:
    async with Journal.open(tmp_path / "journal", "none") as journal:
        with UserStore.open(tmp_path / "users", params=FAST) as users:
            app = create_app(journal, users, ready=dict, started_at=time.time())
            stop = trio.Event()
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    port: int = await nursery.start(
                        lambda task_status: serve_admin(
                            app, "127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status
                        )
                    )
                    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
                        await serve_admin(app, "127.0.0.1", port)
                    stop.set()  # serve_admin returns by itself; the nursery then exits

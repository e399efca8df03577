"""The real ``strata`` server as a user meets it: a subprocess, the CLI, HTTP, signals.

Every test starts ``strata start`` on free ports with a temp data dir (see
``strata_process.py``) and talks to it over real sockets: the ``strata`` CLI,
httpx against the admin API, and raw sockets for bad input.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from strata_process import StrataProcess, poll, run_cli

from journal.rpc import ErrorCode, ErrorResponse, decode_frame
from tools.s3local import free_port

pytestmark = pytest.mark.slow


def _metrics(client: httpx.Client) -> dict[str, float]:
    """Every sample of /metrics as ``name{labels}`` -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def _produce(client: httpx.Client, stream: str, values: list[str]) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/streams/{stream}/records",
        json={"records": [{"value": v} for v in values], "encoding": "utf-8"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _consume(client: httpx.Client, stream: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.get(f"/api/v1/streams/{stream}/records", params={"offset": offset})
        assert response.status_code == 200, response.text
        doc = response.json()
        if not doc["records"]:
            return records
        records += doc["records"]
        offset = doc["next_offset"]


def _cli(server: StrataProcess, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--server", server.admin, **kwargs)


def test_start_health_ready_topics_records_and_metrics(tmp_path: Path) -> None:
    with StrataProcess(tmp_path / "data") as server:
        server.wait_ready()
        with server.http() as http:
            assert http.get("/health").json() == {"status": "alive"}
            ready = http.get("/ready")
            assert ready.status_code == 200
            assert ready.json()["listeners"] == {"admin": True, "journal_rpc": True, "mqtt": True}

            created = _cli(server, "topic", "create", "orders", "--set", "retention_ms=3600000")
            assert created.returncode == 0, created.stderr
            assert "retention_ms = 3600000" in created.stdout
            listed = _cli(server, "topic", "list", "-o", "json")
            names = [s["name"] for s in json.loads(listed.stdout)["streams"]]
            assert [n for n in names if not n.startswith("mqtt.")] == ["orders"]
            assert "mqtt.messages.0" in names  # the MQTT broker's shards (docs/mqtt-storage.md)

            before = _metrics(http)
            result = _produce(http, "orders", [f"order-{i}" for i in range(10)])
            assert (result["base_offset"], result["last_offset"]) == (0, 9)
            after = _metrics(http)
            assert (
                after["strata_journal_records_total{}"]
                == before["strata_journal_records_total{}"] + 10
            )
            assert (
                after["strata_journal_appends_total{}"] > before["strata_journal_appends_total{}"]
            )
            assert after["strata_stream_next_offset{stream=orders}"] == 10
            assert after["strata_connections{protocol=journal_rpc}"] == 0

            described = json.loads(_cli(server, "topic", "describe", "orders", "-o", "json").stdout)
            assert described["next_offset"] == 10
            assert described["config"]["retention_ms"] == 3600000
            assert [r["value"] for r in _consume(http, "orders")] == [
                f"order-{i}" for i in range(10)
            ]

            status = _cli(server, "status")
            assert status.returncode == 0, status.stderr
            assert "journal_rpc" in status.stdout
            assert "not ready" not in status.stdout

            deleted = _cli(server, "topic", "delete", "orders")
            assert deleted.returncode == 0, deleted.stderr
            missing = _cli(server, "topic", "describe", "orders")
            assert missing.returncode == 1
            assert "orders" in missing.stderr


def test_users_and_authentication_through_the_cli(tmp_path: Path) -> None:
    with StrataProcess(tmp_path / "data") as server:
        server.wait_ready()
        assert any("strata user add" in line for line in server.lines)
        added = _cli(server, "user", "add", "alice", "--password-stdin", stdin="s3cret-pass\n")
        assert added.returncode == 0, added.stderr

        refused = _cli(server, "topic", "list")
        assert refused.returncode == 1
        assert "401" in refused.stderr or "authent" in refused.stderr.lower()
        wrong = _cli(
            server, "topic", "list", "--user", "alice", env={"STRATA_CLI_PASSWORD": "nope-nope"}
        )
        assert wrong.returncode == 1

        login = {"STRATA_CLI_USER": "alice", "STRATA_CLI_PASSWORD": "s3cret-pass"}
        assert _cli(server, "topic", "create", "t", env=login).returncode == 0
        users = json.loads(_cli(server, "user", "list", "-o", "json", env=login).stdout)
        assert [u["name"] for u in users["users"]] == ["alice"]
        assert "s3cret" not in json.dumps(users)

        changed = _cli(
            server, "user", "passwd", "alice", "--password-stdin", env=login, stdin="n3w-password\n"
        )
        assert changed.returncode == 0, changed.stderr
        assert _cli(server, "topic", "list", env=login).returncode == 1
        login["STRATA_CLI_PASSWORD"] = "n3w-password"
        assert _cli(server, "topic", "list", env=login).returncode == 0

        with server.http() as http:  # health and metrics stay open on loopback
            assert http.get("/health").status_code == 200
            assert http.get("/metrics").status_code == 200
            assert http.get("/api/v1/streams").status_code == 401

    # The user store survives a restart.
    with StrataProcess(tmp_path / "data") as again:
        again.wait_ready()
        assert not any("strata user add" in line for line in again.lines)
        assert _cli(again, "topic", "list", env=login).returncode == 0


def test_sigterm_stops_cleanly_and_keeps_the_data(tmp_path: Path) -> None:
    with StrataProcess(tmp_path / "data") as server:
        server.wait_ready()
        with server.http() as http:
            http.post("/api/v1/streams", json={"name": "s"}).raise_for_status()
            _produce(http, "s", ["a", "b", "c"])
        server.signal(signal.SIGTERM)
        server.expect("shutting down")
        assert server.wait() == 0
        assert "strata: stopped" in server.output()
    with StrataProcess(tmp_path / "data") as again:
        again.wait_ready()
        with again.http() as http:
            assert [r["value"] for r in _consume(http, "s")] == ["a", "b", "c"]


def test_invalid_configuration_names_the_key(tmp_path: Path) -> None:
    bad_env = run_cli(
        "start", "--data-dir", str(tmp_path), env={"STRATA_JOURNAL_FSYNC": "sometimes"}
    )
    assert bad_env.returncode == 2
    assert "STRATA_JOURNAL_FSYNC" in bad_env.stderr
    config = tmp_path / "strata.toml"
    config.write_text("[journal]\nfsink = 'always'\n")
    bad_key = run_cli("start", "--config", str(config))
    assert bad_key.returncode == 2
    assert "journal.fsink" in bad_key.stderr
    assert "did you mean 'fsync'" in bad_key.stderr
    lonely = run_cli("start", "--data-dir", str(tmp_path), "--role", "broker")
    assert lonely.returncode == 2
    assert "--journal HOST:PORT" in lonely.stderr


def _rpc_error(sock: socket.socket) -> ErrorResponse:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    decoded = decode_frame(data)
    assert decoded is not None, data
    message = decoded[0]
    assert isinstance(message, ErrorResponse)
    return message


def test_garbage_on_every_port_closes_only_that_connection(tmp_path: Path) -> None:
    with StrataProcess(tmp_path / "data") as server:
        server.wait_ready()
        with server.http() as http:
            http.post("/api/v1/streams", json={"name": "s"}).raise_for_status()
            _produce(http, "s", ["kept"])
            with socket.create_connection(("127.0.0.1", server.journal_port), timeout=30) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + b"\xff" * 64)
                assert _rpc_error(sock).code in (
                    ErrorCode.BAD_MAGIC,
                    ErrorCode.MALFORMED_FRAME,
                    ErrorCode.FRAME_TOO_LARGE,
                )
            with socket.create_connection(("127.0.0.1", server.journal_port), timeout=30) as sock:
                sock.sendall(struct.pack(">IBI", 1 << 30, 1, 0))  # a 1 GiB HELLO
                assert _rpc_error(sock).code == ErrorCode.FRAME_TOO_LARGE
            port = int(server.admin.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"\x16\x03\x01\x00\xff" + bytes(range(256)) * 4)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            assert http.get("/health").status_code == 200
            assert [r["value"] for r in _consume(http, "s")] == ["kept"]
            metrics = _metrics(http)
            assert metrics["strata_protocol_errors_total{protocol=journal_rpc}"] >= 2


class _Producer:
    """Appends numbered values through a broker's admin API until told to stop.

    Records what the broker acknowledged (200) and what it refused with a
    retryable 503; anything else fails the test.
    """

    def __init__(self, admin: str, stream: str) -> None:
        self.admin = admin
        self.stream = stream
        self.acked: list[str] = []
        self.refused = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.admin, timeout=30.0) as http:
            n = 0
            while not self.stop.is_set() and n < 100_000:
                values = [f"v{n}-{i}" for i in range(5)]
                n += 1
                try:
                    response = http.post(
                        f"/api/v1/streams/{self.stream}/records",
                        json={"records": [{"value": v} for v in values]},
                    )
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    return
                if response.status_code == 200:
                    self.acked += values
                elif response.status_code == 503:
                    assert response.headers.get("retry-after")
                    self.refused += 1
                else:
                    self.errors.append(f"{response.status_code} {response.text}")
                    return


def test_broker_survives_a_sigkilled_journal_server_and_loses_no_ack(tmp_path: Path) -> None:
    rpc_port = free_port()
    journal_env = {"STRATA_JOURNAL_PORT": str(rpc_port), "STRATA_JOURNAL_FSYNC": "always"}
    journal_dir = tmp_path / "journal-node"
    with StrataProcess(journal_dir, "--role", "journal", env=journal_env) as journal_server:
        journal_server.wait_ready()
        with StrataProcess(
            tmp_path / "broker-node", "--role", "broker", "--journal", f"127.0.0.1:{rpc_port}"
        ) as broker:
            broker.wait_ready()
            with broker.http() as http:
                http.post("/api/v1/streams", json={"name": "events"}).raise_for_status()
                producer = _Producer(broker.admin, "events")
                producer.thread.start()
                poll(lambda: len(producer.acked) >= 200)
                journal_server.kill()
                acked_at_kill = len(producer.acked)

                poll(lambda: producer.refused >= 3)  # the broker says "retry", not "lost"
                assert http.get("/health").status_code == 200
                assert http.get("/ready").status_code == 503

                with StrataProcess(journal_dir, "--role", "journal", env=journal_env) as restarted:
                    restarted.wait_ready()
                    poll(lambda: http.get("/ready").status_code == 200)
                    poll(lambda: len(producer.acked) >= acked_at_kill + 200)
                    producer.stop.set()
                    producer.thread.join(timeout=60)
                    assert producer.errors == []

                    stored = [r["value"] for r in _consume(http, "events")]
                    counts: dict[str, int] = {}
                    for value in stored:
                        counts[value] = counts.get(value, 0) + 1
                    missing = [v for v in producer.acked if counts.get(v, 0) != 1]
                    assert missing == [], (
                        f"{len(missing)} acknowledged values not stored exactly once"
                    )
                    metrics = _metrics(http)
                    assert metrics["strata_stream_next_offset{stream=events}"] == len(stored)


def test_make_run_starts_the_server_a_new_user_gets(tmp_path: Path) -> None:
    """The README's first command, with the data dir and ports moved aside."""
    env = {"STRATA_SERVER_DATA_DIR": str(tmp_path / "data")}
    with StrataProcess(
        tmp_path, command=["make", "--no-print-directory", "run"], env=env
    ) as server:
        server.wait_ready()
        with server.http() as http:
            assert http.get("/health").status_code == 200
            poll(lambda: http.get("/ready").status_code == 200)
        server.signal_group(signal.SIGINT)  # Ctrl-C: make and strata both get it
        server.wait()  # make itself exits 2 ("Interrupt") whatever its child did
        assert "strata: stopped" in server.output()
    assert (tmp_path / "data" / "journal" / "catalog").is_dir()
    assert (tmp_path / "data" / "users").exists()


def test_config_env_overrides_reach_the_server(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    env = {"STRATA_JOURNAL_OBJECT_URL": objects.as_uri(), "STRATA_JOURNAL_FSYNC": "none"}
    shown = run_cli("config", "show", "-o", "json", "--data-dir", str(tmp_path / "d"), env=env)
    assert json.loads(shown.stdout)["journal"]["fsync"] == "none"
    with StrataProcess(tmp_path / "d", env=env) as server:
        server.wait_ready()
        with server.http() as http:
            http.post("/api/v1/streams", json={"name": "s"}).raise_for_status()
            response = http.post(
                "/api/v1/streams/s/records",
                json={
                    "records": [{"value": base64.b64encode(b"\x00\xff").decode()}],
                    "encoding": "base64",
                },
            )
            assert response.status_code == 200
            status = http.get("/api/v1/status").json()
            assert status["roles"] == ["journal", "meta", "broker"]


def test_cli_reports_an_unreachable_server_plainly(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    waited = run_cli("status", "--wait", "0.5", "--server", nobody)
    assert waited.returncode == 1
    assert waited.stderr.startswith("strata: error: not ready after 0.5 s")
    listed = run_cli("topic", "list", "--server", nobody)
    assert listed.returncode == 1
    assert "cannot reach the admin API" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_sigkill_of_the_all_in_one_server_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    """The default fsync policy (interval): a 200 means durable, even under SIGKILL."""
    with StrataProcess(tmp_path / "data") as server:
        server.wait_ready()
        with server.http() as http:
            http.post("/api/v1/streams", json={"name": "events"}).raise_for_status()
        producer = _Producer(server.admin, "events")
        producer.thread.start()
        poll(lambda: len(producer.acked) >= 300)
        server.kill()
        producer.thread.join(timeout=60)
        acked = list(producer.acked)
        assert producer.errors, "the producer should have seen the server go away"
    with StrataProcess(tmp_path / "data") as again:
        again.wait_ready()
        with again.http() as http:
            stored = [r["value"] for r in _consume(http, "events")]
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored)
    assert len(stored) - len(acked) <= 5  # at most the one batch in flight at the kill

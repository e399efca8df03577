"""MQTT over WebSocket (paho's websockets transport) and over TLS (a trustme CA), with paho.

Messages cross transports: a TCP client publishes to a WebSocket or TLS
subscriber and back, for both protocol versions. Bad handshakes (another
WebSocket path, plain bytes to the TLS port) end only that connection.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from mqtt_support import V3, V5, Client, mqtt_port, start_mqtt_server, unique
from strata_process import StrataProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    with start_mqtt_server(tmp_path_factory.mktemp("plain") / "data") as process:
        yield process


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(files["cert"]), append=i > 0)
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, Path]
) -> Iterator[StrataProcess]:
    env = {
        "STRATA_MQTT_TLS_CERT": str(tls_files["cert"]),
        "STRATA_MQTT_TLS_KEY": str(tls_files["key"]),
    }
    with start_mqtt_server(tmp_path_factory.mktemp("tls-server") / "data", env=env) as process:
        yield process


def _exchange(a: Client, b: Client) -> None:
    """``a`` publishes to ``b`` and ``b`` to ``a``, QoS 0, 1 and 2, in order."""
    for sender, receiver in ((a, b), (b, a)):
        topic = unique("x")
        receiver.subscribe(topic, 2)
        payloads = [f"{q}-{unique()}".encode() for q in (0, 1, 2)]
        for qos, payload in enumerate(payloads):
            sender.publish(topic, payload, qos)
        got = receiver.expect(3, topic)
        assert [m.payload for m in got] == payloads
        assert [m.qos for m in got] == [0, 1, 2]


# -- WebSocket ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_websocket_and_tcp_clients_exchange_messages(server: StrataProcess, version: int) -> None:
    ws_port = mqtt_port(server, "mqtt_ws")
    assert ws_port != mqtt_port(server)
    with (
        Client(ws_port, version=version, transport="websockets") as ws,
        Client(mqtt_port(server), version=version) as tcp,
    ):
        assert ws.wait_connack()[0] == 0
        _exchange(ws, tcp)


def _upgrade(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_websocket_on_another_path_is_refused(server: StrataProcess) -> None:
    ws_port = mqtt_port(server, "mqtt_ws")
    assert _upgrade(ws_port, "/mqtt").startswith(b"HTTP/1.1 101")
    refused = _upgrade(ws_port, "/other")
    assert refused.startswith(b"HTTP/1.1 4"), refused
    assert not refused.startswith(b"HTTP/1.1 101")
    with Client(ws_port, transport="websockets") as ws, Client(mqtt_port(server)) as tcp:
        _exchange(ws, tcp)  # the listener still serves


def test_no_tls_listener_without_a_certificate(server: StrataProcess) -> None:
    assert "mqtt_tls" not in server.addresses
    assert {"mqtt", "mqtt_ws"} <= set(server.addresses)
    assert not any("mqtt_tls" in line for line in server.lines)


# -- TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_tls_and_tcp_clients_exchange_messages(
    tls_server: StrataProcess, tls_files: dict[str, Path], version: int
) -> None:
    assert any(line.startswith("strata: mqtt_tls listening on") for line in tls_server.lines)
    tls_port = mqtt_port(tls_server, "mqtt_tls")
    assert tls_port != mqtt_port(tls_server)
    with (
        Client(tls_port, version=version, tls={"ca_certs": str(tls_files["ca"])}) as secure,
        Client(mqtt_port(tls_server), version=version) as tcp,
    ):
        assert secure.wait_connack()[0] == 0
        assert secure.paho.socket() is not None
        assert secure.paho.socket().version() is not None  # type: ignore[union-attr]
        _exchange(secure, tcp)


def test_plain_bytes_to_the_tls_port_do_not_hurt(
    tls_server: StrataProcess, tls_files: dict[str, Path]
) -> None:
    tls_port = mqtt_port(tls_server, "mqtt_tls")
    connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", tls_port), timeout=20) as sock:
            sock.sendall(connect)
            try:
                while True:
                    data = sock.recv(4096)
                    if not data:
                        break
                    assert not data.startswith(b"\x20"), "a CONNACK over a TLS port in plaintext"
            except ConnectionResetError:
                pass
    with (
        Client(tls_port, tls={"ca_certs": str(tls_files["ca"])}) as secure,
        Client(mqtt_port(tls_server)) as tcp,
    ):
        _exchange(secure, tcp)
    assert tls_server.proc.poll() is None


def test_a_client_not_trusting_the_ca_is_not_connected(tls_server: StrataProcess) -> None:
    tls_port = mqtt_port(tls_server, "mqtt_tls")
    other_ca = trustme.CA()
    ca_file = Path(tls_server.data_dir).parent / f"{unique('other')}.pem"
    other_ca.cert_pem.write_to_path(str(ca_file))
    with pytest.raises(OSError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        Client(tls_port, tls={"ca_certs": str(ca_file)})
    with Client(mqtt_port(tls_server), version=V5) as a, Client(mqtt_port(tls_server)) as b:
        _exchange(a, b)

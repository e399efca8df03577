"""An acknowledged MQTT message survives SIGKILL: the broker's promise, checked with paho.

Each test starts ``strata start`` on its own data dir, does its work, kills
the process with SIGKILL (no shutdown, no flush) right after the last
acknowledgement, starts a new process on the same data dir (new ports) and
checks what a reconnecting persistent session receives. QoS 1 may come twice
(duplicates are counted, not failed); QoS 2 must come exactly once; one
publisher's order on a topic is kept.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from mqtt_support import (
    V3,
    V5,
    Client,
    Received,
    metric,
    mqtt_port,
    paho_properties,
    start_mqtt_server,
    unique,
    wait_for,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from strata_process import StrataProcess

from tools.s3local import free_port

EXPIRY = 3600
COUNT = 200


def _persistent(port: int, client_id: str, version: int, **kwargs: Any) -> Client:
    """A persistent session: clean_session=False (3.1.1) or clean_start=False + expiry (5)."""
    expiry = EXPIRY if version == V5 else None
    return Client(port, client_id, version=version, clean=False, session_expiry=expiry, **kwargs)


def _first_seen(payloads: list[bytes]) -> list[bytes]:
    seen: set[bytes] = set()
    out = []
    for p in payloads:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _restart(server: StrataProcess, data_dir: Path, **kwargs: Any) -> StrataProcess:
    server.kill()
    return start_mqtt_server(data_dir, **kwargs)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[StrataProcess]:
    with start_mqtt_server(data_dir) as process:
        yield process


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_queued_qos1_and_qos2_survive_sigkill(
    server: StrataProcess, data_dir: Path, version: int
) -> None:
    port = mqtt_port(server)
    sid = unique("sess")
    t1, t2 = unique("dur/q1"), unique("dur/q2")
    with _persistent(port, sid, version) as sub:
        assert sub.subscribe(t1, 1)[0] == 1
        assert sub.subscribe(t2, 2)[0] == 2
    q1 = [f"q1-{i}".encode() for i in range(COUNT)]
    q2 = [f"q2-{i}".encode() for i in range(COUNT)]
    pub = Client(port, version=version, max_inflight=100)
    infos = [pub.publish(t1, p, 1, wait=False) for p in q1]
    infos += [pub.publish(t2, p, 2, wait=False) for p in q2]
    for info in infos:
        info.wait_for_publish(20)
    assert all(info.is_published() for info in infos)
    pub.drop()  # no DISCONNECT: the kill comes right after the last acknowledgement

    with (
        _restart(server, data_dir) as again,
        _persistent(mqtt_port(again), sid, version) as sub,
        Client(mqtt_port(again), version=version) as marker,
    ):
        assert sub.session_present
        sub.expect(COUNT, t1)
        sub.expect(COUNT, t2)
        sub.barrier(marker, t2, qos=2)
        got1 = [m.payload for m in sub.messages(t1)]
        got2 = [m.payload for m in sub.messages(t2) if not m.payload.startswith(b"marker")]
    dups = len(got1) - len(set(got1))
    print(f"QoS 1 duplicates after the restart: {dups} of {COUNT}")
    assert set(got1) == set(q1), f"QoS 1 lost {len(set(q1) - set(got1))}"
    assert _first_seen(got1) == q1, "QoS 1 order on one topic changed"
    assert got2 == q2, f"QoS 2 not exactly once in order ({len(got2)} received)"


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_retained_set_replaced_and_cleared_survive_sigkill(
    server: StrataProcess, data_dir: Path, version: int
) -> None:
    base = unique("ret")
    with Client(mqtt_port(server), version=version) as pub:
        pub.publish(f"{base}/set", b"one", 1, retain=True)
        pub.publish(f"{base}/replaced", b"old", 1, retain=True)
        pub.publish(f"{base}/replaced", b"new", 2, retain=True)
        pub.publish(f"{base}/cleared", b"gone", 1, retain=True)
        pub.publish(f"{base}/cleared", b"", 1, retain=True)
        pub.drop()

    with _restart(server, data_dir) as again:
        port = mqtt_port(again)
        with Client(port, version=version) as sub, Client(port, version=version) as pub:
            sub.subscribe(f"{base}/#", 1)
            marker_topic = f"{base}/marker"
            sub.barrier(pub, marker_topic)
            retained = {m.topic: m.payload for m in sub.messages() if m.topic != marker_topic}
            assert retained == {f"{base}/set": b"one", f"{base}/replaced": b"new"}
            assert all(m.retain for m in sub.messages() if m.topic != marker_topic)


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_subscriptions_of_a_persistent_session_survive_sigkill(
    server: StrataProcess, data_dir: Path, version: int
) -> None:
    sid = unique("subs")
    base = unique("subs")
    with _persistent(mqtt_port(server), sid, version) as sub:
        sub.subscribe(f"{base}/+/temp", 1)
        sub.subscribe(f"{base}/exact", 2)

    with _restart(server, data_dir) as again:
        port = mqtt_port(again)
        with Client(port, version=version) as pub:
            pub.publish(f"{base}/a/temp", b"while-offline", 1)
            pub.publish(f"{base}/exact", b"exact-offline", 2)
            pub.publish(f"{base}/a/other", b"not-matching", 1)
            with _persistent(port, sid, version) as sub:
                assert sub.session_present
                sub.expect(2)
                pub.publish(f"{base}/b/temp", b"while-online", 1)
                sub.expect(3)
                sub.barrier(pub, f"{base}/c/temp")
                temps = [m.payload for m in sub.messages() if m.topic.endswith("/a/temp")]
                temps += [m.payload for m in sub.messages() if m.topic.endswith("/b/temp")]
                assert temps == [b"while-offline", b"while-online"]
                assert [m.payload for m in sub.messages(f"{base}/exact")] == [b"exact-offline"]
                assert sub.messages(f"{base}/a/other") == []


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_inflight_deliveries_at_the_kill_are_resent(
    server: StrataProcess, data_dir: Path, version: int
) -> None:
    port = mqtt_port(server)
    sid = unique("infl")
    t1, t2 = unique("infl/q1"), unique("infl/q2")
    n = 10
    first = _persistent(port, sid, version, auto_ack=False)
    first.subscribe(t1, 1)
    first.subscribe(t2, 2)
    with Client(port, version=version) as pub:
        for i in range(n):
            pub.publish(t1, f"a{i}".encode(), 1, wait=False)
            pub.publish(t2, f"b{i}".encode(), 2, wait=False)
        first.expect(n, t1)
        # QoS 2 reaches paho's application only at PUBREL; wait for those too.
        first.expect(n, t2)
        acked: list[Received] = first.messages(t1)[:4] + first.messages(t2)[:4]
        for m in acked:
            first.paho.ack(m.mid, m.qos)
        # A PINGREQ round trip after the acks does not prove they are stored,
        # so acknowledged QoS 1 messages may come back; unacked ones must.
        first_payloads = [m.payload for m in first.messages()]
    first.drop()

    with _restart(server, data_dir) as again:
        second = _persistent(mqtt_port(again), sid, version)
        try:
            assert second.session_present
            unacked1 = {m.payload for m in first.messages(t1)[4:]}
            wait_for(
                lambda: unacked1 <= {m.payload for m in second.messages(t1)},
                what="unacknowledged QoS 1 resent",
            )
            with Client(mqtt_port(again), version=version) as pub:
                second.barrier(pub, t2)
            again1 = [m.payload for m in second.messages(t1) if m.payload not in unacked1]
            print(f"in flight: {len(again1)} of 4 acknowledged QoS 1 came back")
            for m in second.messages(t1):
                if m.payload in unacked1:
                    assert m.dup, f"{m.payload!r} resent without DUP"
            q2 = collections.Counter(
                p
                for p in first_payloads + [m.payload for m in second.messages(t2)]
                if p.startswith(b"b")
            )
            assert q2 == dict.fromkeys([f"b{i}".encode() for i in range(n)], 1)
        finally:
            second.close()


class _Publisher:
    """QoS 1 publishes in a loop through one v5 client; remembers which were acknowledged."""

    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self.codes: dict[int, int] = {}
        self.sent: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, unique("pub"), protocol=V5)
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.codes[mid] = int(rc.value) if hasattr(rc, "value") else int(rc)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set() and i < 60000:
            payload = f"m{i}".encode()
            info = self.client.publish(self.topic, payload, 1)
            with self.lock:
                self.sent[info.mid] = payload
            i += 1
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                self.stop.wait(0.05)  # not connected right now; paho reconnects by itself

    def acked(self) -> list[bytes]:
        with self.lock:
            sent = list(self.sent.items())
        return [p for mid, p in sent if self.codes.get(mid, 0x80) < 0x80]


def test_remote_journal_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    rpc_port = free_port()
    journal_env = {"STRATA_JOURNAL_PORT": str(rpc_port), "STRATA_JOURNAL_FSYNC": "always"}
    journal_dir = tmp_path / "journal-node"
    sid, topic = unique("remote"), unique("remote/t")
    with StrataProcess(journal_dir, "--role", "journal", env=journal_env) as journal:
        journal.wait_ready()
        with start_mqtt_server(
            tmp_path / "broker-node", "--role", "broker", "--journal", f"127.0.0.1:{rpc_port}"
        ) as broker:
            port = mqtt_port(broker)
            with _persistent(port, sid, V5) as sub:
                sub.subscribe(topic, 1)
            publisher = _Publisher(port, topic)
            publisher.thread.start()
            try:
                wait_for(lambda: len(publisher.acked()) >= 100, what="100 acks before the kill")
                journal.kill()
                at_kill = len(publisher.acked())
                with StrataProcess(journal_dir, "--role", "journal", env=journal_env) as again:
                    again.wait_ready()
                    wait_for(
                        lambda: len(publisher.acked()) >= at_kill + 100,
                        timeout=40,
                        what="100 acks after the journal restart",
                    )
                    publisher.stop.set()
                    publisher.thread.join(20)
                    # let in-flight publishes settle, then take the acknowledged set
                    wait_for(
                        lambda: all(mid in publisher.codes for mid in list(publisher.sent)[-5:]),
                        what="the last publishes answered",
                    )
                    acked = publisher.acked()
                    refused = sum(code >= 0x80 for code in list(publisher.codes.values()))
                    print(
                        f"remote journal: {len(publisher.sent)} sent, {len(acked)} acked, "
                        f"{refused} refused (0x80) while the journal was down"
                    )
                    with _persistent(port, sid, V5) as sub:
                        assert sub.session_present
                        wait_for(
                            lambda: set(acked) <= {m.payload for m in sub.messages(topic)},
                            what=f"{len(acked)} acknowledged messages",
                        )
                        got = [m.payload for m in sub.messages(topic)]
                        order = [p for p in _first_seen(got) if p in set(acked)]
                        assert order == acked, "order of acknowledged messages changed"
            finally:
                publisher.stop.set()
                publisher.client.loop_stop()


def test_qos0_works_with_fsync_always(tmp_path: Path) -> None:
    with start_mqtt_server(tmp_path / "data", env={"STRATA_MQTT_FSYNC": "always"}) as server:
        port = mqtt_port(server)
        topic = unique("q0")
        with Client(port) as sub, Client(port) as pub:
            sub.subscribe(topic, 0)
            for i in range(500):
                pub.publish(topic, f"{i}".encode(), 0, wait=False)
            got = sub.expect(500, topic)
            assert [m.payload for m in got] == [f"{i}".encode() for i in range(500)]
            assert all(m.qos == 0 for m in got)


def _raw_connect(port: int, client_id: str) -> socket.socket:
    """A raw 5.0 connection to a persistent session (clean start 0, expiry 1 h)."""
    props = b"\x11" + struct.pack(">I", EXPIRY)
    body = b"\x00\x04MQTT\x05\x00" + struct.pack(">H", 60) + bytes([len(props)]) + props
    body += struct.pack(">H", len(client_id)) + client_id.encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(bytes([0x10, len(body)]) + body)
    return sock


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    header = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return header, exactly(length)


@pytest.mark.parametrize("resend", ["publish-dup", "pubrel"])
def test_inbound_qos2_state_survives_sigkill(
    server: StrataProcess, data_dir: Path, resend: str
) -> None:
    """PUBREC received, broker killed: the resent PUBLISH (DUP) or PUBREL completes it once."""
    sid, pub_id, topic = unique("q2sub"), unique("q2pub"), unique("q2in")
    with _persistent(mqtt_port(server), sid, V5) as sub:
        sub.subscribe(topic, 2)
    publish = struct.pack(">H", len(topic)) + topic.encode() + b"\x00\x07\x00" + b"exactly"
    sock = _raw_connect(mqtt_port(server), pub_id)
    assert _read_packet(sock)[0] == 0x20
    sock.sendall(bytes([0x34, len(publish)]) + publish)
    header, body = _read_packet(sock)
    assert header == 0x50, hex(header)  # PUBREC
    assert body[:2] == b"\x00\x07"
    assert body[2:3] in (b"", b"\x00")
    sock.close()

    with _restart(server, data_dir) as again:
        port = mqtt_port(again)
        sock = _raw_connect(port, pub_id)
        header, body = _read_packet(sock)
        assert header == 0x20
        assert body[0] == 1, "session present"
        if resend == "publish-dup":
            sock.sendall(bytes([0x3C, len(publish)]) + publish)
            header, body = _read_packet(sock)
            assert header == 0x50, hex(header)
            assert body[2:3] in (b"", b"\x00")
        sock.sendall(b"\x62\x02\x00\x07")  # PUBREL 7
        header, body = _read_packet(sock)
        assert header == 0x70, hex(header)  # PUBCOMP
        assert body[2:3] in (b"", b"\x00"), f"PUBCOMP reason {body[2:3]!r}"
        sock.close()
        with (
            _persistent(port, sid, V5) as sub,
            Client(port, version=V5) as marker,
        ):
            assert sub.session_present
            before = sub.barrier(marker, topic, qos=2)
            assert [m.payload for m in before] == [b"exactly"]


def test_qos2_session_across_two_kills_gets_each_message_once(
    server: StrataProcess, data_dir: Path
) -> None:
    """Kill, reconnect and consume, publish more, kill again: nothing twice, nothing lost."""
    sid, topic = unique("twice"), unique("twice/t")
    with _persistent(mqtt_port(server), sid, V5) as sub:
        sub.subscribe(topic, 2)
    first = [f"a{i}".encode() for i in range(50)]
    second = [f"b{i}".encode() for i in range(50)]
    with Client(mqtt_port(server), version=V3) as pub:
        for info in [pub.publish(topic, p, 2, wait=False) for p in first]:
            info.wait_for_publish(20)
    with _restart(server, data_dir) as again:
        port = mqtt_port(again)
        with _persistent(port, sid, V5) as sub, Client(port, version=V5) as marker:
            assert sub.session_present
            got = [m.payload for m in sub.barrier(marker, topic, qos=2)]
            assert got == first
        with Client(port, version=V3) as pub:
            for info in [pub.publish(topic, p, 2, wait=False) for p in second]:
                info.wait_for_publish(20)
        with _restart(again, data_dir) as third:
            port = mqtt_port(third)
            with _persistent(port, sid, V5) as sub, Client(port, version=V5) as marker:
                assert sub.session_present
                before = sub.barrier(marker, topic, qos=2)
                # markers are filtered out: only the QoS 2 messages are counted
                got = [m.payload for m in before if not m.payload.startswith(b"marker")]
                assert got == second


def test_fewer_shards_after_a_kill_is_refused_and_nothing_is_stranded(
    server: StrataProcess, data_dir: Path
) -> None:
    """Lowering mqtt.shards would strand messages in the shards beyond: the start fails."""
    sid = unique("shards")
    topics = [unique(f"shards/{i}") for i in range(8)]  # some land in shards >= 2
    with _persistent(mqtt_port(server), sid, V5) as sub:
        sub.subscribe("shards/#", 1)
    with Client(mqtt_port(server), version=V5) as pub:
        for topic in topics:
            pub.publish(topic, topic.encode(), 1)
    server.kill()
    with StrataProcess(data_dir, env={"STRATA_MQTT_SHARDS": "2"}) as refused:
        assert refused.wait() != 0
        assert "mqtt.shards is 2 but" in refused.output()
    with start_mqtt_server(data_dir) as again, _persistent(mqtt_port(again), sid, V5) as sub:
        assert sub.session_present
        wait_for(
            lambda: {m.payload for m in sub.messages()} >= {t.encode() for t in topics},
            what="every message after the refused start",
        )


@pytest.mark.parametrize("version", [V3, V5], ids=["v311", "v5"])
def test_unsubscribe_and_shared_subscription_survive_sigkill(
    server: StrataProcess, data_dir: Path, version: int
) -> None:
    sid, base = unique("unsub"), unique("unsub")
    with _persistent(mqtt_port(server), sid, version) as sub:
        sub.subscribe(f"{base}/gone", 1)
        sub.subscribe(f"$share/g/{base}/shared", 1)
        sub.unsubscribe(f"{base}/gone")
    with Client(mqtt_port(server), version=version) as pub:
        for i in range(20):
            pub.publish(f"{base}/shared", f"s{i}".encode(), 1)
        pub.publish(f"{base}/gone", b"before-kill", 1)

    with _restart(server, data_dir) as again:
        port = mqtt_port(again)
        with Client(port, version=version) as pub:
            pub.publish(f"{base}/gone", b"after-kill", 1)
            with _persistent(port, sid, version) as sub:
                assert sub.session_present
                before = sub.barrier(pub, f"{base}/shared")
                shared = _first_seen([m.payload for m in before])
                assert shared == [f"s{i}".encode() for i in range(20)]
                assert sub.messages(f"{base}/gone") == []


def test_large_queued_messages_survive_sigkill(server: StrataProcess, data_dir: Path) -> None:
    """Messages larger than one journal read (256 KiB) are read back whole after a restart."""
    sid, topic = unique("large"), unique("large/t")
    with _persistent(mqtt_port(server), sid, V5) as sub:
        sub.subscribe(topic, 1)
    payloads = [bytes([65 + i]) * (600 << 10) for i in range(3)] + [b"small"]
    with Client(mqtt_port(server), version=V5) as pub:
        for payload in payloads:
            pub.publish(topic, payload, 1)
    with _restart(server, data_dir) as again, _persistent(mqtt_port(again), sid, V5) as sub:
        assert sub.session_present
        got = sub.expect(len(payloads), topic)
        assert _first_seen([m.payload for m in got]) == payloads


def _parse_publish(header: int, body: bytes) -> tuple[bool, int, str, int, bytes]:
    """(dup, qos, topic, packet id, payload) of a 5.0 PUBLISH."""
    assert header >> 4 == 3, hex(header)
    qos = (header >> 1) & 3
    n = struct.unpack(">H", body[:2])[0]
    topic = body[2 : 2 + n].decode()
    pos = 2 + n
    pid = 0
    if qos:
        pid = struct.unpack(">H", body[pos : pos + 2])[0]
        pos += 2
    props_len = body[pos]  # small in this test: one byte
    return bool(header & 8), qos, topic, pid, body[pos + 1 + props_len :]


def test_unacknowledged_deliveries_keep_their_packet_ids_across_sigkill(
    server: StrataProcess, data_dir: Path
) -> None:
    """MQTT-4.4.0-1: resend unacknowledged PUBLISHes with their original packet ids."""
    sid, base = unique("pid"), unique("pid")
    sock = _raw_connect(mqtt_port(server), sid)
    assert _read_packet(sock)[0] == 0x20
    for pid, (suffix, qos) in enumerate([("q1", 1), ("q2", 2)], start=1):
        f = f"{base}/{suffix}".encode()
        body = struct.pack(">H", pid) + b"\x00" + struct.pack(">H", len(f)) + f + bytes([qos])
        sock.sendall(bytes([0x82, len(body)]) + body)
        header, ack = _read_packet(sock)
        assert header == 0x90
        assert ack[-1] == qos
    with Client(mqtt_port(server), version=V5) as pub:
        pub.publish(f"{base}/q1", b"one", 1)
        pub.publish(f"{base}/q2", b"two", 2)
    first = sorted(_parse_publish(*_read_packet(sock)) for _ in range(2))
    assert [(p[1], p[4]) for p in first] == [(1, b"one"), (2, b"two")]
    sock.close()  # no PUBACK, no PUBREC

    with _restart(server, data_dir) as again:
        sock = _raw_connect(mqtt_port(again), sid)
        header, body = _read_packet(sock)
        assert header == 0x20
        assert body[0] == 1
        resent = sorted(_parse_publish(*_read_packet(sock)) for _ in range(2))
        assert [(p[1], p[3], p[4]) for p in resent] == [(p[1], p[3], p[4]) for p in first]
        assert all(p[0] for p in resent), "resent without DUP"
        sock.close()


def test_session_expiry_counts_from_the_disconnect_across_a_restart(
    server: StrataProcess, data_dir: Path
) -> None:
    """A session that expired while the broker was down is gone when it comes back."""
    sid = unique("expires")
    port = mqtt_port(server)
    with Client(port, sid, version=V5, clean=False, session_expiry=2) as first:
        first.subscribe(unique("exp/t"), 1)
    gone_at = time.monotonic()
    # the server has seen the DISCONNECT (and noted when) once the connection is gone
    wait_for(lambda: metric(server, "strata_connections", protocol="mqtt") == 0)
    server.kill()
    wait_for(lambda: time.monotonic() - gone_at > 2.5, timeout=10, what="the expiry to pass")
    with start_mqtt_server(data_dir) as again:
        with Client(mqtt_port(again), sid, version=V5, clean=False, session_expiry=60) as back:
            assert back.session_present is False
        with Client(mqtt_port(again), sid, version=V5, clean=False, session_expiry=60) as kept:
            assert kept.session_present is True  # a live session still counts from now


def test_a_will_waiting_out_its_delay_survives_a_restart(
    server: StrataProcess, data_dir: Path
) -> None:
    topic = unique("will/restart")
    will_props = paho_properties(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    client = Client(
        mqtt_port(server),
        unique("will"),
        version=V5,
        clean=False,
        session_expiry=60,
        will=(topic, b"gone", 1, True),
        will_properties=will_props,
    )
    client.drop()  # no DISCONNECT: the will is due in 2 s
    wait_for(lambda: metric(server, "strata_connections", protocol="mqtt") == 0)
    with _restart(server, data_dir) as again, Client(mqtt_port(again), version=V5) as watcher:
        watcher.subscribe(topic, 1)  # retained: seen whether it fired before or after this
        (will,) = watcher.expect(1, topic)
        assert will.payload == b"gone"

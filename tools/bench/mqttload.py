"""The load generators of the MQTT benchmark: code that runs in worker processes.

Every function here is a top-level function with picklable arguments and
results, so ``tools/bench/mqtt.py`` runs them in a ``multiprocessing`` pool
(spawn) and the clients use every core. Every loop ends by itself: each worker
gets absolute deadlines (``time.time()``; all processes are on one machine).

* :func:`publish` is a paced paho-mqtt publisher (MQTT 3.1.1, TCP_NODELAY,
  no network thread: ``publish`` writes straight to the socket and a
  ``select`` loop here reads the PUBACKs of QoS 1, within paho's in-flight
  window).
* :func:`subscribe` is a minimal hand-written MQTT 3.1.1 subscriber on a raw
  socket: it parses whole receive buffers of PUBLISH packets at once and acks
  QoS 1 in one write per buffer, so that the receiving side costs a few µs a
  message and is not what limits a fan-in.
* :func:`hold_idle` opens idle connections (hand-encoded CONNECT, CONNACK
  read) and keeps them until told to let go through a file.

Payloads start with ``time.time_ns()`` at publish (8 bytes), the publisher
number (4) and its sequence number (4): the subscriber computes end-to-end
latency with one clock read per receive buffer and counts unique messages.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import select
import socket
import struct
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HEADER",
    "IdleResult",
    "PubResult",
    "SubResult",
    "connect_packet",
    "hold_idle",
    "mqtt_probe",
    "publish",
    "subscribe",
]

HEADER = struct.Struct(">QII")  # time.time_ns(), publisher, sequence
CONNECT_TIMEOUT = 5.0
TICK = 0.001  # the pacing step of a publisher
RECV_BYTES = 1 << 22
QUIET = 0.25  # a subscriber stops after this long without data once publishers are done


# -- MQTT 3.1.1 wire encoding (just what the load needs) -----------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keepalive: int = 0) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session: 14 bytes plus the client id."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack(">HH", keepalive, len(cid)) + cid
    return b"\x10" + _varint(len(body)) + body


def _subscribe_packet(topic: str, qos: int, packet_id: int = 1) -> bytes:
    t = topic.encode()
    body = struct.pack(">HH", packet_id, len(t)) + t + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _connect(host: str, port: int, client_id: str) -> socket.socket:
    """A TCP connection that has been sent CONNECT and read a CONNACK accepting it."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(client_id))
        connack = _recv_exact(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"CONNECT refused: {connack.hex()}")
    except BaseException:
        sock.close()
        raise
    return sock


def mqtt_probe(host: str, port: int, timeout: float) -> bool:
    """True if ``host:port`` answers an MQTT CONNECT with an accepting CONNACK."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False
    try:
        sock.settimeout(timeout)
        sock.sendall(connect_packet(f"probe-{os.getpid()}"))
        connack = _recv_exact(sock, 4)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        return connack[0] == 0x20 and connack[3] == 0
    except OSError:
        return False
    finally:
        sock.close()


# -- the subscriber -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubResult:
    received: int  # PUBLISH packets, duplicates included
    unique: int
    latencies_us: bytes  # array('q') of end-to-end latencies, one per unique message
    subscribed_in_time: bool
    first_s: float  # time.time() of the first and last message
    last_s: float
    cpu_s: float  # CPU time of this process while receiving


def subscribe(
    host: str,
    port: int,
    client_id: str,
    topic: str,
    qos: int,
    publishers: int,
    per_publisher: int,
    ready_file: str,
    done_file: str,
    start_at_latest: float,
    deadline: float,
) -> SubResult:
    """Receive until every expected message arrived or ``deadline`` (``time.time()``).

    Writes ``ready_file`` once the SUBACK is in. ``per_publisher`` bounds the
    sequence numbers (a bitmap per publisher counts unique messages). Once
    ``done_file`` holds the publishers' sent counts, it stops when it has them
    all, or after ``QUIET`` seconds without data.
    """
    sock = _connect(host, port, client_id)
    seen = [bytearray(per_publisher) for _ in range(publishers)]
    expected = publishers * per_publisher
    lat = array("q")
    received = unique = 0
    first = last = math.nan
    try:
        sock.sendall(_subscribe_packet(topic, qos))
        suback = _recv_exact(sock, 5)
        if suback[0] != 0x90 or suback[4] > 2:
            raise ConnectionError(f"SUBSCRIBE refused: {suback.hex()}")
        in_time = time.time() < start_at_latest
        Path(ready_file).write_text("ready")
        cpu0 = time.process_time()
        sock.settimeout(0.05)
        buf = bytearray(RECV_BYTES)
        view = memoryview(buf)
        have = 0  # bytes of an incomplete packet kept at the front of buf
        unpack = HEADER.unpack_from
        last_data = next_check = time.time()
        done = False
        while unique < expected:
            now_s = time.time()
            if now_s >= next_check:
                if now_s >= deadline:
                    break
                next_check = now_s + 0.05
                if not done and os.path.exists(done_file):  # written whole, by a rename
                    expected = sum(int(x) for x in Path(done_file).read_text().split(","))
                    done = True
                    continue
            try:
                got = sock.recv_into(view[have:])
            except TimeoutError:
                if done and now_s - last_data >= QUIET:
                    break
                next_check = now_s
                continue
            if not got:
                break
            now_ns = time.time_ns()
            last_data = now_ns / 1e9
            pos, n = 0, have + got
            acks = []
            while pos + 2 <= n:
                head = buf[pos]
                # remaining length: 1 to 4 bytes
                length = mult = 0
                i = pos + 1
                while True:
                    if i >= n:
                        length = -1
                        break
                    b = buf[i]
                    length |= (b & 0x7F) << mult
                    i += 1
                    if not b & 0x80:
                        break
                    mult += 7
                if length < 0 or i + length > n:
                    break
                end = i + length
                if head >> 4 == 3:  # PUBLISH
                    tlen = (buf[i] << 8) | buf[i + 1]
                    p = i + 2 + tlen
                    if head & 0x06:  # QoS 1 (2 is never asked for)
                        acks.append(b"\x40\x02" + buf[p : p + 2])
                        p += 2
                    ts, pub, seq = unpack(buf, p)
                    received += 1
                    if pub < publishers and seq < per_publisher and not seen[pub][seq]:
                        seen[pub][seq] = 1
                        unique += 1
                        lat.append((now_ns - ts) // 1000)
                pos = end
            have = n - pos
            if have:
                buf[:have] = buf[pos:n]
            if acks:
                sock.sendall(b"".join(acks))
            if received:
                last = now_ns / 1e9
                if math.isnan(first):
                    first = last
        cpu = time.process_time() - cpu0
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")
    finally:
        sock.close()
    return SubResult(received, unique, lat.tobytes(), in_time, first, last, cpu)


# -- the publisher --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PubResult:
    sent: int
    seconds: float  # from the first publish to the last
    unacked: int  # QoS 1 messages not acknowledged by the end
    cpu_s: float  # CPU time of this process while publishing


def publish(
    host: str,
    port: int,
    client_id: str,
    topic: str,
    qos: int,
    number: int,
    rate: float,
    count: int,
    payload_bytes: int,
    start_at: float,
    stop_at: float,
    inflight: int,
) -> PubResult:
    """Publish ``count`` messages at ``rate`` msg/s from ``start_at`` until ``stop_at``.

    Paced per 1 ms tick: at each tick it sends what the schedule says is due,
    so a publisher that falls behind sends back to back (and its achieved
    rate shows it).
    """
    import paho.mqtt.client as mqtt  # only the workers need paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=60)
    while not client.is_connected():
        if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS or time.time() > start_at + 5:
            raise ConnectionError(f"publisher {client_id} could not connect")
    # Without a network thread, paho's wake-up socket pair only costs a send() per
    # publish (and fills up): drop it and drive the socket with select() here.
    client._reset_sockets(sockpair_only=True)
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paho leaves Nagle on

    def service(timeout: float) -> None:
        """Read what came (PUBACKs), write what paho queued, for up to ``timeout`` s."""
        if sock.fileno() < 0:  # paho closed it: the broker went away
            raise ConnectionError(f"publisher {client_id}: the broker closed the connection")
        writing = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], writing, [], timeout)
        if readable:
            client.loop_read(100)
        if writable or client.want_write():
            client.loop_write()

    pad = bytes(payload_bytes - HEADER.size)
    pack = HEADER.pack
    pub = client.publish
    sent = 0
    while (ahead := start_at - time.time()) > 0:
        service(min(0.01, ahead))
    t0 = time.time()
    last = t0
    cpu0 = time.process_time()
    try:
        while sent < count:
            now = time.time()
            if now >= stop_at:
                break
            due = min(count, int((now - t0) * rate) + 1)
            while sent < due:
                pub(topic, pack(time.time_ns(), number, sent) + pad, qos)
                sent += 1
            last = time.time()
            wait = t0 + sent / rate - time.time()
            if qos or client.want_write():
                service(min(max(wait, 0.0), TICK))
            elif wait > 0:
                time.sleep(min(wait, TICK))
        # wait for paho's write queue and, for QoS 1, the in-flight window to drain
        drain_until = min(stop_at + 2.0, time.time() + 2.0)
        while (client.want_write() or (qos and client._out_messages)) and time.time() < drain_until:
            service(0.01)
        unacked = len(client._out_messages) if qos else 0
        cpu = time.process_time() - cpu0
        client.disconnect()  # written at once (no network thread), then paho closes
    finally:
        sock.close()
    return PubResult(sent, max(last - t0, 1e-9), unacked, cpu)


# -- idle connections -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdleResult:
    opened: int
    error: str


def hold_idle(
    host: str,
    port: int,
    count: int,
    worker: int,
    ready_file: str,
    release_file: str,
    deadline: float,
) -> IdleResult:
    """Open ``count`` MQTT connections, write ``ready_file``, hold until ``release_file``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    socks: list[socket.socket] = []
    error = ""
    try:
        try:
            for i in range(count):
                if time.time() > deadline:
                    error = "deadline"
                    break
                socks.append(_connect(host, port, f"idle-{worker}-{i}"))
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        Path(ready_file).write_text(str(len(socks)))
        while not os.path.exists(release_file) and time.time() < deadline:
            time.sleep(0.02)
    finally:
        for s in socks:
            s.close()
    return IdleResult(len(socks), error)

"""Object stores for tests: where one is (:class:`ObjectStore`), how to break S3 (:class:`S3Proxy`).

:class:`ObjectStore` is the ``object_url``/``object_options`` pair a journal or
an :class:`~journal.tiering.ObjectTier` is opened with; the fixtures in
``conftest.py`` hand them out (a ``file://`` directory, or a fresh bucket on
the session's moto server).

:class:`S3Proxy` is a TCP proxy on 127.0.0.1 in front of moto that a test runs
in a nursery::

    proxy = await nursery.start(S3Proxy.serve, moto_port)
    store = s3_store.through(proxy.endpoint)

Each accepted connection opens one upstream and bytes are pumped both ways.
Its modes model an outage: :meth:`S3Proxy.cut` (connections closed, new ones
closed at once), :meth:`S3Proxy.blackhole` (connections accepted and read,
never answered), :meth:`S3Proxy.fail_with` (every request answered with an
HTTP error status and an S3 XML error body, then the connection closed),
:meth:`S3Proxy.hold` (requests kept unanswered, and delivered to the store
late by :meth:`S3Proxy.release_held`), and :meth:`S3Proxy.restore`.
Switching modes closes every open connection (held ones aside), so the
clients' pooled keep-alive connections cannot carry on past the switch.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Literal, TypeVar

import fsspec
import trio

from journal.errors import ObjectStoreError

__all__ = ["ObjectStore", "S3Proxy", "endpoint_port"]

HOST = "127.0.0.1"
MAX_HEADER_BYTES = 64 << 10
CHUNK = 64 << 10
DELIVERY_TIMEOUT = 10.0  # bound on delivering held bytes upstream

Mode = Literal["proxy", "cut", "blackhole", "fail", "hold"]

# The S3 error code a status is answered with.
S3_CODES = {
    400: "BadRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    500: "InternalError",
    503: "SlowDown",
}


@dataclass(frozen=True)
class ObjectStore:
    """An fsspec URL and its storage options: where a journal keeps its object tier."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (S3 stores only)."""
        endpoint: str = self.options["client_kwargs"]["endpoint_url"]
        return endpoint

    def through(self, endpoint: str) -> ObjectStore:
        """The same S3 bucket and prefix, reached through ``endpoint`` (e.g. an S3Proxy)."""
        client_kwargs = dict(self.options.get("client_kwargs", {}))
        client_kwargs["endpoint_url"] = endpoint
        return replace(self, options={**self.options, "client_kwargs": client_kwargs})

    def filesystem(self) -> tuple[Any, str]:
        """A fresh fsspec filesystem for the store and the root path in it."""
        fs, root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **self.options)
        return fs, str(root).rstrip("/")

    def list_keys(self) -> list[str]:
        """Every object under the store's root, as keys relative to it (blocking)."""
        fs, root = self.filesystem()
        fs.invalidate_cache()
        try:
            found = fs.find(root)
        except FileNotFoundError:
            return []
        prefix = root.lstrip("/") + "/"
        return sorted(str(p).lstrip("/").removeprefix(prefix) for p in found)


def endpoint_port(endpoint: str) -> int:
    """The port of an ``http://host:port`` endpoint."""
    port = urllib.parse.urlsplit(endpoint).port
    if port is None:
        raise ValueError(f"no port in {endpoint!r}")
    return port


class S3Proxy:
    """A TCP proxy in front of an S3 endpoint that can cut, hang or fail requests."""

    def __init__(self, listener: trio.SocketListener, upstream_port: int) -> None:
        self._listener = listener
        self.upstream_port = upstream_port
        self.port: int = listener.socket.getsockname()[1]
        self.endpoint = f"http://{HOST}:{self.port}"
        self.mode: Mode = "proxy"
        self.status = 503
        self.accepted = 0  # connections accepted, in any mode
        self.failed_requests = 0  # requests answered by fail_with
        self.delivered_late = 0  # held connections whose bytes reached the upstream late
        self._connections: set[trio.CancelScope] = set()
        self._release = trio.Event()
        self._held: list[trio.Event] = []  # one per held connection: set once it is done

    @classmethod
    async def serve(
        cls,
        upstream_port: int,
        *,
        task_status: trio.TaskStatus[S3Proxy] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on a free port of 127.0.0.1 and proxy to ``upstream_port`` until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        proxy = cls(listeners[0], upstream_port)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(proxy)
                while True:
                    stream = await proxy._listener.accept()
                    proxy.accepted += 1
                    nursery.start_soon(proxy._handle, stream)
        finally:
            proxy._close_all()
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    # -- modes ---------------------------------------------------------------

    def cut(self) -> None:
        """Close every connection; close new ones as soon as they are accepted."""
        self._switch("cut")

    def blackhole(self) -> None:
        """Accept and read new connections but never answer (open ones are closed)."""
        self._switch("blackhole")

    def fail_with(self, status: int) -> None:
        """Answer every request on new connections with ``status`` and an S3 error body."""
        self.status = status
        self._switch("fail")

    def hold(self) -> None:
        """Accept new connections and keep what they send, unanswered, for :meth:`release_held`.

        A network that delays requests: the client times out, yet what it sent
        reaches the store later. Like a buffering proxy, it answers
        ``Expect: 100-continue`` itself, so a request's body is held too. Held
        connections outlive mode switches.
        """
        if self._release.is_set():
            self._release = trio.Event()
        self._switch("hold")

    async def release_held(self) -> int:
        """Deliver what every held connection sent to the upstream now (answers are dropped).

        Returns once each was delivered; the number of connections that had sent anything.
        """
        self._release.set()
        held, self._held = self._held, []
        for done in held:
            await done.wait()
        delivered, self.delivered_late = self.delivered_late, 0
        return delivered

    def restore(self) -> None:
        """Proxy again (connections opened during the outage are closed, held ones stay held)."""
        self._switch("proxy")

    def _switch(self, mode: Mode) -> None:
        self.mode = mode
        self._close_all()

    def _close_all(self) -> None:
        for scope in list(self._connections):
            scope.cancel()

    # -- connections ---------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        mode = self.mode
        if mode == "hold":
            done = trio.Event()
            self._held.append(done)
            try:
                await self._hold(stream, self._release)
            finally:
                done.set()
            return
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                async with stream:
                    if mode == "proxy":
                        await self._pump(stream)
                    elif mode == "blackhole":
                        while await stream.receive_some(CHUNK):
                            pass
                    elif mode == "fail":
                        await self._fail(stream, self.status)
                    # "cut": leaving the block closes it at once
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the client went away; nothing to report to anyone
            finally:
                self._connections.discard(scope)

    async def _pump(self, client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(HOST, self.upstream_port)
        except OSError:
            return
        async with upstream, trio.open_nursery() as nursery:

            async def copy(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                try:
                    while data := await source.receive_some(CHUNK):
                        await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                nursery.cancel_scope.cancel()  # one side is done: so is the connection

            nursery.start_soon(copy, client, upstream)
            nursery.start_soon(copy, upstream, client)

    async def _hold(self, client: trio.SocketStream, release: trio.Event) -> None:
        """Keep what the client sends until ``release``, then send it all upstream."""
        buffered = bytearray()

        async def collect() -> None:
            continued = False
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                while data := await client.receive_some(CHUNK):
                    buffered.extend(data)
                    head, end, _ = bytes(buffered).partition(b"\r\n\r\n")
                    expect = _parse_headers(head).get("expect", "").lower() if end else ""
                    if expect == "100-continue" and not continued:
                        # As a buffering proxy (nginx) does: take the body now, forward it later.
                        await client.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        continued = True

        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await release.wait()
            nursery.cancel_scope.cancel()
        if not buffered:
            return
        with (
            trio.move_on_after(DELIVERY_TIMEOUT),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
        ):
            upstream = await trio.open_tcp_stream(HOST, self.upstream_port)
            async with upstream:
                await upstream.send_all(bytes(buffered))
                await upstream.send_eof()
                while await upstream.receive_some(CHUNK):
                    pass  # the store answers a client that is gone
            self.delivered_late += 1

    async def _fail(self, stream: trio.SocketStream, status: int) -> None:
        """Read one request and answer it with ``status``; the connection then closes."""
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(CHUNK)
            if not data or len(buffer) > MAX_HEADER_BYTES:
                return
            buffer += data
        head, _, body = bytes(buffer).partition(b"\r\n\r\n")
        headers = _parse_headers(head)
        if headers.get("expect", "").lower() != "100-continue":
            await _drain_body(stream, headers, body)
        self.failed_requests += 1
        response = _error_response(status)
        if head.startswith(b"HEAD "):
            response = response.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"  # no body for HEAD
        await stream.send_all(response)


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


async def _drain_body(stream: trio.SocketStream, headers: dict[str, str], body: bytes) -> None:
    """Read the request body, so closing the socket does not reset the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        await _drain_chunked(stream, bytearray(body))
        return
    remaining = int(headers.get("content-length", "0") or 0) - len(body)
    while remaining > 0:
        more = await stream.receive_some(min(CHUNK, remaining))
        if not more:
            return
        remaining -= len(more)


async def _drain_chunked(stream: trio.SocketStream, data: bytearray) -> None:
    """Read a chunked body (and its trailers) to its end."""

    async def fill(n: int) -> bool:
        while len(data) < n:
            more = await stream.receive_some(CHUNK)
            if not more:
                return False
            data.extend(more)
        return True

    async def line() -> bytes | None:
        while (end := data.find(b"\r\n")) < 0:
            if not await fill(len(data) + 1):
                return None
        text = bytes(data[:end])
        del data[: end + 2]
        return text

    while (size_line := await line()) is not None:
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (trailer := await line()) is not None and trailer:
                pass  # trailers up to the empty line
            return
        if not await fill(size + 2):
            return
        del data[: size + 2]


def _error_response(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    code = S3_CODES.get(status, "ServiceUnavailable" if status >= 500 else "BadRequest")
    if status == 503:
        reason = "Slow Down"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by S3Proxy</Message>"
        "<RequestId>s3proxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("latin-1")
    return head + body


T = TypeVar("T")


def break_store(proxy: S3Proxy, how: str) -> None:
    """Break the store behind ``proxy``: "cut", "blackhole" or "fail_with_<status>"."""
    if how == "cut":
        proxy.cut()
    elif how == "blackhole":
        proxy.blackhole()
    else:
        proxy.fail_with(int(how.removeprefix("fail_with_")))


async def eventually(call: Callable[[], Awaitable[T]], within: float) -> T:
    """``call()`` once it succeeds, retried on ObjectStoreError for at most ``within`` s.

    After an outage, calls abandoned at their timeout may still hold threads
    for a while (and the first call of a fresh S3 client can time out on a
    loaded machine); what must hold is that the store works again, not how soon.
    """
    with trio.fail_after(within):
        while True:
            try:
                return await call()
            except ObjectStoreError:
                await trio.lowlevel.checkpoint()

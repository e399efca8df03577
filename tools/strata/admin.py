"""The admin HTTP API and ``/metrics``: a Starlette app served by Hypercorn's trio worker.

:func:`create_app` builds the app over any :class:`~journal.service.JournalService`
(the in-process journal or the remote client) and a :class:`~meta.users.UserStore`;
:func:`serve_admin` serves it on a listening socket until cancelled. Every
answer is JSON (``/metrics`` excepted); every error is
``{"error": {"code": "<snake_case>", "message": "..."}}`` with a fitting status,
never a traceback. ``docs/admin-api.md`` lists the routes.

Authentication (HTTP Basic against the user store):

* ``/health``, ``/ready`` and ``/metrics`` are open to loopback clients
  (127.0.0.0/8, ::1); from any other address they need credentials like the rest.
* While the user store is empty (a fresh install) loopback clients may use
  every route anonymously, so that ``strata user add NAME`` on the server host
  can create the first user; other clients get 403 saying so.
* Once a user exists, every ``/api`` route needs valid Basic credentials: 401
  (with ``WWW-Authenticate: Basic realm="strata"``) without them or with wrong
  ones, and the message never says whether the user exists.

The client address is the ASGI scope's ``client``: put no proxy in front of the
admin port, or every request looks local. Password checks run scrypt in a
worker thread (a few at a time); a successful check is remembered for a minute,
keyed by the user and an HMAC of the password under a per-process random key,
and forgotten as soon as any user changes.

Journal errors map to statuses by class; an error with a true ``retryable``
attribute (the remote journal is down) is 503 with ``Retry-After: 1``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, cast
from urllib.parse import unquote

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from journal.config import InvalidConfigError, StreamConfig
from journal.errors import (
    BatchTooLargeError,
    JournalClosedError,
    ObjectStoreError,
    OffsetOutOfRangeError,
    StrataError,
    StreamDeletedError,
    StreamExistsError,
    UnknownStreamError,
    leaf_exceptions,
)
from journal.journal import SegmentInfo, StreamInfo
from journal.records import Header, Record
from journal.service import JournalService
from journal.stats import JournalStatistics, StreamStatistics
from meta.errors import (
    InvalidPasswordError,
    InvalidUserNameError,
    UnknownUserError,
    UserExistsError,
)
from meta.users import UserInfo, UserStore
from tools.strata.config import ROLES
from tools.strata.metrics import (
    CONTENT_TYPE,
    AdminRequestCounts,
    MetricsSnapshot,
    ProtocolConnections,
    render_metrics,
)

__all__ = [
    "AUTH_CACHE_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_READ_BYTES",
    "create_app",
    "serve_admin",
]

MAX_BODY_BYTES = 16 << 20
"""Larger request bodies get 413."""
MAX_READ_BYTES = 64 << 20
"""The largest ``max_bytes`` a records GET may ask for."""
AUTH_CACHE_SECONDS = 60.0
_AUTH_CACHE_SIZE = 1024
_REALM = {"WWW-Authenticate": 'Basic realm="strata"'}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_ENCODINGS = ("utf-8", "base64")

logger = logging.getLogger("strata.admin")


class ApiError(Exception):
    """An error answer: status, snake_case code, message, extra headers and fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = dict(details or {})


def _api_error(exc: Exception) -> ApiError:
    """The answer to an exception a handler let through."""
    if getattr(exc, "retryable", False) is True:
        return ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"})
    table: list[tuple[type[Exception], int, str]] = [
        (StreamDeletedError, 404, "unknown_stream"),
        (UnknownStreamError, 404, "unknown_stream"),
        (StreamExistsError, 409, "stream_exists"),
        (InvalidConfigError, 400, "invalid_config"),
        (BatchTooLargeError, 413, "batch_too_large"),
        (UnknownUserError, 404, "unknown_user"),
        (UserExistsError, 409, "user_exists"),
        (InvalidUserNameError, 400, "invalid_user_name"),
        (InvalidPasswordError, 400, "invalid_password"),
        (JournalClosedError, 503, "journal_closed"),
        (ObjectStoreError, 503, "object_store_unavailable"),
    ]
    for cls, status, code in table:
        if isinstance(exc, cls):
            return ApiError(status, code, str(exc))
    if isinstance(exc, OffsetOutOfRangeError):
        return ApiError(
            400,
            "offset_out_of_range",
            str(exc),
            details={"first_offset": exc.first_offset, "next_offset": exc.next_offset},
        )
    if isinstance(exc, StrataError) and isinstance(exc, ValueError):
        return ApiError(400, "invalid_argument", str(exc))
    if isinstance(exc, StrataError):
        return ApiError(500, "internal_error", str(exc))
    return ApiError(500, "internal_error", "internal error; the server log has the details")


class _CountRequests:
    """ASGI middleware counting answered requests by method and status."""

    def __init__(self, app: ASGIApp, counts: AdminRequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        method = scope["method"] if scope["method"] in _METHODS else "other"
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.counts.requests[method, status] += 1


Handler = Callable[[Request], Awaitable[Response]]


class _Admin:
    """The app's state and its endpoints."""

    def __init__(
        self,
        service: JournalService,
        users: UserStore,
        *,
        ready: Callable[[], dict[str, bool]],
        connections: Callable[[], Mapping[str, ProtocolConnections]] | None,
        version: str,
        roles: tuple[str, ...],
        started_at: float,
    ) -> None:
        self.service = service
        self.users = users
        self.ready = ready
        self.connections = connections
        self.version = version
        self.roles = roles
        self.started_at = started_at
        self.counts = AdminRequestCounts()
        self._cache_key = secrets.token_bytes(32)
        # (user, HMAC of the password) -> (expiry on trio's clock, users.generation)
        self._auth_cache: OrderedDict[tuple[str, bytes], tuple[float, int]] = OrderedDict()

    # -- plumbing ---------------------------------------------------------------------

    def error(self, err: ApiError) -> JSONResponse:
        self.counts.errors[err.code] += 1
        body = {"error": {"code": err.code, "message": err.message, **err.details}}
        return JSONResponse(body, status_code=err.status, headers=err.headers)

    def endpoint(self, handler: Handler, *, public: bool = False) -> Handler:
        """``handler`` behind authentication, with every failure answered as JSON."""

        async def endpoint(request: Request) -> Response:
            try:
                await self.authorize(request, public=public)
                return await handler(request)
            except ApiError as err:
                return self.error(err)
            except Exception as exc:
                mapped = _api_error(exc)
                if mapped.status == 500:
                    logger.exception("admin API: %s %s failed", request.method, request.url.path)
                return self.error(mapped)

        return endpoint

    async def http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "bad_request"
        )
        return self.error(ApiError(exc.status_code, code, exc.detail, headers=exc.headers))

    def uptime(self) -> float:
        return max(0.0, time.time() - self.started_at)

    # -- authentication ---------------------------------------------------------------

    async def authorize(self, request: Request, *, public: bool) -> None:
        loopback = _is_loopback(request.scope.get("client"))
        if public and loopback:
            return
        if self.users.empty:
            if loopback:
                return
            raise ApiError(
                403,
                "no_users",
                "no user exists yet, so only clients on the server host may use the admin "
                "API: create the first user there with `strata user add NAME`",
            )
        credentials = _basic_credentials(request.headers.get("authorization"))
        if credentials is None:
            raise ApiError(
                401, "unauthorized", "this API needs HTTP Basic authentication", headers=_REALM
            )
        if not await self.check_password(*credentials):
            raise ApiError(401, "unauthorized", "wrong user name or password", headers=_REALM)

    async def check_password(self, name: str, password: str) -> bool:
        digest = hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()
        key = (name, digest)
        now = trio.current_time()
        cached = self._auth_cache.get(key)
        if cached is not None and cached[0] > now and cached[1] == self.users.generation:
            return True
        generation = self.users.generation
        ok = await self.users.verify_async(name, password)
        if ok:
            self._auth_cache[key] = (now + AUTH_CACHE_SECONDS, generation)
            self._auth_cache.move_to_end(key)
            while len(self._auth_cache) > _AUTH_CACHE_SIZE:
                self._auth_cache.popitem(last=False)
        else:
            self._auth_cache.pop(key, None)
        return ok

    # -- probes and metrics -----------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readiness(self, request: Request) -> Response:
        listeners = self.ready()
        ok = all(listeners.values())
        body = {"status": "ready" if ok else "starting", "listeners": listeners}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        stats: JournalStatistics | None
        try:
            stats = await self.service.get_statistics()
        except Exception as exc:
            if getattr(exc, "retryable", False) is not True:
                raise
            stats = None  # still report connections, uptime and the journal as down
        snapshot = MetricsSnapshot(
            journal=stats,
            connections=self.connections() if self.connections is not None else {},
            admin=self.counts,
            uptime_seconds=self.uptime(),
            version=self.version,
        )
        return Response(render_metrics(snapshot), media_type=CONTENT_TYPE)

    async def status(self, request: Request) -> Response:
        stats = await self.service.get_statistics()
        listeners = self.ready()
        streams = stats.per_stream.values()
        tiering = stats.tiering
        backlog = (
            tiering.backlog_bytes
            if tiering is not None
            else sum(s.migration_backlog_bytes for s in streams)
        )
        journal = {
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
        return JSONResponse(
            {
                "version": self.version,
                "roles": list(self.roles),
                "uptime_seconds": round(self.uptime(), 3),
                "ready": all(listeners.values()),
                "listeners": listeners,
                "object_url": tiering.object_url if tiering is not None else None,
                "journal": journal,
            }
        )

    # -- streams ----------------------------------------------------------------------

    async def list_streams(self, request: Request) -> Response:
        stats = await self.service.get_statistics()
        streams = [
            {
                "name": s.name,
                "first_offset": s.first_offset,
                "next_offset": s.next_offset,
                "size_bytes": s.size_bytes,
                "segment_count": s.segments,
            }
            for _, s in sorted(stats.per_stream.items())
        ]
        return JSONResponse({"streams": streams})

    async def create_stream(self, request: Request) -> Response:
        body = await _json_object(request)
        name = _field(body, "name", str)
        settings = _field(body, "config", dict, default={})
        exist_ok = _field(body, "exist_ok", bool, default=False)
        try:
            config = StreamConfig.from_json(json.dumps(settings).encode())
        except TypeError as exc:
            raise ApiError(400, "invalid_config", f"invalid stream config: {exc}") from None
        status = 201
        try:
            await self.service.create_stream(name, config)
        except StreamExistsError:
            if not exist_ok:
                raise
            status = 200  # kept as it is, with its own config
        info = await self.service.describe_stream(name)
        return JSONResponse(_stream_json(info), status_code=status)

    async def streams_item(self, request: Request) -> Response:
        """``/api/v1/streams/{name}`` and ``.../{name}/records``, the name taken undecoded.

        Stream names may hold ``/`` (sent as ``%2F``); the decoded path cannot
        tell ``a%2Frecords`` from ``a/records``, the raw path can.
        """
        parts = _raw_segments(request)[4:]
        if len(parts) == 1 and parts[0]:
            name = parts[0]
            methods: dict[str, Callable[[Request, str], Awaitable[Response]]] = {
                "GET": self.describe_stream,
                "HEAD": self.describe_stream,
                "DELETE": self.delete_stream,
            }
        elif len(parts) == 2 and parts[0] and parts[1] == "records":
            name = parts[0]
            methods = {
                "GET": self.read_records,
                "HEAD": self.read_records,
                "POST": self.append_records,
            }
        else:
            raise ApiError(404, "not_found", "Not Found")
        handler = methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(methods))
            raise ApiError(
                405, "method_not_allowed", "Method Not Allowed", headers={"Allow": allow}
            )
        return await handler(request, name)

    async def describe_stream(self, request: Request, name: str) -> Response:
        info = await self.service.describe_stream(name)
        segments = await self.service.list_segments(name)
        stats = await self.service.get_statistics(name)
        doc = _stream_json(info)
        doc["segments"] = [_segment_json(s) for s in segments]
        doc["statistics"] = _statistics_json(stats)
        return JSONResponse(doc)

    async def delete_stream(self, request: Request, name: str) -> Response:
        await self.service.delete_stream(name)
        return Response(status_code=204)

    # -- records ----------------------------------------------------------------------

    async def append_records(self, request: Request, name: str) -> Response:
        body = await _json_object(request)
        encoding = _field(body, "encoding", str, default="utf-8")
        if encoding not in _ENCODINGS:
            raise ApiError(
                400, "invalid_request", f"encoding must be utf-8 or base64, not {encoding!r}"
            )
        items = _field(body, "records", list)
        if not items:
            raise ApiError(400, "invalid_request", "records must be a non-empty list")
        records = [_record(item, i, encoding) for i, item in enumerate(items)]
        result = await self.service.append(name, records)  # returns once durable
        return JSONResponse({"base_offset": result.base_offset, "last_offset": result.last_offset})

    async def read_records(self, request: Request, name: str) -> Response:
        query = request.query_params
        offset = _int_param(query.get("offset"), "offset", default=0, low=0)
        max_bytes = _int_param(
            query.get("max_bytes"), "max_bytes", default=1 << 20, low=1, high=MAX_READ_BYTES
        )
        encoding = query.get("encoding", "utf-8")
        if encoding not in _ENCODINGS:
            raise ApiError(
                400, "invalid_request", f"encoding must be utf-8 or base64, not {encoding!r}"
            )
        records = await self.service.read(name, offset, max_bytes)
        out = [_record_json(r, encoding) for r in records]
        last = records[-1].offset if records else None
        next_offset = last + 1 if last is not None else offset
        return JSONResponse({"records": out, "next_offset": next_offset})

    # -- users ------------------------------------------------------------------------

    async def list_users(self, request: Request) -> Response:
        return JSONResponse({"users": [_user_json(u) for u in self.users.list()]})

    async def add_user(self, request: Request) -> Response:
        body = await _json_object(request)
        name = _field(body, "name", str)
        password = _field(body, "password", str)
        info = await self.users.add_async(name, password)
        return JSONResponse(_user_json(info), status_code=201)

    async def set_password(self, request: Request) -> Response:
        body = await _json_object(request)
        password = _field(body, "password", str)
        await self.users.set_password_async(request.path_params["name"], password)
        return Response(status_code=204)

    async def delete_user(self, request: Request) -> Response:
        await self.users.delete_async(request.path_params["name"])
        return Response(status_code=204)


def create_app(
    service: JournalService,
    users: UserStore,
    *,
    ready: Callable[[], dict[str, bool]],
    connections: Callable[[], Mapping[str, ProtocolConnections]] | None = None,
    version: str = "0.1.0",
    roles: tuple[str, ...] = ROLES,
    started_at: float,
) -> Starlette:
    """The admin API over ``service`` and ``users``.

    ``ready()`` maps each listener to whether it accepts (``/ready`` is 200
    when all do); ``connections()`` maps each protocol to its connection
    counts, for ``/metrics``; ``started_at`` is the ``time.time()`` the
    process started, for the uptime.
    """
    admin = _Admin(
        service,
        users,
        ready=ready,
        connections=connections,
        version=version,
        roles=roles,
        started_at=started_at,
    )
    e = admin.endpoint
    routes = [
        Route("/health", e(admin.health, public=True), methods=["GET"]),
        Route("/ready", e(admin.readiness, public=True), methods=["GET"]),
        Route("/metrics", e(admin.metrics, public=True), methods=["GET"]),
        Route("/api/v1/status", e(admin.status), methods=["GET"]),
        Route("/api/v1/streams", e(admin.list_streams), methods=["GET"]),
        Route("/api/v1/streams", e(admin.create_stream), methods=["POST"]),
        Route(
            "/api/v1/streams/{rest:path}",
            e(admin.streams_item),
            methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        ),
        Route("/api/v1/users", e(admin.list_users), methods=["GET"]),
        Route("/api/v1/users", e(admin.add_user), methods=["POST"]),
        Route("/api/v1/users/{name}/password", e(admin.set_password), methods=["PUT"]),
        Route("/api/v1/users/{name}", e(admin.delete_user), methods=["DELETE"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_CountRequests, counts=admin.counts)],
        exception_handlers={HTTPException: admin.http_exception},
    )


async def serve_admin(
    app: Starlette,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 (and h2c) on ``host:port`` until cancelled.

    ``port`` 0 picks a free port; ``task_status.started`` gets the bound port.
    Cancelling stops at once; ``shutdown_trigger`` returning stops gracefully
    (in-flight requests get a second to finish). A listener that cannot be
    bound raises :class:`OSError`.
    """
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("strata.admin.http")
    config.include_server_header = False
    config.graceful_timeout = 1.0
    started = False
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(
                    serve,
                    cast("ASGIFramework", app),
                    config,
                    shutdown_trigger=shutdown_trigger,
                    mode="asgi",
                )
            )
            started = True
            task_status.started(int(binds[0].rpartition(":")[2]))
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if started or not all(isinstance(exc, OSError) for exc in leaves):
            raise
        first = leaves[0]
        assert isinstance(first, OSError)
        raise OSError(first.errno, f"cannot listen on {host}:{port}: {first.strerror}") from first


# -- request parsing -------------------------------------------------------------------


def _is_loopback(client: object) -> bool:
    if not isinstance(client, list | tuple) or not client or not isinstance(client[0], str):
        return False
    try:
        address = ipaddress.ip_address(client[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


def _raw_segments(request: Request) -> list[str]:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        path = raw.decode("latin-1").partition("?")[0]
        try:
            return [unquote(part, errors="strict") for part in path.split("/")]
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_request", "the path is not valid UTF-8") from None
    return str(request.scope["path"]).split("/")


async def _json_object(request: Request) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:  # UnicodeDecodeError included
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    return body


def _too_large() -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"request bodies are limited to {MAX_BODY_BYTES} bytes",
        headers={"Connection": "close"},  # the rest of the body is never read
    )


_MISSING = object()
_TYPE_NAMES = {str: "a string", bool: "true or false", dict: "an object", list: "a list"}


def _field(body: Mapping[str, Any], key: str, kind: type[Any], default: Any = _MISSING) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise ApiError(400, "invalid_request", f"the request needs {key!r}")
        return default
    if not isinstance(value, kind):
        raise ApiError(400, "invalid_request", f"{key!r} must be {_TYPE_NAMES[kind]}")
    return value


def _int_param(
    text: str | None, name: str, *, default: int, low: int, high: int | None = None
) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ApiError(400, "invalid_request", f"{name} must be an integer {limit}, not {text!r}")
    return value


def _decode(value: object, encoding: str, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{what} must be a string or null")
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_request", f"{what} is not valid base64") from None
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_request", f"{what} is not valid Unicode") from None


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


def _record(item: object, index: int, encoding: str) -> Record:
    where = f"records[{index}]"
    if not isinstance(item, dict):
        raise ApiError(400, "invalid_request", f"{where} must be an object")
    unknown = set(item) - {"key", "value", "headers", "timestamp"}
    if unknown:
        raise ApiError(400, "invalid_request", f"{where} has unknown fields {sorted(unknown)}")
    headers: list[Header] = []
    raw_headers = item.get("headers", [])
    if not isinstance(raw_headers, list):
        raise ApiError(400, "invalid_request", f"{where}.headers must be a list of [name, value]")
    for j, pair in enumerate(raw_headers):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ApiError(
                400, "invalid_request", f"{where}.headers[{j}] must be [name, value or null]"
            )
        headers.append((pair[0], _decode(pair[1], encoding, f"{where}.headers[{j}] value")))
    timestamp = item.get("timestamp")
    if timestamp is not None and (
        not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0
    ):
        raise ApiError(400, "invalid_request", f"{where}.timestamp must be milliseconds >= 0")
    return Record(
        key=_decode(item.get("key"), encoding, f"{where}.key"),
        value=_decode(item.get("value"), encoding, f"{where}.value"),
        headers=headers,
        timestamp=timestamp,
    )


# -- JSON views ------------------------------------------------------------------------


def _record_json(record: Record, encoding: str) -> dict[str, Any]:
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


def _stream_json(info: StreamInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "first_offset": info.first_offset,
        "next_offset": info.next_offset,
        "size_bytes": info.size_bytes,
        "segment_count": info.segment_count,
        "config": dataclasses.asdict(info.config),
        "quarantined": list(info.quarantined),
    }


def _segment_json(segment: SegmentInfo) -> dict[str, Any]:
    return dataclasses.asdict(segment)


def _statistics_json(stats: StreamStatistics) -> dict[str, Any]:
    doc = dataclasses.asdict(stats)
    h = stats.fsync_latency
    doc["fsync_latency"] = {
        "bounds": list(h.bounds),
        "counts": list(h.counts),
        "count": h.count,
        "sum": h.total,
    }
    return doc


def _user_json(info: UserInfo) -> dict[str, Any]:
    return {"name": info.name, "created_ms": info.created_ms}

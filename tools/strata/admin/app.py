"""The app: :class:`_Admin`'s route handlers and :func:`create_app`, which wires them up.

Every route is wrapped by :meth:`_Admin.endpoint`, which authenticates
(:mod:`.auth`), runs the handler and answers any failure as a JSON error
(:mod:`.errors`), logging only unexpected ones. Handlers read requests with
:mod:`.parsing` and answer with :mod:`.views`; a middleware counts answers by
method and status for ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontends.mqtt.broker import BrokerStatistics
from journal.config import StreamConfig
from journal.errors import StreamExistsError
from journal.service import JournalService
from journal.stats import JournalStatistics
from meta.users import UserStore
from tools.strata.admin.auth import Authenticator
from tools.strata.admin.errors import ApiError, api_error
from tools.strata.admin.parsing import (
    MAX_READ_BYTES,
    check_encoding,
    field,
    int_param,
    json_object,
    raw_segments,
    record,
)
from tools.strata.admin.views import (
    journal_summary_json,
    record_json,
    segment_json,
    statistics_json,
    stream_json,
    stream_summary_json,
    user_json,
)
from tools.strata.config import ROLES
from tools.strata.metrics import (
    CONTENT_TYPE,
    AdminRequestCounts,
    MetricsSnapshot,
    ProtocolConnections,
    render_metrics,
)

__all__ = ["create_app"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

logger = logging.getLogger("strata.admin")


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
        mqtt: Callable[[], BrokerStatistics | None] | None,
        version: str,
        roles: tuple[str, ...],
        started_at: float,
    ) -> None:
        self.service = service
        self.users = users
        self.ready = ready
        self.connections = connections
        self.mqtt = mqtt
        self.version = version
        self.roles = roles
        self.started_at = started_at
        self.counts = AdminRequestCounts()
        self.auth = Authenticator(users)

    # -- plumbing ---------------------------------------------------------------------

    def error(self, err: ApiError) -> JSONResponse:
        self.counts.errors[err.code] += 1
        body = {"error": {"code": err.code, "message": err.message, **err.details}}
        return JSONResponse(body, status_code=err.status, headers=err.headers)

    def endpoint(self, handler: Handler, *, public: bool = False) -> Handler:
        """``handler`` behind authentication, with every failure answered as JSON."""

        async def endpoint(request: Request) -> Response:
            try:
                await self.auth.authorize(request, public=public)
                return await handler(request)
            except ApiError as err:
                return self.error(err)
            except Exception as exc:
                mapped = api_error(exc)
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
            mqtt=self.mqtt() if self.mqtt is not None else None,
        )
        return Response(render_metrics(snapshot), media_type=CONTENT_TYPE)

    async def status(self, request: Request) -> Response:
        stats = await self.service.get_statistics()
        listeners = self.ready()
        tiering = stats.tiering
        return JSONResponse(
            {
                "version": self.version,
                "roles": list(self.roles),
                "uptime_seconds": round(self.uptime(), 3),
                "ready": all(listeners.values()),
                "listeners": listeners,
                "object_url": tiering.object_url if tiering is not None else None,
                "journal": journal_summary_json(stats),
            }
        )

    # -- streams ----------------------------------------------------------------------

    async def list_streams(self, request: Request) -> Response:
        stats = await self.service.get_statistics()
        streams = [stream_summary_json(s) for _, s in sorted(stats.per_stream.items())]
        return JSONResponse({"streams": streams})

    async def create_stream(self, request: Request) -> Response:
        body = await json_object(request)
        name = field(body, "name", str)
        settings = field(body, "config", dict, default={})
        exist_ok = field(body, "exist_ok", bool, default=False)
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
        return JSONResponse(stream_json(info), status_code=status)

    async def streams_item(self, request: Request) -> Response:
        """``/api/v1/streams/{name}`` and ``.../{name}/records``, the name taken undecoded.

        Stream names may hold ``/`` (sent as ``%2F``); the decoded path cannot
        tell ``a%2Frecords`` from ``a/records``, the raw path can.
        """
        parts = raw_segments(request)[4:]
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
        doc = stream_json(info)
        doc["segments"] = [segment_json(s) for s in segments]
        doc["statistics"] = statistics_json(stats)
        return JSONResponse(doc)

    async def delete_stream(self, request: Request, name: str) -> Response:
        await self.service.delete_stream(name)
        return Response(status_code=204)

    # -- records ----------------------------------------------------------------------

    async def append_records(self, request: Request, name: str) -> Response:
        body = await json_object(request)
        encoding = check_encoding(field(body, "encoding", str, default="utf-8"))
        items = field(body, "records", list)
        if not items:
            raise ApiError(400, "invalid_request", "records must be a non-empty list")
        records = [record(item, i, encoding) for i, item in enumerate(items)]
        result = await self.service.append(name, records)  # returns once durable
        return JSONResponse({"base_offset": result.base_offset, "last_offset": result.last_offset})

    async def read_records(self, request: Request, name: str) -> Response:
        query = request.query_params
        offset = int_param(query.get("offset"), "offset", default=0, low=0)
        max_bytes = int_param(
            query.get("max_bytes"), "max_bytes", default=1 << 20, low=1, high=MAX_READ_BYTES
        )
        encoding = check_encoding(query.get("encoding", "utf-8"))
        records = await self.service.read(name, offset, max_bytes)
        out = [record_json(r, encoding) for r in records]
        last = records[-1].offset if records else None
        next_offset = last + 1 if last is not None else offset
        return JSONResponse({"records": out, "next_offset": next_offset})

    # -- users ------------------------------------------------------------------------

    async def list_users(self, request: Request) -> Response:
        return JSONResponse({"users": [user_json(u) for u in self.users.list()]})

    async def add_user(self, request: Request) -> Response:
        body = await json_object(request)
        name = field(body, "name", str)
        password = field(body, "password", str)
        info = await self.users.add_async(name, password)
        return JSONResponse(user_json(info), status_code=201)

    async def set_password(self, request: Request) -> Response:
        body = await json_object(request)
        password = field(body, "password", str)
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
    mqtt: Callable[[], BrokerStatistics | None] | None = None,
    version: str = "0.1.0",
    roles: tuple[str, ...] = ROLES,
    started_at: float,
) -> Starlette:
    """The admin API over ``service`` and ``users``.

    ``ready()`` maps each listener to whether it accepts (``/ready`` is 200
    when all do); ``connections()`` maps each protocol to its connection
    counts and ``mqtt()`` gives the MQTT broker's statistics (None without
    one), both for ``/metrics``; ``started_at`` is the ``time.time()`` the
    process started, for the uptime.
    """
    admin = _Admin(
        service,
        users,
        ready=ready,
        connections=connections,
        mqtt=mqtt,
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

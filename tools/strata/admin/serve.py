"""Serving the admin app: Hypercorn's trio worker on one listening socket.

:func:`serve_admin` runs Hypercorn in a nursery of its own, reports the bound
port through ``task_status`` and turns a failure to bind into one plain
:class:`OSError` instead of an exception group.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette

from journal.errors import leaf_exceptions

__all__ = ["serve_admin"]


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

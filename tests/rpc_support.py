"""A journal server in the test's nursery, and small helpers, for the RPC tests.

:func:`start_server` opens a journal and serves it on 127.0.0.1 inside a
cancel scope: :meth:`Running.kill` is "killing" the server, and serving the
same directory on the same port again is a restart.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from journal import Journal, Record
from journal.remote import RemoteJournal
from journal.rpc.server import JournalServer

HOST = "127.0.0.1"
TIMEOUT = 10


@dataclass
class Running:
    """A journal server started by :func:`start_server`; ``kill`` stops it abruptly."""

    server: JournalServer
    journal: Journal
    port: int
    scope: trio.CancelScope
    stopped: trio.Event

    async def kill(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


async def start_server(nursery: trio.Nursery, path: Path, port: int = 0, **options: Any) -> Running:
    """Open the journal in ``path`` and serve it on ``port`` (0: a free one)."""
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[Running]) -> None:
        try:
            with scope:
                async with Journal.open(path) as journal, trio.open_nursery() as inner:
                    server = JournalServer(journal, **options)
                    bound = await inner.start(partial(server.serve, HOST, port))
                    task_status.started(Running(server, journal, bound, scope, stopped))
        finally:
            stopped.set()

    running: Running = await nursery.start(run)
    return running


def remote_tail(remote: RemoteJournal, name: str, offset: int) -> AsyncGenerator[Record, None]:
    gen = remote.tail(name, offset)
    assert isinstance(gen, AsyncGenerator)
    return gen


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (bounded) for ``check`` to hold, yielding to other tasks between tries."""
    with trio.fail_after(TIMEOUT):
        while not await check():
            await trio.lowlevel.checkpoint()


def values(records: list[Record]) -> list[bytes | None]:
    return [r.value for r in records]

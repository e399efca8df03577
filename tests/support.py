"""Small helpers the journal tests share: reading a whole stream, taking from a tail,
waiting for background work."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from journal import Journal, Record, SegmentInfo
from journal.service import JournalService


async def read_all(
    j: JournalService, name: str, start: int = 0, max_bytes: int = 1 << 20
) -> list[Record]:
    """Every committed record from ``start`` on, read in ``max_bytes`` chunks."""
    out: list[Record] = []
    offset = start
    while chunk := await j.read(name, offset, max_bytes):
        out += chunk
        last = chunk[-1].offset
        assert last is not None
        offset = last + 1
    return out


def tail(j: Journal, name: str, offset: int) -> AsyncGenerator[Record, None]:
    """``j.tail`` typed as the async generator it is, for ``aclosing``."""
    gen = j.tail(name, offset)
    assert isinstance(gen, AsyncGenerator)
    return gen


@asynccontextmanager
async def tailing(
    j: JournalService, name: str, offset: int
) -> AsyncIterator[AsyncIterator[Record]]:
    """``j.tail(name, offset)`` of any :class:`JournalService`, closed (if it can be) on exit."""
    it = j.tail(name, offset)
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


async def take(gen: AsyncIterator[Record], n: int) -> list[Record]:
    """The next ``n`` records of a tail."""
    out: list[Record] = []
    async for record in gen:
        out.append(record)
        if len(out) == n:
            break
    return out


async def wait_until(
    condition: Callable[[], bool], what: str, *, within: float, interval: float = 0.01
) -> None:
    """Poll ``condition`` (state that background tasks change) for at most ``within`` s."""
    with trio.move_on_after(within):
        while True:
            if condition():
                return
            await trio.sleep(interval)
    pytest.fail(f"not within {within:g} s: {what}")


def check_migrated_layout(segments: Sequence[SegmentInfo], sealed: Sequence[SegmentInfo]) -> None:
    """After ``sealed`` moved to the object tier and more was appended: the object
    segments unchanged in extent, then at least one local one, then the active one."""
    local = len(segments) - len(sealed) - 1
    assert local >= 1
    assert [s.tier for s in segments] == ["object"] * len(sealed) + ["local"] * local + ["memory"]
    for old, new in zip(sealed, segments, strict=False):
        assert (new.base_offset, new.last_offset, new.size_bytes) == (
            old.base_offset,
            old.last_offset,
            old.size_bytes,
        )
    assert [s.key is None for s in segments] == [False] * len(sealed) + [True] * (local + 1)

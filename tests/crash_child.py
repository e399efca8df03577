"""A journal writer for ``test_crash.py`` to kill with SIGKILL at a random moment.

Usage::

    python tests/crash_child.py <datadir> <round>

The program opens the journal in ``<datadir>`` with ``fsync="always"``, creates
the stream :data:`STREAM` if it is not there yet (64 KiB segments, so rolls
happen all through a run), writes ``ready`` on stdout, then runs :data:`TASKS`
concurrent appenders. Task ``task`` makes appends ``seq = 0, 1, 2, ...``, each
holding the records :func:`append_records` derives from ``(round, task, seq)``
alone, so the parent can tell a complete, valid record from anything else
without being told what was written. After each ``await j.append`` returns the
task writes one line::

    ack <round> <task> <seq> <base_offset> <last_offset>

with a single ``write(2)`` to the pipe (shorter than ``PIPE_BUF``, so a kill
never leaves half a line that looks whole). The program stops on its own only
after :data:`MAX_APPENDS` appends or :data:`MAX_SECONDS` seconds, far beyond
what a test waits for.

The generator functions are imported by the parent test as well.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import trio

from journal import Header, Journal, Record, StreamConfig

__all__ = [
    "CONFIG",
    "MAX_APPENDS",
    "MAX_SECONDS",
    "STREAM",
    "TASKS",
    "append_records",
    "make_record",
    "parse_key",
]

STREAM = "crash"
TASKS = 4
MAX_APPENDS = 20_000  # in all, over every task
MAX_SECONDS = 30.0
MAX_VALUE = 3000
MAX_RECORDS_PER_APPEND = 4
# Small segments and index interval: a run of a few hundred appends rolls
# several times, so kills land before, during and after rolls.
CONFIG = StreamConfig(segment_bytes=64 << 10, index_interval_bytes=1024)


def make_record(round_: int, task: int, seq: int, index: int) -> Record:
    """Record ``index`` of append ``seq`` of ``task`` in ``round_``.

    The key names those four numbers; the value (absent, empty or up to
    :data:`MAX_VALUE` bytes) and the headers are derived from the key.
    """
    key = f"{round_}:{task}:{seq}:{index}".encode()
    digest = hashlib.sha256(key).digest()
    size = int.from_bytes(digest[:2], "big") % (MAX_VALUE + 1)
    value = None if digest[2] % 16 == 0 else hashlib.shake_256(key).digest(size)
    headers: list[Header] = []
    if digest[3] % 3:
        headers = [
            ("task", str(task).encode()),
            ("digest", digest[4 : 4 + digest[3] % 24]),
            ("null", None),
        ]
    return Record(value=value, key=key, headers=headers)


def append_records(round_: int, task: int, seq: int) -> list[Record]:
    """The 1 to :data:`MAX_RECORDS_PER_APPEND` records of one append."""
    seed = hashlib.sha256(f"append:{round_}:{task}:{seq}".encode()).digest()
    count = 1 + seed[0] % MAX_RECORDS_PER_APPEND
    return [make_record(round_, task, seq, index) for index in range(count)]


def parse_key(key: bytes | None) -> tuple[int, int, int, int]:
    """``(round, task, seq, index)`` from a key made by :func:`make_record`."""
    if key is None:
        raise ValueError("record without a key")
    parts = key.decode().split(":")
    if len(parts) != 4:
        raise ValueError(f"not a key of the crash child: {key!r}")
    round_, task, seq, index = (int(part) for part in parts)
    return round_, task, seq, index


def _emit(line: str) -> None:
    data = (line + "\n").encode()
    written = os.write(sys.stdout.fileno(), data)
    if written != len(data):  # a pipe write below PIPE_BUF is all or nothing
        raise OSError(f"short write to stdout: {written} of {len(data)} bytes")


async def _appender(journal: Journal, round_: int, task: int, appends: int) -> None:
    for seq in range(appends):
        result = await journal.append(STREAM, append_records(round_, task, seq))
        _emit(f"ack {round_} {task} {seq} {result.base_offset} {result.last_offset}")


async def run(datadir: Path, round_: int) -> None:
    async with Journal.open(datadir, fsync="always") as journal:
        await journal.create_stream(STREAM, CONFIG, exist_ok=True)
        _emit("ready")
        with trio.move_on_after(MAX_SECONDS):
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(_appender, journal, round_, task, MAX_APPENDS // TASKS)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} <datadir> <round>", file=sys.stderr)
        return 2
    trio.run(run, Path(argv[1]), int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

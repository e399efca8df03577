"""A tiered journal for ``test_tiering_crash.py`` to crash at a chosen point of a migration.

Usage::

    python tests/tiering_crash_child.py '<plan as JSON>'

The plan (see :class:`Plan`) names the data directory, the object store
(``url`` and fsspec ``options``), the crash ``point``, the upload it hits
(``nth``, counted from 1) and a ``seed``. The program opens the journal with
``fsync="always"`` and that object tier, creates :data:`STREAM` (4 KiB
segments, 8 KiB of sealed segments kept locally, so every few appends a
segment becomes due), writes ``ready``, then runs two tasks: an appender that
appends one record at a time and writes, after each ``await j.append``
returns::

    ack <seq> <offset> <sha256 of the value, hex>

and a migrator that calls ``await j.migrate()`` over and over. Record ``seq``
holds :func:`make_value` ``(seed, seq)`` under the key ``str(seq)``, so the
parent can check every byte without being told what was written.

The crash is installed by wrapping journal methods here, in the child (the
journal has no test hooks). The ``nth`` call of ``Catalog.begin_upload``
marks the target upload; at the chosen point of that upload the child writes
one line::

    crash <point> <nth> <stream id> <base offset> <key> <detail>

and sends itself SIGKILL. The points, in the order a migration passes them:

``before-upload``
    right after the synced upload intent (nothing in the store yet);
``index-only``
    after ``K.index`` and ``K.timeindex`` were put, before ``K.log``;
``mid-log``
    ``K.log`` half-written: a seeded prefix of the segment's bytes is written
    to the target object (a partial file for ``file://``, an object holding
    only a prefix for S3), then the kill;
``before-commit``
    after the upload and its size/CRC32C verification, before
    ``Catalog.commit_upload``;
``before-local-delete``
    after the commit, before ``Stream.replace_segment`` deletes the local file.

Every line is one ``write(2)`` to the pipe, shorter than ``PIPE_BUF``, so a kill
never leaves half a line that looks whole. If the crash never comes (the
program gives up after :data:`MAX_APPENDS` appends or :data:`MAX_SECONDS`
seconds) it writes ``done`` and exits 0, which the parent reports as a failure.

The constants and :func:`make_value` are imported by the parent test as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import trio

from journal import Journal, Record, StreamConfig
from journal.catalog import Catalog, SealedSegment
from journal.stream import Stream
from journal.tiering.object import ObjectTier
from journal.tiering.remote import RemoteSegment

__all__ = [
    "CONFIG",
    "POINTS",
    "PRE_COMMIT",
    "STREAM",
    "CrashPoint",
    "Plan",
    "make_value",
]

CrashPoint = Literal[
    "before-upload", "index-only", "mid-log", "before-commit", "before-local-delete"
]
POINTS: tuple[CrashPoint, ...] = get_args(CrashPoint)
PRE_COMMIT: tuple[CrashPoint, ...] = POINTS[:4]  # the intent is still there: nothing committed

STREAM = "tiered"
# Segments roll every few appends; with more than 8 KiB of sealed local
# segments the oldest move, so uploads start after ~3 segments and keep coming.
CONFIG = StreamConfig(
    segment_bytes=4 << 10,
    index_interval_bytes=256,
    local_retention_bytes=8 << 10,
    local_retention_ms=None,
    memory_bytes=0,
)
MIN_VALUE = 64
MAX_VALUE = 1000
MAX_APPENDS = 2000
MAX_SECONDS = 20.0
IDLE_PASS = 0.002  # seconds the migrator waits after a pass that moved nothing


def make_value(seed: int, seq: int) -> bytes:
    """The value of record ``seq`` in a run with ``seed``: 64..1000 derived bytes."""
    name = f"{seed}:{seq}".encode()
    digest = hashlib.sha256(name).digest()
    size = MIN_VALUE + int.from_bytes(digest[:2], "big") % (MAX_VALUE - MIN_VALUE + 1)
    return hashlib.shake_256(name).digest(size)


@dataclass(frozen=True)
class Plan:
    """What the parent asks for."""

    data: str
    url: str
    point: CrashPoint
    nth: int
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "data": self.data,
                "url": self.url,
                "point": self.point,
                "nth": self.nth,
                "seed": self.seed,
                "options": self.options,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        doc = json.loads(text)
        if doc["point"] not in POINTS:
            raise ValueError(f"unknown crash point {doc['point']!r}")
        return cls(
            data=doc["data"],
            url=doc["url"],
            point=doc["point"],
            nth=int(doc["nth"]),
            seed=int(doc["seed"]),
            options=doc["options"],
        )


def _emit(line: str) -> None:
    data = (line + "\n").encode()
    written = os.write(sys.stdout.fileno(), data)
    if written != len(data):  # a pipe write below PIPE_BUF is all or nothing
        raise OSError(f"short write to stdout: {written} of {len(data)} bytes")


@dataclass
class _Target:
    stream_id: int
    base_offset: int
    key: str


class Crasher:
    """Counts uploads and kills the process at the plan's point of the ``nth``."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.uploads = 0
        self.target: _Target | None = None

    def begun(self, stream_id: int, base_offset: int, key: str) -> None:
        self.uploads += 1
        if self.uploads == self.plan.nth:
            self.target = _Target(stream_id, base_offset, key)

    def at(self, point: CrashPoint, *, key: str | None = None, detail: str = "-") -> None:
        """Die here if this is the planned point of the target upload (of ``key``)."""
        target = self.target
        if target is None or point != self.plan.point:
            return
        if key is not None and key != target.key:
            return
        _emit(
            f"crash {point} {self.plan.nth} {target.stream_id} {target.base_offset} "
            f"{target.key} {detail}"
        )
        os.kill(os.getpid(), signal.SIGKILL)

    def tear(self, tier: ObjectTier, key: str, path: Path) -> None:
        """Write a seeded prefix of ``path`` to ``key``, then die ("mid-log").

        Blocking, on purpose: nothing else may run between the write and the kill.
        """
        data = path.read_bytes()
        cut = self.rng.randrange(1, len(data))
        tier.fs.pipe_file(tier._path(key), data[:cut])
        self.at("mid-log", key=key.removesuffix(".log"), detail=f"{cut}/{len(data)}")

    def install(self) -> None:
        """Wrap the journal's methods the migration goes through (process-wide)."""
        crasher = self
        begin_upload = Catalog.begin_upload
        commit_upload = Catalog.commit_upload
        put_file = ObjectTier.put_file
        replace_segment = Stream.replace_segment

        def begin_upload_hook(self: Catalog, stream_id: int, base_offset: int, key: str) -> None:
            begin_upload(self, stream_id, base_offset, key)
            crasher.begun(stream_id, base_offset, key)
            crasher.at("before-upload", key=key)

        async def put_file_hook(self: ObjectTier, key: str, path: Path) -> None:
            stem = key.removesuffix(".log")
            if stem != key:
                crasher.at("index-only", key=stem)
                target = crasher.target
                if crasher.plan.point == "mid-log" and target is not None and target.key == stem:
                    crasher.tear(self, key, path)
            await put_file(self, key, path)

        def commit_upload_hook(self: Catalog, stream_id: int, seg: SealedSegment) -> None:
            assert seg.key is not None
            crasher.at("before-commit", key=seg.key)
            commit_upload(self, stream_id, seg)

        def replace_segment_hook(self: Stream, old: Any, new: RemoteSegment) -> None:
            crasher.at("before-local-delete", key=new.key)
            replace_segment(self, old, new)

        Catalog.begin_upload = begin_upload_hook  # type: ignore[method-assign]
        Catalog.commit_upload = commit_upload_hook  # type: ignore[method-assign]
        ObjectTier.put_file = put_file_hook  # type: ignore[method-assign]
        Stream.replace_segment = replace_segment_hook  # type: ignore[method-assign]


async def _append(journal: Journal, seed: int, done: trio.CancelScope) -> None:
    for seq in range(MAX_APPENDS):
        value = make_value(seed, seq)
        result = await journal.append(STREAM, [Record(value=value, key=str(seq).encode())])
        _emit(f"ack {seq} {result.base_offset} {hashlib.sha256(value).hexdigest()}")
    await journal.roll(STREAM)
    await journal.migrate()
    done.cancel()


async def _migrate(journal: Journal) -> None:
    while True:
        if not await journal.migrate(STREAM):
            await trio.sleep(IDLE_PASS)


async def run(plan: Plan) -> None:
    Crasher(plan).install()
    async with Journal.open(
        plan.data,
        fsync="always",
        maintenance_interval=3600.0,  # only the migrator task below moves segments
        object_url=plan.url,
        object_options=plan.options,
        object_timeout=10.0,
    ) as journal:
        await journal.create_stream(STREAM, CONFIG)
        _emit("ready")
        with trio.move_on_after(MAX_SECONDS):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_append, journal, plan.seed, nursery.cancel_scope)
                nursery.start_soon(_migrate, journal)
    _emit("done")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} '<plan as JSON>'", file=sys.stderr)
        return 2
    trio.run(run, Plan.from_json(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

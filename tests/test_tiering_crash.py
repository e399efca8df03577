"""Crash safety of migration to the object tier: SIGKILL at each step of a move.

A real child process (``tests/tiering_crash_child.py``) appends with
``fsync="always"``, reporting every acknowledged append, while it migrates
segments to the object tier (``file://`` and S3 on moto, through the
``object_store`` fixture). It kills itself with SIGKILL at a point of the
``nth`` upload chosen by the test with a seeded RNG; the points are the steps
of ``docs/tiering.md``: after the upload intent (``before-upload``), after the
index objects (``index-only``), with the log object half-written
(``mid-log``), after the upload was verified (``before-commit``), and after
the commit but before the local delete (``before-local-delete``). The hooks
are wrappers the child installs around journal methods; the journal has no
test hooks.

Each point runs on both stores with one seed (``test_crash_during_migration``)
and on ``file://`` with another (``..._more_seeds``: other uploads hit, another
cut of the log); between them the crash hits the 1st to 4th upload. What is
checked:

* **what the crash left** (before any reopen, straight from the catalog,
  the stream directory and the store): the
  crashed segment's local file is there whole; before the commit the catalog
  holds its upload intent and still says ``local``, and the store holds
  exactly the part of the upload that was made (nothing, the two index
  objects, a prefix of the log, all three) -- so for the later points an
  orphan really exists; after the commit the catalog says ``object`` with the
  key and the CRC32C of the local file, and the local file is still there;
* **recovery** (reopening in-process with the same ``object_url``): every
  acknowledged offset holds its value (by digest), offsets are contiguous from
  0, at most the one append in flight at the kill is there unacknowledged; the
  crashed segment is local again (pre-commit) or in the object tier with its
  local file deleted (post-commit); one migration pass re-uploads it under a
  new key, deletes the abandoned upload and counts no failure and no orphan;
  reads through the object tier and ``verify`` agree;
* **the manifest after close**: no upload intent, an empty trash, each
  object-tier segment's three objects exist with the log's size and CRC32C as
  in the catalog and no local file, each local sealed segment has its file,
  and the store holds exactly the committed segments' objects (the orphan is
  gone);
* **nothing is deleted locally before the commit**
  (``test_nothing_deleted_locally_before_commit``): after a kill between a
  verified upload and its commit, every acknowledged record can be read back
  without the journal, from the local files and the committed objects alone.
"""

from __future__ import annotations

import hashlib
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import crc32c
import pytest
import trio
from objectstores import ObjectStore
from support import read_all
from tiering_crash_child import POINTS, PRE_COMMIT, STREAM, CrashPoint, Plan, make_value

from journal import Journal, Record
from journal.catalog import Catalog, SealedSegment
from journal.errors import InvalidBatchError
from journal.segments.batch import decode_batch

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("tiering_crash_child.py")
CHILD_TIMEOUT = 30.0  # seconds a child may take to reach its crash point
MAX_NTH = 4  # the crash hits one of the first MAX_NTH uploads
MORE_SEEDS = (2,)
SUFFIXES = (".log", ".index", ".timeindex")
# What of the target upload is in the store when the child dies.
UPLOADED: dict[CrashPoint, tuple[str, ...]] = {
    "before-upload": (),
    "index-only": (".index", ".timeindex"),
    "mid-log": SUFFIXES,
    "before-commit": SUFFIXES,
    "before-local-delete": SUFFIXES,
}


# -- the child ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged append: record ``seq`` at ``offset``, its value's SHA-256."""

    seq: int
    offset: int
    digest: str


@dataclass(frozen=True, slots=True)
class Crash:
    """Where the child killed itself, as it reported just before."""

    point: CrashPoint
    nth: int
    stream_id: int
    base_offset: int
    key: str
    detail: str


@dataclass(frozen=True, slots=True)
class ChildRun:
    seed: int
    acks: list[Ack]
    crash: Crash


def nth_upload(point: CrashPoint, seed: int) -> int:
    return random.Random(f"{point}:{seed}").randint(1, MAX_NTH)


async def run_child(data: Path, store: ObjectStore, point: CrashPoint, seed: int) -> ChildRun:
    """Run the child until it kills itself at ``point``; what it acknowledged and where it died."""
    plan = Plan(str(data), store.url, point, nth_upload(point, seed), seed, store.options)
    with trio.fail_after(CHILD_TIMEOUT):
        proc = await trio.run_process(
            [sys.executable, str(CHILD), plan.to_json()],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stderr = proc.stderr.decode(errors="replace")[-3000:]
    assert proc.returncode == -signal.SIGKILL, (
        f"child exited with {proc.returncode} instead of dying at {point}:\n{stderr}"
    )
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == "ready", f"unexpected first line {lines[0]!r}:\n{stderr}"
    words = lines[-1].split()
    assert words[0] == "crash", f"the child died without reaching {point}:\n{stderr}"
    point_seen = next(p for p in POINTS if p == words[1])
    crash = Crash(point_seen, int(words[2]), int(words[3]), int(words[4]), words[5], words[6])
    assert (crash.point, crash.nth) == (point, plan.nth)
    acks = []
    for seq, line in enumerate(lines[1:-1]):
        tag, seq_text, offset, digest = line.split()
        assert (tag, int(seq_text)) == ("ack", seq), f"unexpected line from the child: {line!r}"
        acks.append(Ack(seq, int(offset), digest))
        assert int(offset) == seq, "one record per append, one append at a time"
    assert acks, "the crash came before any acknowledged append"
    return ChildRun(seed, acks, crash)


# -- looking at what is on disk and in the store, without the journal ---------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The catalog, the stream directory and the store, read while no journal is open."""

    journal_id: str
    stream_id: int
    uploads: dict[tuple[int, int], str]
    trashed: list[str]
    sealed: dict[int, SealedSegment]
    local: dict[str, bytes]  # file name in the stream directory -> contents
    objects: dict[str, bytes]  # key under the store's root -> contents

    def local_log(self, base: int) -> bytes | None:
        return self.local.get(f"{base:020d}.log")

    def objects_of(self, stem: str) -> dict[str, bytes]:
        """The objects of one upload, by suffix."""
        return {
            key.removeprefix(stem): data
            for key, data in self.objects.items()
            if key.startswith(stem + ".")
        }


def read_objects(store: ObjectStore) -> dict[str, bytes]:
    """Every object under the store's root and its bytes (blocking)."""
    fs, root = store.filesystem()
    try:
        paths = sorted(fs.find(root))
    except FileNotFoundError:
        return {}
    contents = fs.cat(paths) if paths else {}
    prefix = root.lstrip("/") + "/"
    return {str(path).lstrip("/").removeprefix(prefix): bytes(contents[path]) for path in paths}


def take_snapshot(data: Path, store: ObjectStore) -> Snapshot:
    """Read everything (blocking); the catalog is only opened while no journal has it."""
    catalog = Catalog(data / "catalog")
    try:
        streams = catalog.streams()
        assert [s.name for s in streams] == [STREAM]
        stream_id = streams[0].id
        journal_id = catalog.journal_id()
        uploads = catalog.uploads()
        trashed = catalog.trashed()
        sealed = catalog.sealed_segments(stream_id)
    finally:
        catalog.close()
    (directory,) = (data / "streams").iterdir()
    local = {path.name: path.read_bytes() for path in directory.iterdir()}
    return Snapshot(journal_id, stream_id, uploads, trashed, sealed, local, read_objects(store))


def decode_records(data: bytes, *, torn_tail_ok: bool) -> list[Record]:
    out: list[Record] = []
    pos = 0
    while pos < len(data):
        try:
            header, records = decode_batch(data, pos)
        except InvalidBatchError:
            if torn_tail_ok:
                break
            raise
        out += records
        pos += header.size
    return out


def records_without_journal(snap: Snapshot) -> dict[int, Record]:
    """Every record in the local files and committed objects, read with no journal.

    Local sealed segments and committed objects are checked against the
    catalog's sizes (and the object's CRC32C); the active segment (the one
    file the catalog does not list as sealed) may end in a torn batch.
    """
    out: dict[int, Record] = {}
    for base, entry in sorted(snap.sealed.items()):
        if entry.tier == "object":
            assert entry.key is not None
            data = snap.objects.get(entry.key + ".log")
            assert data is not None, f"committed object {entry.key}.log is missing"
            assert crc32c.crc32c(data) == entry.crc32c
        else:
            data = snap.local_log(base)
            assert data is not None, f"the local file of uncommitted segment {base} is gone"
        assert len(data) == entry.size, f"segment {base}: {len(data)} bytes, not {entry.size}"
        for record in decode_records(data, torn_tail_ok=False):
            assert record.offset is not None
            out[record.offset] = record
    active = [n for n in snap.local if n.endswith(".log") and int(n[:-4]) not in snap.sealed]
    assert len(active) == 1, f"expected one active segment, found {active}"
    for record in decode_records(snap.local[active[0]], torn_tail_ok=True):
        assert record.offset is not None
        out[record.offset] = record
    return out


# -- checks -------------------------------------------------------------------


def check_left_behind(run: ChildRun, snap: Snapshot) -> None:
    """What the crash left, per point, as ``docs/tiering.md`` tabulates it."""
    crash = run.crash
    assert crash.stream_id == snap.stream_id
    entry = snap.sealed[crash.base_offset]
    local = snap.local_log(crash.base_offset)
    assert local is not None, f"{crash.point}: the local copy was deleted before the commit"
    assert len(local) == entry.size
    uploaded = snap.objects_of(crash.key)
    assert set(uploaded) == set(UPLOADED[crash.point]), f"{crash.point}: {sorted(uploaded)}"
    for suffix in (".index", ".timeindex"):
        if suffix in uploaded:
            assert uploaded[suffix] == snap.local[f"{crash.base_offset:020d}{suffix}"]
    if crash.point in PRE_COMMIT:
        assert snap.uploads == {(crash.stream_id, crash.base_offset): crash.key}
        assert (entry.tier, entry.key) == ("local", None)
    else:
        assert snap.uploads == {}
        assert (entry.tier, entry.key) == ("object", crash.key)
        assert entry.crc32c == crc32c.crc32c(local)
    if crash.point == "mid-log":
        part = uploaded[".log"]
        assert 0 < len(part) < len(local)
        assert part == local[: len(part)]
        assert crash.detail == f"{len(part)}/{len(local)}"
    elif ".log" in uploaded:
        assert uploaded[".log"] == local


def check_records(records: list[Record], run: ChildRun) -> None:
    """Contiguous from 0, every acknowledged record there, every record as written."""
    assert [r.offset for r in records] == list(range(len(records))), "offsets not contiguous"
    assert len(run.acks) <= len(records) <= len(run.acks) + 1, (
        f"{len(records)} records for {len(run.acks)} acknowledged appends"
    )
    for offset, record in enumerate(records):
        assert record.key == str(offset).encode()
        assert record.value == make_value(run.seed, offset), f"offset {offset} altered"
    for ack in run.acks:
        value = records[ack.offset].value
        assert value is not None
        assert hashlib.sha256(value).hexdigest() == ack.digest, f"acknowledged {ack} altered"


def check_manifest(snap: Snapshot) -> None:
    """Catalog, stream directory and store agree, with nothing pending or left over."""
    assert snap.uploads == {}, "upload intents remain"
    assert snap.trashed == [], "the trash was not emptied"
    expected: set[str] = set()
    local_sealed = 0
    for base, entry in snap.sealed.items():
        name = f"{base:020d}"
        if entry.tier == "object":
            assert entry.key is not None
            assert entry.key.startswith(f"{snap.journal_id}/")
            for suffix in SUFFIXES:
                assert entry.key + suffix in snap.objects, f"{entry.key}{suffix} is missing"
                assert name + suffix not in snap.local, f"local {name}{suffix} of an object segment"
                expected.add(entry.key + suffix)
            log = snap.objects[entry.key + ".log"]
            assert len(log) == entry.size
            assert crc32c.crc32c(log) == entry.crc32c
        else:
            assert entry.tier == "local"
            local = snap.local_log(base)
            assert local is not None, f"local sealed segment {name} has no file"
            assert len(local) == entry.size
            local_sealed += 1
    assert set(snap.objects) == expected, "the store holds objects the catalog does not"
    assert local_sealed >= 1, "the test wants local sealed segments next to object ones"
    logs = sorted(int(n[:-4]) for n in snap.local if n.endswith(".log"))
    local_bases = sorted(b for b, e in snap.sealed.items() if e.tier == "local")
    assert logs[:-1] == local_bases, "local files other than the local segments and the active one"
    assert logs[-1] > max(snap.sealed), "the active segment is not the last"


# -- tests --------------------------------------------------------------------


@pytest.mark.parametrize("point", POINTS)
async def test_crash_during_migration(
    tmp_path: Path, object_store: ObjectStore, point: CrashPoint
) -> None:
    await crash_and_recover(tmp_path / "data", object_store, point, seed=1)


@pytest.mark.parametrize("seed", MORE_SEEDS)
@pytest.mark.parametrize("point", POINTS)
async def test_crash_during_migration_more_seeds(
    tmp_path: Path, file_store: ObjectStore, point: CrashPoint, seed: int
) -> None:
    """Other uploads hit and other cuts of the log (on file:// only, to keep the suite fast)."""
    await crash_and_recover(tmp_path / "data", file_store, point, seed)


async def crash_and_recover(
    data: Path, object_store: ObjectStore, point: CrashPoint, seed: int
) -> None:
    """Crash the child at ``point``, check what it left, reopen, migrate, check it all."""
    run = await run_child(data, object_store, point, seed)
    crash = run.crash
    pre_commit = point in PRE_COMMIT

    before = await trio.to_thread.run_sync(take_snapshot, data, object_store)
    check_left_behind(run, before)

    async with Journal.open(
        data,
        fsync="always",
        maintenance_interval=3600.0,  # passes run only when the test asks
        object_url=object_store.url,
        object_options=object_store.options,
        object_timeout=10.0,
    ) as journal:
        segments = {s.base_offset: s for s in journal.segments(STREAM)}
        crashed = segments[crash.base_offset]
        local_file = data / "streams" / f"{crash.stream_id:06d}-{STREAM}"
        local_file /= f"{crash.base_offset:020d}.log"
        if pre_commit:
            assert (crashed.tier, crashed.key) == ("local", None)
            assert local_file.exists()
        else:
            assert (crashed.tier, crashed.key) == ("object", crash.key + ".log")
            assert not local_file.exists(), "a committed segment's local file survived the open"
        tiering = journal.statistics().tiering
        assert tiering is not None
        assert tiering.trash_pending == (1 if pre_commit else 0)
        assert journal.stream_info(STREAM).quarantined == ()
        records = await read_all(journal, STREAM)
        check_records(records, run)
        assert journal.stream_info(STREAM).next_offset == len(records)

        moved = await journal.migrate()
        tiering = journal.statistics().tiering
        assert tiering is not None
        assert (tiering.upload_failures, tiering.last_error) == (0, None)
        assert tiering.uploads == moved
        assert tiering.trash_pending == 0
        assert tiering.orphans_found == 0, "the crash left objects the catalog did not know"
        assert tiering.objects_deleted == (1 if pre_commit else 0)
        tiers = [s.tier for s in journal.segments(STREAM)]
        assert tiers == sorted(tiers, key=["object", "local", "memory"].index)
        crashed = next(s for s in journal.segments(STREAM) if s.base_offset == crash.base_offset)
        assert crashed.tier == "object"
        assert crashed.key is not None
        if pre_commit:
            assert moved >= 1
            assert not crashed.key.startswith(crash.key), "the crashed upload's key was reused"
        else:
            assert crashed.key == crash.key + ".log"
        assert await read_all(journal, STREAM) == records
        assert await journal.verify(STREAM) == []

    after = await trio.to_thread.run_sync(take_snapshot, data, object_store)
    check_manifest(after)
    if pre_commit:
        assert not after.objects_of(crash.key), "the abandoned upload was not deleted"
    else:
        assert set(after.objects_of(crash.key)) == set(SUFFIXES)
    if point in ("index-only", "mid-log", "before-commit"):
        assert before.objects_of(crash.key), "no orphan to clean up: the test proves nothing"


async def test_nothing_deleted_locally_before_commit(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    """Killed after a verified upload, before its commit: every acknowledged record can
    still be read from the local files and the committed objects, with no recovery."""
    data = tmp_path / "data"
    run = await run_child(data, object_store, "before-commit", seed=7)
    snap = await trio.to_thread.run_sync(take_snapshot, data, object_store)
    crash = run.crash
    assert snap.sealed[crash.base_offset].tier == "local"
    assert snap.objects_of(crash.key)[".log"] == snap.local_log(crash.base_offset)
    for base, entry in snap.sealed.items():
        if entry.tier == "local":
            for suffix in SUFFIXES:
                assert f"{base:020d}{suffix}" in snap.local, f"{base}{suffix} deleted"
    assert any(e.tier == "object" for e in snap.sealed.values()) == (crash.nth > 1)
    found = records_without_journal(snap)
    for ack in run.acks:
        record = found.get(ack.offset)
        assert record is not None, f"acknowledged offset {ack.offset} is nowhere"
        assert record.key == str(ack.seq).encode()
        assert record.value is not None
        assert hashlib.sha256(record.value).hexdigest() == ack.digest

"""What ``strata-journal`` does, one function per mode; ``cli.py`` picks one.

Every function writes to the given text streams and returns the exit status.
Problems with the data (torn tails, CRC failures, missing files or objects)
are reported on ``err`` as ``stream S segment F position P: what`` and the
command goes on; only ``--verify`` turns them into a non-zero status.

``--follow`` reads whatever was appended to the active segment's file, then
waits for the next change: with inotify (writes and new files in the stream
directories) it wakes on the write itself, and looks again at least every
second; where inotify is unavailable it sleeps 10 ms, doubling up to 200 ms
while nothing arrives. A roll is seen as a newer ``.log`` file in the stream
directory: the old file is read to its end first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from inotify_simple import INotify, flags

from journal.errors import StorageError
from journal.segments.batch import decode_batch
from tools.journalctl.output import (
    RecordItem,
    format_batch,
    format_record,
    format_time,
    human_size,
)
from tools.journalctl.reader import (
    Cursor,
    DataDir,
    DataDirError,
    SegmentView,
    StreamView,
    first_header,
)

__all__ = ["Selection", "disk_usage", "list_segments", "list_streams", "show", "vacuum"]

_FOLLOW_MIN_WAIT = 0.01
_FOLLOW_MAX_WAIT = 0.2
_FOLLOW_SAFETY_WAIT = 1.0  # with inotify: look again after this, even without an event


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records to print, and how."""

    from_offset: int | None = None
    to_offset: int | None = None
    since: int | None = None
    until: int | None = None
    lines: int | None = None
    reverse: bool = False
    grep: re.Pattern[str] | None = None
    follow: bool = False
    output: str = "short"


def report(err: TextIO, stream: str, seg: SegmentView, position: int, what: str) -> None:
    err.write(f"strata-journal: stream {stream} segment {seg.where} position {position}: {what}\n")
    err.flush()


# -- listings -------------------------------------------------------------------------


def list_streams(dd: DataDir, streams: list[StreamView], out: TextIO, as_json: bool) -> int:
    if not as_json:
        out.write(f"{'STREAM':<24} {'ID':>4} {'FIRST':>10} {'NEXT':>10} {'SIZE':>10}  TIERS\n")
    for stream in streams:
        segs = dd.segments(stream)
        first = segs[0].base_offset if segs else 0
        nxt = (dd.last_offset(segs[-1])[0] if segs else None) or first
        size = sum(s.size for s in segs)
        tiers: dict[str, int] = {}
        for s in segs:
            tiers[s.tier] = tiers.get(s.tier, 0) + 1
        if as_json:
            doc = {
                "stream": stream.name, "id": stream.id, "first_offset": first,
                "next_offset": nxt, "size": size, "segments": len(segs), "tiers": tiers,
            }  # fmt: skip
            out.write(json.dumps(doc) + "\n")
            continue
        tier_text = " ".join(f"{t}:{n}" for t, n in sorted(tiers.items())) or "-"
        out.write(
            f"{stream.name:<24} {stream.id:>4} {first:>10} {nxt:>10} {human_size(size):>10}  "
            f"{len(segs)} segments ({tier_text})\n"
        )
    return 0


def list_segments(dd: DataDir, streams: list[StreamView], out: TextIO, as_json: bool) -> int:
    for stream in streams:
        if not as_json:
            out.write(f"stream {stream.name} (id {stream.id}, {stream.directory})\n")
            out.write(
                f"  {'BASE':>10} {'LAST':>10} {'TIER':<6} {'SIZE':>10}  "
                f"{'FIRST TIME':<24} {'MAX TIME':<24} STATE  KEY\n"
            )
        uploads = dd.catalog.uploads(stream.id)
        for seg in dd.segments(stream):
            nxt, max_ts = dd.last_offset(seg)
            last = nxt - 1 if nxt is not None else None
            head = first_header(dd, seg)
            first_ts = head.base_timestamp if head is not None else None
            if seg.quarantined is not None:
                state = f"quarantined ({seg.quarantined})"
            elif seg.tier == "memory":
                state = "active"
            elif seg.sealed:
                state = "sealed,verified"
            else:
                state = "unsealed"
            upload = uploads.get((stream.id, seg.base_offset))
            if upload is not None:
                state += f",uploading:{upload}"
            if as_json:
                doc = {
                    "stream": stream.name, "base_offset": seg.base_offset, "last_offset": last,
                    "tier": seg.tier, "size": seg.size, "first_timestamp": first_ts,
                    "max_timestamp": max_ts, "sealed": seg.sealed, "state": state,
                    "quarantined": seg.quarantined, "key": seg.key,
                    "path": None if seg.path is None else str(seg.path),
                }  # fmt: skip
                out.write(json.dumps(doc) + "\n")
                continue
            out.write(
                f"  {seg.base_offset:>10} {'-' if last is None else last:>10} {seg.tier:<6} "
                f"{human_size(seg.size):>10}  {format_time(first_ts):<24} "
                f"{format_time(max_ts):<24} {state}  {seg.key or ''}\n"
            )
    return 0


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def disk_usage(dd: DataDir, streams: list[StreamView], out: TextIO, as_json: bool) -> int:
    totals = {"local": 0, "object": 0}
    rows = []
    for stream in streams:
        segs = dd.segments(stream)
        local = _tree_size(stream.directory) if stream.directory is not None else 0
        obj = sum(s.size for s in segs if s.tier == "object")
        totals["local"] += local
        totals["object"] += obj
        rows.append((stream.name, local, obj, sum(1 for s in segs if s.tier == "object")))
    catalog = _tree_size(dd.root / "catalog")
    cache = _tree_size(dd.root / "cache")
    if as_json:
        for name, local, obj, n in rows:
            doc = {"stream": name, "local": local, "object": obj, "object_segments": n}
            out.write(json.dumps(doc) + "\n")
        out.write(json.dumps({"total": True, **totals, "catalog": catalog, "cache": cache}) + "\n")
        return 0
    out.write(f"{'STREAM':<24} {'LOCAL':>12} {'OBJECT':>12}\n")
    for name, local, obj, _n in rows:
        out.write(f"{name:<24} {human_size(local):>12} {human_size(obj):>12}\n")
    out.write(
        f"{'total':<24} {human_size(totals['local']):>12} {human_size(totals['object']):>12}\n"
        f"catalog {human_size(catalog)}, read cache {human_size(cache)}"
        f", object tier {dd.object_url or 'none'}\n"
    )
    return 0


# -- records ------------------------------------------------------------------------


def _matches(sel: Selection, item: RecordItem) -> bool:
    r = item.record
    assert r.offset is not None
    assert r.timestamp is not None
    if sel.from_offset is not None and r.offset < sel.from_offset:
        return False
    if sel.to_offset is not None and r.offset > sel.to_offset:
        return False
    if sel.since is not None and r.timestamp < sel.since:
        return False
    if sel.until is not None and r.timestamp > sel.until:
        return False
    if sel.grep is not None:
        texts = [b.decode("utf-8", errors="replace") for b in (r.key, r.value) if b is not None]
        for k, v in r.headers:
            texts.append(k)
            if v is not None:
                texts.append(v.decode("utf-8", errors="replace"))
        if not any(sel.grep.search(t) for t in texts):
            return False
    return True


def _segment_wanted(sel: Selection, seg: SegmentView) -> bool:
    if (
        seg.next_offset is not None
        and sel.from_offset is not None
        and seg.next_offset <= sel.from_offset
    ):
        return False
    if sel.to_offset is not None and seg.base_offset > sel.to_offset:
        return False
    if sel.since is not None and seg.max_timestamp is not None and seg.max_timestamp >= 0:
        return seg.max_timestamp >= sel.since
    return True


def _emit_segment(
    dd: DataDir,
    stream: str,
    seg: SegmentView,
    cursor: Cursor,
    sel: Selection,
    err: TextIO,
    emit: Callable[[str], None],
    *,
    quiet_torn: bool = False,
    quiet_stop: bool = False,
) -> None:
    """Print the selected records (or batches) of ``seg`` from ``cursor`` on."""
    try:
        for item in dd.walk(seg, cursor):
            h = item.header
            if sel.output == "batch":
                if (sel.from_offset is None or h.last_offset >= sel.from_offset) and (
                    sel.to_offset is None or h.base_offset <= sel.to_offset
                ):
                    emit(
                        format_batch(
                            stream, seg.base_offset, seg.tier, item.position, h, item.error
                        )
                    )
                continue
            if not sel.follow and sel.to_offset is not None and h.base_offset > sel.to_offset:
                return  # past the range: no need to read on
            if item.error is not None:
                report(err, stream, seg, item.position, f"skipping batch: {item.error}")
                continue
            if sel.from_offset is not None and h.last_offset < sel.from_offset:
                continue
            if sel.since is not None and h.max_timestamp < sel.since:
                continue
            try:
                _, records = decode_batch(item.raw)
            except Exception as exc:  # a CRC-valid batch can still hold nonsense
                report(err, stream, seg, item.position, f"cannot decode batch: {exc}")
                continue
            for record in records:
                ri = RecordItem(stream, seg.base_offset, seg.tier, item.position, record)
                if _matches(sel, ri):
                    emit(format_record(sel.output, ri))
    except DataDirError as exc:
        report(err, stream, seg, cursor.position, str(exc))
        return
    if cursor.error is not None and not quiet_stop and not (quiet_torn and cursor.torn):
        report(err, stream, seg, cursor.position, f"stopped reading: {cursor.error}")


@dataclass(slots=True)
class _Follow:
    stream: StreamView
    base: int | None  # the segment being followed; None until the stream has one
    cursor: Cursor


def show(dd: DataDir, streams: list[StreamView], sel: Selection, out: TextIO, err: TextIO) -> int:
    """Print the selected records of ``streams``, then (``--follow``) new ones as they come."""
    follows = []
    for stream in streams:
        lines: deque[str] = deque(maxlen=sel.lines if sel.lines else None)
        buffered = sel.lines is not None or sel.reverse

        def emit(text: str, lines: deque[str] = lines, buffered: bool = buffered) -> None:
            if sel.lines == 0:
                return
            if buffered:
                lines.append(text)
            else:
                out.write(text + "\n")

        segs = dd.segments(stream)
        state = _Follow(stream, None, Cursor(0, None))
        for seg in segs:
            if seg.quarantined is not None:
                report(err, stream.name, seg, 0, f"quarantined: {seg.quarantined}")
            cursor = Cursor(0, seg.base_offset)
            if _segment_wanted(sel, seg):
                _emit_segment(dd, stream.name, seg, cursor, sel, err, emit, quiet_torn=sel.follow)
            elif sel.follow and seg is segs[-1]:
                list(dd.walk(seg, cursor))  # only to find where following starts
            state = _Follow(stream, seg.base_offset, cursor)
        if buffered:
            ordered = list(lines)
            if sel.reverse:
                ordered.reverse()
            for text in ordered:
                out.write(text + "\n")
        out.flush()
        follows.append(state)
    if not sel.follow:
        return 0
    return _follow(dd, follows, sel, out, err)


class _Wakeup:
    """Waits for a write in the followed stream directories (inotify), else sleeps."""

    def __init__(self, directories: list[Path]) -> None:
        self._inotify: INotify | None = None
        with contextlib.suppress(OSError):  # no inotify here (or no instances left)
            inotify = INotify()
            for directory in directories:
                inotify.add_watch(directory, flags.MODIFY | flags.CREATE | flags.MOVED_TO)
            self._inotify = inotify

    def wait(self, seconds: float) -> float:
        """Wait for a change, or ``seconds``; returns the wait to use next time."""
        if self._inotify is not None:
            self._inotify.read(timeout=int(_FOLLOW_SAFETY_WAIT * 1000))
            return seconds
        time.sleep(seconds)
        return min(seconds * 2, _FOLLOW_MAX_WAIT)


def _follow(dd: DataDir, follows: list[_Follow], sel: Selection, out: TextIO, err: TextIO) -> int:
    wait = _FOLLOW_MIN_WAIT
    printed = 0
    wakeup = _Wakeup([f.stream.directory for f in follows if f.stream.directory is not None])

    def emit(text: str) -> None:
        nonlocal printed
        out.write(text + "\n")
        printed += 1

    try:
        while True:
            printed = 0
            for f in follows:
                _poll(dd, f, sel, err, emit)
            if printed:
                out.flush()
                wait = _FOLLOW_MIN_WAIT
                continue
            if sel.to_offset is not None and all(
                f.cursor.next_offset is not None and f.cursor.next_offset > sel.to_offset
                for f in follows
            ):
                return 0
            wait = wakeup.wait(wait)
    except KeyboardInterrupt:
        return 0


def _poll(
    dd: DataDir, f: _Follow, sel: Selection, err: TextIO, emit: Callable[[str], None]
) -> None:
    while True:
        files = dd.log_files(f.stream)  # listed before reading: a newer file means a full old one
        if f.base is None:
            if not files:
                return
            f.base = min(files)
            f.cursor = Cursor(0, f.base)
        path = files.get(f.base)
        if path is not None:
            seg = SegmentView(f.stream.name, f.base, "memory", False, 0, None, None, path=path)
            stuck = (f.cursor.position, f.cursor.error)  # reported once, not on every wake-up
            f.cursor.error, f.cursor.torn = None, False
            _emit_segment(dd, f.stream.name, seg, f.cursor, sel, err, emit, quiet_stop=True)
            now = (f.cursor.position, f.cursor.error)
            if f.cursor.error is not None and not f.cursor.torn and now != stuck:
                report(err, f.stream.name, seg, f.cursor.position, f"stopped: {f.cursor.error}")
        newer = sorted(b for b in files if b > f.base)
        if not newer:
            return
        f.base = newer[0]
        f.cursor = Cursor(0, f.base)


# -- vacuum -------------------------------------------------------------------------


def vacuum(
    root: Path,
    patterns: list[str] | None,
    size: int | None,
    age_ms: int | None,
    object_options: dict[str, Any],
    out: TextIO,
    err: TextIO,
) -> int:
    """Apply retention now with these limits (this run only); refuse if the directory is busy."""
    from journal.catalog import Catalog

    try:
        catalog = Catalog(root / "catalog")
    except StorageError as exc:
        err.write(
            f"strata-journal: refusing to vacuum {root}: another process (a running server?) "
            f"holds the data directory. Stop it, or have it apply retention itself.\n  ({exc})\n"
        )
        return 2
    try:
        url = catalog.object_url()
    finally:
        catalog.close()
    import trio

    return trio.run(_vacuum, root, patterns, size, age_ms, url, object_options, out, err)


async def _vacuum(
    root: Path,
    patterns: list[str] | None,
    size: int | None,
    age_ms: int | None,
    url: str | None,
    object_options: dict[str, Any],
    out: TextIO,
    err: TextIO,
) -> int:
    import fnmatch

    from journal import Journal

    async with Journal.open(
        root, object_url=url, object_options=object_options or None, maintenance_interval=3600
    ) as j:
        names = [
            n for n in sorted(j.streams())
            if not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns)
        ]  # fmt: skip
        for name in names:
            stream = j._stream(name)
            before = j.segments(name)
            config = stream.config
            stream.config = replace(
                config,
                retention_bytes=size if size is not None else config.retention_bytes,
                retention_ms=age_ms if age_ms is not None else config.retention_ms,
            )
            try:
                await j.apply_retention(name)
                if url is not None:
                    await j.migrate(name)  # with an object tier, local segments go up first
                    await j.apply_retention(name)
            finally:
                stream.config = config
            after = j.segments(name)
            gone = {s.base_offset for s in before} - {s.base_offset for s in after}
            freed = sum(s.size_bytes for s in before if s.base_offset in gone)
            out.write(f"{name}: removed {len(gone)} segments, {human_size(freed)}\n")
    return 0

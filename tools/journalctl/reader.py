"""A read-only view of a journal's data directory, for ``strata-journal``.

The catalog is opened read-only (RocksDB allows one writer, and any number of
read-only openers beside it): a snapshot of the streams and sealed segments as
of the opening. Segment files are listed and read directly, batch by batch
with ``pread``; object-tier segments are read through fsspec from the URL the
journal recorded in the catalog (``meta/object_url``). Nothing here writes:
no recovery runs, so the tool works on a directory a server has open.

Bad data is never an exception here: a walk stops at the first batch it
cannot parse and says where and why (:class:`Cursor`), and the caller
reports it and goes on.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal.catalog import Catalog, StreamEntry
from journal.config import StreamConfig
from journal.errors import InvalidBatchError, StorageError
from journal.segments.batch import HEADER_SIZE, BatchHeader, check_batch, parse_header
from journal.segments.segment import pread_of, scan_batches

__all__ = [
    "BatchItem",
    "Cursor",
    "DataDir",
    "DataDirError",
    "SegmentView",
    "StreamView",
]

_MISSING_OBJECT = (FileNotFoundError,)


class DataDirError(Exception):
    """The directory cannot be read as a journal (no catalog, unreadable catalog...)."""


@dataclass(frozen=True, slots=True)
class StreamView:
    name: str
    id: int
    config: StreamConfig
    directory: Path | None  # None when the stream has no directory (yet)


@dataclass(frozen=True, slots=True)
class SegmentView:
    """One segment as the catalog and the files describe it."""

    stream: str
    base_offset: int
    tier: str  # "memory" (the active segment), "local" or "object"
    sealed: bool  # recorded in the catalog (sealed and verified when written)
    size: int
    next_offset: int | None  # from the catalog; None for unsealed segments
    max_timestamp: int | None
    key: str | None = None  # object key stem, object tier only
    path: Path | None = None  # the .log file, local segments only
    quarantined: str | None = None
    crc32c: int | None = None

    @property
    def name(self) -> str:
        return f"{self.base_offset:020d}.log"

    @property
    def where(self) -> str:
        """How a report names the segment: its file or its object."""
        if self.key is not None:
            return f"{self.key}.log"
        return str(self.path) if self.path is not None else self.name


@dataclass(frozen=True, slots=True)
class BatchItem:
    position: int
    header: BatchHeader
    raw: bytes
    error: str | None  # why the CRC check failed; None when the batch is good


@dataclass(slots=True)
class Cursor:
    """Where a walk is: the next byte position and offset, and why it stopped."""

    position: int
    next_offset: int | None
    error: str | None = None
    torn: bool = False  # stopped on a batch cut short by the end of the data


@dataclass
class DataDir:
    """A data directory opened for reading (see the module docstring)."""

    root: Path
    object_options: dict[str, Any] = field(default_factory=dict)
    object_url_override: str | None = None

    def __post_init__(self) -> None:
        if not (self.root / "catalog").is_dir():
            raise DataDirError(f"{self.root} is not a journal data directory (no catalog/)")
        try:
            self._catalog = Catalog(self.root / "catalog", read_only=True)
        except StorageError as exc:
            raise DataDirError(str(exc)) from exc
        self._fs: Any = None
        self._fs_root = ""
        self._objects: dict[str, bytes | None] = {}

    def close(self) -> None:
        self._catalog.close()

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def object_url(self) -> str | None:
        return self.object_url_override or self._catalog.object_url()

    # -- streams and segments ---------------------------------------------------

    def streams(self, patterns: list[str] | None = None) -> list[StreamView]:
        out = []
        for entry in sorted(self._catalog.streams(), key=lambda e: e.name):
            if patterns and not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
                continue
            out.append(StreamView(entry.name, entry.id, entry.config, self._directory(entry)))
        return out

    def _directory(self, entry: StreamEntry) -> Path | None:
        matches = sorted((self.root / "streams").glob(f"{entry.id:06d}-*"))
        return matches[0] if matches else None

    def log_files(self, stream: StreamView) -> dict[int, Path]:
        """The stream's local ``.log`` files by base offset."""
        if stream.directory is None or not stream.directory.is_dir():
            return {}
        out = {}
        for path in stream.directory.glob("*.log"):
            if path.stem.isdigit():
                out[int(path.stem)] = path
        return out

    def segments(self, stream: StreamView) -> list[SegmentView]:
        """Every segment of the stream, oldest first: the catalog's and the local files'."""
        sealed = self._catalog.sealed_segments(stream.id)
        quarantined = self._catalog.quarantined(stream.id)
        files = self.log_files(stream)
        newest = max(files, default=None)
        out = []
        for base in sorted(set(sealed) | set(files)):
            path = files.get(base)
            seg = sealed.get(base)
            if seg is not None and seg.tier == "object":
                out.append(
                    SegmentView(
                        stream.name, base, "object", True, seg.size, seg.next_offset,
                        seg.max_timestamp, key=seg.key, quarantined=quarantined.get(base),
                        crc32c=seg.crc32c,
                    )
                )  # fmt: skip
            elif seg is not None:
                out.append(
                    SegmentView(
                        stream.name, base, "local", True, seg.size, seg.next_offset,
                        seg.max_timestamp, path=path, quarantined=quarantined.get(base),
                    )
                )  # fmt: skip
            elif path is not None:
                size = _file_size(path)
                tier = "memory" if base == newest else "local"
                out.append(
                    SegmentView(
                        stream.name, base, tier, False, size, None, None, path=path,
                        quarantined=quarantined.get(base),
                    )
                )  # fmt: skip
        return out

    # -- reading ------------------------------------------------------------------

    def _object_fs(self) -> tuple[Any, str]:
        if self._fs is None:
            url = self.object_url
            if url is None:
                raise DataDirError("the journal has no object tier recorded (meta/object_url)")
            import fsspec  # imported here: listing local data does not need it

            options = dict(self.object_options)
            if url.startswith(("s3://", "s3a://")):  # fail in seconds, not botocore's minutes
                options.setdefault(
                    "config_kwargs",
                    {"connect_timeout": 10, "read_timeout": 30, "retries": {"max_attempts": 2}},
                )
            self._fs, self._fs_root = fsspec.core.url_to_fs(url, **options)
        return self._fs, self._fs_root

    def fetch_object(self, key: str) -> bytes | None:
        """The whole object ``key`` (a stem plus suffix), None when missing; cached."""
        if key not in self._objects:
            fs, root = self._object_fs()
            try:
                self._objects[key] = fs.cat_file(f"{root.rstrip('/')}/{key}")
            except _MISSING_OBJECT:
                self._objects[key] = None
            except Exception as exc:  # s3fs and friends raise many kinds
                raise DataDirError(f"cannot read object {key}: {exc}") from exc
        return self._objects[key]

    def segment_bytes(self, seg: SegmentView) -> bytes | None:
        """All of a segment's log, None when its file or object is missing."""
        if seg.key is not None:
            return self.fetch_object(seg.key + ".log")
        if seg.path is None:
            return None
        try:
            return seg.path.read_bytes()
        except FileNotFoundError:
            return None

    def walk(self, seg: SegmentView, cursor: Cursor) -> Iterator[BatchItem]:
        """The batches of ``seg`` from ``cursor``, which is advanced past each one.

        The walk stops at the end of the data or at the first batch whose header
        does not parse, that is cut short (``cursor.torn``) or that does not
        continue the offsets; ``cursor.error`` says why. A batch whose CRC
        fails is yielded with its ``error`` set, and the walk goes on.
        """
        if seg.key is not None:
            data = self.fetch_object(seg.key + ".log")
            if data is None:
                cursor.error = f"object {seg.key}.log is missing"
                return
            yield from _walk(lambda pos, n: data[pos : pos + n], len(data), cursor)
            return
        if seg.path is None:
            cursor.error = "no file"
            return
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            cursor.error = f"file {seg.path} is missing"
            return
        try:
            yield from _walk(pread_of(fd), os.fstat(fd).st_size, cursor)
        finally:
            os.close(fd)

    def last_offset(self, seg: SegmentView) -> tuple[int | None, int | None]:
        """(next offset, max timestamp) of a segment: the catalog's, or a header walk."""
        if seg.next_offset is not None:
            return seg.next_offset, seg.max_timestamp
        if seg.path is None:
            return None, None
        max_ts = -1
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, None

        def observe(_pos: int, header: BatchHeader) -> None:
            nonlocal max_ts
            max_ts = max(max_ts, header.max_timestamp)

        try:
            result = scan_batches(
                pread_of(fd), 0, os.fstat(fd).st_size, seg.base_offset, verify=False,
                on_batch=observe,
            )  # fmt: skip
        finally:
            os.close(fd)
        return result.next_offset, (max_ts if max_ts >= 0 else None)


def _walk(read: Any, end: int, cursor: Cursor) -> Iterator[BatchItem]:
    while cursor.position < end:
        pos = cursor.position
        head = read(pos, HEADER_SIZE)
        try:
            header = parse_header(head, 0)
        except InvalidBatchError as exc:
            cursor.error = exc.reason
            cursor.torn = len(head) < HEADER_SIZE
            return
        if pos + header.size > end:  # checked before reading: the length may be garbage
            cursor.error = f"truncated batch: {end - pos} of {header.size} bytes"
            cursor.torn = True
            return
        raw = bytes(read(pos, header.size))
        if len(raw) < header.size:  # the file shrank under us
            cursor.error = f"truncated batch: {len(raw)} of {header.size} bytes"
            cursor.torn = True
            return
        if cursor.next_offset is not None and header.base_offset != cursor.next_offset:
            cursor.error = f"offset {header.base_offset} where {cursor.next_offset} was expected"
            return
        error = None
        try:
            check_batch(raw, 0)
        except InvalidBatchError as exc:
            error = exc.reason
        cursor.position = pos + header.size
        cursor.next_offset = header.next_offset
        yield BatchItem(pos, header, raw, error)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def first_header(dd: DataDir, seg: SegmentView) -> BatchHeader | None:
    """The first batch header of a segment (one small read), None if unreadable."""
    try:
        if seg.key is not None:
            fs, root = dd._object_fs()
            head = fs.cat_file(f"{root.rstrip('/')}/{seg.key}.log", start=0, end=HEADER_SIZE)
        elif seg.path is not None:
            with seg.path.open("rb") as f:
                head = f.read(HEADER_SIZE)
        else:
            return None
        return parse_header(head, 0)
    except (OSError, InvalidBatchError, DataDirError):
        return None
    except Exception:  # object stores raise many kinds; the listing goes on
        return None

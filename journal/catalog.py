"""The catalog: the journal's small, durable bookkeeping in RocksDB.

Segment files are the source of truth for records; the catalog records what
lets a restart avoid rescanning them:

* ``stream/<name>``      -> stream id and :class:`~journal.config.StreamConfig`
* ``seg/<id>/<base>``    -> a sealed segment's size, last offset and max
                            timestamp ("sealed and verified": never rescanned)
* ``ckpt/<id>``          -> the recovery point of the active segment: a byte
                            position up to which the log was fsynced
* ``quarantine/<id>/<base>`` -> why a sealed segment is refused
* ``upload/<id>/<base>``  -> the object key an upload in progress writes to
                            (written, synced, *before* the first byte goes out)
* ``meta/journal_id``     -> a UUID naming this journal's prefix in the object tier
* ``meta/object_url``     -> the object tier's URL, for tools that read the
                            directory offline (``strata-journal``)
* ``trash/<key>``         -> an object-tier key to delete (retention, deleted
                            streams, uploads that never committed)

A sealed segment's entry also says which tier holds it: ``local`` (its file in
the stream directory) or ``object`` (under ``key`` in the object tier). Moving
a segment commits the new entry and drops the upload intent in one synced
write, so after a crash the intent alone marks an orphaned upload.

Stream creation and deletion, quarantines and everything about the object
tier are written with sync; the rest can be rebuilt from the segment files, so
it is written without (a lost checkpoint only makes the next recovery scan a
little more).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

from journal.config import StreamConfig
from journal.errors import StorageError
from journal.rocks import scan_prefix

__all__ = ["Catalog", "Checkpoint", "SealedSegment", "StreamEntry"]


@dataclass(frozen=True, slots=True)
class StreamEntry:
    name: str
    id: int
    config: StreamConfig


@dataclass(frozen=True, slots=True)
class SealedSegment:
    base_offset: int
    size: int
    next_offset: int
    max_timestamp: int
    tier: str = "local"  # "local" or "object"
    key: str | None = None  # the object key stem, for the object tier
    crc32c: int | None = None  # of the whole log, checked when it was uploaded


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The active segment ``segment`` was durable up to ``position``/``next_offset``."""

    segment: int
    position: int
    next_offset: int


class Catalog:
    """Typed access to the RocksDB database under ``<data>/catalog``."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (creating if needed) the catalog; only one process may write it.

        ``read_only`` opens a snapshot as of now, beside a writer if there is
        one, and creates nothing: for inspection tools.
        """
        options = Options(raw_mode=True)
        options.create_if_missing(not read_only)
        try:
            if read_only:
                self._db = Rdict(str(path), options, access_type=AccessType.read_only())
            else:
                self._db = Rdict(str(path), options)
        except Exception as exc:  # rocksdict raises a plain Exception
            raise StorageError(
                f"cannot open the catalog (is another process using it?): {exc}"
            ) from exc
        self._sync = WriteOptions()
        self._sync.sync = True

    def close(self) -> None:
        self._db.close()

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return scan_prefix(self._db, prefix)

    def journal_id(self) -> str:
        """This journal's identity, made once: its object keys live under it, so
        journals sharing a bucket never touch each other's objects."""
        raw = self._db.get(b"meta/journal_id")
        if raw is None:
            raw = uuid.uuid4().hex.encode()
            self._db.put(b"meta/journal_id", raw, self._sync)
        return bytes(raw).decode()

    def object_url(self) -> str | None:
        """The object tier's URL the journal was last opened with, if any."""
        raw = self._db.get(b"meta/object_url")
        return None if raw is None else bytes(raw).decode()

    def set_object_url(self, url: str) -> None:
        if self.object_url() != url:
            self._db.put(b"meta/object_url", url.encode(), self._sync)

    # -- streams --------------------------------------------------------------

    def streams(self) -> list[StreamEntry]:
        out = []
        for key, value in self._scan(b"stream/"):
            doc = json.loads(value)
            config = StreamConfig.from_json(json.dumps(doc["config"]).encode())
            out.append(StreamEntry(key[7:].decode(), doc["id"], config))
        return out

    def add_stream(self, name: str, config: StreamConfig) -> StreamEntry:
        raw = self._db.get(b"meta/next_stream_id")
        stream_id = int(raw) if raw is not None else 1
        self._db.put(b"meta/next_stream_id", str(stream_id + 1).encode(), self._sync)
        doc = {"id": stream_id, "config": json.loads(config.to_json())}
        self._db.put(b"stream/" + name.encode(), json.dumps(doc).encode(), self._sync)
        return StreamEntry(name, stream_id, config)

    def remove_stream(self, entry: StreamEntry) -> None:
        """Forget a stream; its object-tier segments and uploads go to the trash."""
        batch = WriteBatch(raw_mode=True)
        batch.delete(b"stream/" + entry.name.encode())
        for seg in self.sealed_segments(entry.id).values():
            if seg.key is not None:
                _trash(batch, seg.key)
        for upload in self.uploads(entry.id).values():
            _trash(batch, upload)
        for prefix in (b"seg/", b"quarantine/", b"upload/"):
            for key, _ in list(self._scan(prefix + _id(entry.id))):
                batch.delete(key)
        batch.delete(b"ckpt/" + _id(entry.id))
        self._db.write(batch, self._sync)

    # -- segments -------------------------------------------------------------

    def sealed_segments(self, stream_id: int) -> dict[int, SealedSegment]:
        out = {}
        for _, value in self._scan(b"seg/" + _id(stream_id)):
            seg = _decode(value)
            out[seg.base_offset] = seg
        return out

    def seal(self, stream_id: int, seg: SealedSegment, checkpoint: Checkpoint) -> None:
        key = b"seg/" + _id(stream_id) + _base(seg.base_offset)
        self._db.put(key, _encode(seg))
        self.set_checkpoint(stream_id, checkpoint)

    def forget_segment(self, stream_id: int, base_offset: int, *, key: str | None = None) -> None:
        """Drop a sealed segment's entry; ``key``, its object, goes to the trash with it."""
        if key is None:
            self._db.delete(b"seg/" + _id(stream_id) + _base(base_offset))
            return
        batch = WriteBatch(raw_mode=True)
        batch.delete(b"seg/" + _id(stream_id) + _base(base_offset))
        _trash(batch, key)
        self._db.write(batch, self._sync)

    # -- the object tier ----------------------------------------------------------

    def begin_upload(self, stream_id: int, base_offset: int, key: str) -> None:
        self._db.put(b"upload/" + _id(stream_id) + _base(base_offset), key.encode(), self._sync)

    def commit_upload(self, stream_id: int, seg: SealedSegment) -> None:
        """The segment now lives in the object tier: one synced write with the intent gone."""
        batch = WriteBatch(raw_mode=True)
        batch.put(b"seg/" + _id(stream_id) + _base(seg.base_offset), _encode(seg))
        batch.delete(b"upload/" + _id(stream_id) + _base(seg.base_offset))
        self._db.write(batch, self._sync)

    def abandon_upload(self, stream_id: int, base_offset: int, key: str) -> None:
        """An upload that will not commit: its key goes to the trash, the intent away."""
        batch = WriteBatch(raw_mode=True)
        batch.delete(b"upload/" + _id(stream_id) + _base(base_offset))
        _trash(batch, key)
        self._db.write(batch, self._sync)

    def uploads(self, stream_id: int | None = None) -> dict[tuple[int, int], str]:
        """Upload intents: (stream id, base offset) -> key."""
        prefix = b"upload/" + (_id(stream_id) if stream_id is not None else b"")
        out = {}
        for k, v in self._scan(prefix):
            sid, base = k[len(b"upload/") :].split(b"/")
            out[(int(sid), int(base))] = v.decode()
        return out

    def trash(self, key: str) -> None:
        batch = WriteBatch(raw_mode=True)
        _trash(batch, key)
        self._db.write(batch, self._sync)

    def trashed(self) -> list[str]:
        return [k[len(b"trash/") :].decode() for k, _ in self._scan(b"trash/")]

    def untrash(self, key: str) -> None:
        """The object is gone from the store: stop tracking it."""
        self._db.delete(b"trash/" + key.encode(), self._sync)

    def object_keys(self) -> set[str]:
        """Every key the catalog knows in the object tier: committed, uploading or trashed."""
        keys = {seg.key for _, v in self._scan(b"seg/") if (seg := _decode(v)).key is not None}
        keys.update(v.decode() for _, v in self._scan(b"upload/"))
        keys.update(self.trashed())
        return keys

    def quarantined(self, stream_id: int) -> dict[int, str]:
        prefix = b"quarantine/" + _id(stream_id)
        return {int(k[len(prefix) :]): v.decode() for k, v in self._scan(prefix)}

    def quarantine(self, stream_id: int, base_offset: int, reason: str) -> None:
        key = b"quarantine/" + _id(stream_id) + _base(base_offset)
        self._db.put(key, reason.encode(), self._sync)

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self, stream_id: int) -> Checkpoint | None:
        raw = self._db.get(b"ckpt/" + _id(stream_id))
        return None if raw is None else Checkpoint(**json.loads(raw))

    def set_checkpoint(self, stream_id: int, checkpoint: Checkpoint) -> None:
        self._db.put(b"ckpt/" + _id(stream_id), json.dumps(_asdict(checkpoint)).encode())


def _id(stream_id: int) -> bytes:
    return b"%010d/" % stream_id


def _base(base_offset: int) -> bytes:
    return b"%020d" % base_offset


def _asdict(obj: SealedSegment | Checkpoint) -> dict[str, int | str | None]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _encode(seg: SealedSegment) -> bytes:
    return json.dumps(_asdict(seg)).encode()


def _decode(value: bytes) -> SealedSegment:
    return SealedSegment(**json.loads(value))


def _trash(batch: WriteBatch, key: str) -> None:
    batch.put(b"trash/" + key.encode(), b"")

"""The catalog: the journal's small, durable bookkeeping in RocksDB.

Segment files are the source of truth for records; the catalog records what
lets a restart avoid rescanning them:

* ``stream/<name>``      -> stream id and :class:`~journal.config.StreamConfig`
* ``seg/<id>/<base>``    -> a sealed segment's size, last offset and max
                            timestamp ("sealed and verified": never rescanned)
* ``ckpt/<id>``          -> the recovery point of the active segment: a byte
                            position up to which the log was fsynced
* ``quarantine/<id>/<base>`` -> why a sealed segment is refused

Stream creation and deletion are written with sync; the rest can be rebuilt
from the segment files, so it is written without (a lost checkpoint only makes
the next recovery scan a little more).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rocksdict import Options, Rdict, WriteOptions

from journal.config import StreamConfig
from journal.errors import StorageError

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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The active segment ``segment`` was durable up to ``position``/``next_offset``."""

    segment: int
    position: int
    next_offset: int


class Catalog:
    """Typed access to the RocksDB database under ``<data>/catalog``."""

    def __init__(self, path: Path) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        try:
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
        for key, value in self._db.items(from_key=prefix):
            if not (isinstance(key, bytes) and key.startswith(prefix)):
                return
            yield key, bytes(value)  # raw_mode: always bytes

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
        self._db.delete(b"stream/" + entry.name.encode(), self._sync)
        for prefix in (b"seg/", b"quarantine/"):
            for key, _ in list(self._scan(prefix + _id(entry.id))):
                self._db.delete(key)
        self._db.delete(b"ckpt/" + _id(entry.id))

    # -- segments -------------------------------------------------------------

    def sealed_segments(self, stream_id: int) -> dict[int, SealedSegment]:
        out = {}
        for _, value in self._scan(b"seg/" + _id(stream_id)):
            seg = SealedSegment(**json.loads(value))
            out[seg.base_offset] = seg
        return out

    def seal(self, stream_id: int, seg: SealedSegment, checkpoint: Checkpoint) -> None:
        key = b"seg/" + _id(stream_id) + _base(seg.base_offset)
        self._db.put(key, json.dumps(_asdict(seg)).encode())
        self.set_checkpoint(stream_id, checkpoint)

    def forget_segment(self, stream_id: int, base_offset: int) -> None:
        self._db.delete(b"seg/" + _id(stream_id) + _base(base_offset))

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


def _asdict(obj: SealedSegment | Checkpoint) -> dict[str, int]:
    return {name: getattr(obj, name) for name in obj.__slots__}

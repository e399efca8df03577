"""Per-stream settings and the fsync policies.

A :class:`StreamConfig` is stored in the catalog with its stream, as JSON, so
it survives restarts; unknown keys in a stored config are refused rather than
silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from journal.errors import StrataError

__all__ = ["FSYNC_POLICIES", "FsyncPolicy", "InvalidConfigError", "StreamConfig"]

FsyncPolicy = Literal["always", "interval", "none"]
FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)

_MAX_SEGMENT_BYTES = (1 << 31) - 1  # index positions are 32-bit
MAX_BATCH_BYTES = 64 << 20
"""The largest ``max_batch_bytes``: every batch must fit one journal RPC frame."""


class InvalidConfigError(StrataError, ValueError):
    """A setting has a value the journal cannot work with; names the setting."""


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How one stream is stored.

    ``None`` for a retention setting means unlimited; ``None`` for ``fsync``
    or ``fsync_interval_ms`` means the journal's default.

    ``retention_*`` say when data leaves every tier. ``local_retention_*`` say
    when sealed segments move from local disk to the object tier (only when
    the journal has one): once the sealed local segments exceed
    ``local_retention_bytes``, or a segment's newest record is older than
    ``local_retention_ms``. ``memory_bytes`` is the budget of the stream's
    newest batches kept in memory for tail readers.
    """

    segment_bytes: int = 128 << 20
    segment_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int | None = None
    retention_ms: int | None = None
    index_interval_bytes: int = 4096
    max_batch_bytes: int = 8 << 20
    fsync: FsyncPolicy | None = None
    fsync_interval_ms: int | None = None
    local_retention_bytes: int | None = 1 << 30
    local_retention_ms: int | None = 24 * 3600 * 1000
    memory_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        positive = ("segment_bytes", "segment_ms", "index_interval_bytes", "max_batch_bytes")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("memory_bytes", self.memory_bytes, minimum=0)
        optional = ("retention_bytes", "retention_ms", "fsync_interval_ms")
        for name in (*optional, "local_retention_bytes", "local_retention_ms"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=0)
        if self.max_batch_bytes > MAX_BATCH_BYTES:
            raise InvalidConfigError(
                f"max_batch_bytes must be at most {MAX_BATCH_BYTES} (64 MiB), "
                f"not {self.max_batch_bytes}"
            )
        if self.segment_bytes > _MAX_SEGMENT_BYTES:
            raise InvalidConfigError(f"segment_bytes must be at most {_MAX_SEGMENT_BYTES}")
        if self.fsync is not None and self.fsync not in FSYNC_POLICIES:
            raise InvalidConfigError(f"fsync must be one of {FSYNC_POLICIES}, not {self.fsync!r}")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StreamConfig:
        fields: dict[str, Any] = json.loads(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise InvalidConfigError(f"unknown stream settings: {sorted(unknown)}")
        return cls(**fields)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidConfigError(f"{name} must be an integer >= {minimum}, not {value!r}")

"""The one async contract every storage tier implements (STYLE habit 8).

A tier is a flat store of immutable byte objects under string keys, read by
byte range. Memory, local disk and object storage implement it; a read cache is
a tier that wraps two others (:class:`~journal.tiering.cache.CachedTier`), not a
branch in the callers. Missing data is a typed result -- ``None`` -- never a
stray exception; a tier that cannot answer raises
:class:`~journal.errors.ObjectStoreError` (or another ``StorageError``).

Keys are ``/``-separated relative paths (``000001-orders/00000000000000000000-9f…``);
each tier maps them onto its own namespace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Literal

import trio

__all__ = ["Tier", "TierKind", "check_key"]

TierKind = Literal["memory", "local", "object"]


def check_key(key: str) -> str:
    """Refuse keys that could escape a tier's namespace; every tier calls this."""
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"invalid key {key!r}")
    return key


class Tier(ABC):
    """Immutable byte objects under keys, read by range."""

    kind: ClassVar[TierKind]

    @abstractmethod
    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes ``start:end`` of the object (shorter at its end), or None if there is none."""

    @abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any object there."""

    async def put_file(self, key: str, path: Path) -> None:
        """Store a local file's contents (tiers that can stream it override this)."""
        await self.put(key, await trio.to_thread.run_sync(path.read_bytes))

    @abstractmethod
    async def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if there is none."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""

    @abstractmethod
    async def keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted."""

    async def aclose(self) -> None:  # noqa: B027 - most tiers hold nothing to close
        """Release what the tier holds."""

"""The local-disk tier: objects as files under a directory, optionally byte-budgeted.

The journal's own sealed segments stay in their stream directories (the write
path owns those files); this tier is for what the journal keeps *beside* them,
chiefly the bounded on-disk cache of object-tier byte ranges. With a budget it
evicts the least recently used files; the directory is emptied on open, since
a cache is not trusted across restarts.

Writes go to a temporary name and are renamed into place, so a reader never
sees half an object. File I/O runs in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections import OrderedDict
from pathlib import Path

import trio

from journal.tiering.base import Tier, check_key

__all__ = ["LocalTier"]


class LocalTier(Tier):
    kind = "local"

    def __init__(self, root: Path, budget_bytes: int | None = None) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()  # LRU order, for the budget
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        path = self._path(key)
        data = await trio.to_thread.run_sync(_read_range, path, start, end)
        if data is not None and key in self._sizes:
            self._sizes.move_to_end(key)
        return data

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self.budget_bytes is not None and len(data) > self.budget_bytes:
            return
        await trio.to_thread.run_sync(_write_atomic, path, data)
        self.used_bytes += len(data) - self._sizes.pop(key, 0)
        self._sizes[key] = len(data)
        while self.budget_bytes is not None and self.used_bytes > self.budget_bytes:
            old, size = self._sizes.popitem(last=False)
            self.used_bytes -= size
            self._path(old).unlink(missing_ok=True)

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        await trio.lowlevel.checkpoint()
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None  # a prefix is not an object

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await trio.lowlevel.checkpoint()
        with contextlib.suppress(IsADirectoryError):  # a key prefix: nothing to delete
            path.unlink(missing_ok=True)
        self.used_bytes -= self._sizes.pop(key, 0)

    async def keys(self, prefix: str = "") -> list[str]:
        def walk() -> list[str]:
            found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*"))
            return sorted(k for k in found if k.startswith(prefix) and ".tmp-" not in k)

        keys = await trio.to_thread.run_sync(walk)
        return [k for k in keys if (self.root / k).is_file()]


def _read_range(path: Path, start: int, end: int | None) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None  # a key prefix (directory) is not an object
        size = st.st_size
        stop = size if end is None else min(end, size)
        return os.pread(fd, max(0, stop - start), start) if stop > start else b""
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    tmp.replace(path)

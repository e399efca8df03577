"""The object tier: objects under an fsspec URL (``s3://bucket/prefix``, ``file://``, ``memory://``).

fsspec's filesystems are blocking (s3fs runs its own asyncio loop in a thread
and blocks the caller), so every call goes to a trio worker thread, at most
``concurrency`` at a time, under ``trio.fail_after(timeout)``. A call that
times out is abandoned (its thread finishes on its own) and raises
:class:`~journal.errors.ObjectStoreTimeoutError`: its request may still reach
the store later. Any other failure raises
:class:`~journal.errors.ObjectStoreError`; a missing object is ``None``, as
the tier contract says.

For S3, botocore's own connect/read timeouts and retries are set from
``timeout`` unless ``options`` gives ``config_kwargs``, so abandoned threads do
not linger for botocore's default minute.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import trio

from journal.errors import ObjectStoreError, ObjectStoreTimeoutError
from journal.tiering.base import Tier, check_key

__all__ = ["ObjectTier"]

log = logging.getLogger("journal.tiering")

T = TypeVar("T")


class ObjectTier(Tier):
    kind = "object"

    def __init__(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        *,
        concurrency: int = 8,
        timeout: float = 30.0,
    ) -> None:
        options = dict(options or {})
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        if protocol == "file":
            options.setdefault("auto_mkdir", True)
        if protocol in ("s3", "s3a"):
            options.setdefault(
                "config_kwargs",
                {
                    "connect_timeout": timeout,
                    "read_timeout": timeout,
                    "retries": {"max_attempts": 2, "mode": "standard"},
                },
            )
        try:
            self.fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
        except (ImportError, ValueError, TypeError) as exc:
            raise ObjectStoreError(f"cannot use object store {url!r}: {exc}") from exc
        if protocol in ("s3", "s3a"):
            self.fs.retries = 1  # s3fs's own retries (5) would outlive our timeout
        self.url = url
        self.root = root.rstrip("/")
        self.timeout = timeout
        self._limiter = trio.CapacityLimiter(concurrency)
        if protocol == "file":
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a blocking fsspec call in a worker thread, bounded in count and time."""
        try:
            with trio.fail_after(self.timeout):
                return await trio.to_thread.run_sync(
                    fn, limiter=self._limiter, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            raise ObjectStoreTimeoutError(
                f"object store timed out after {self.timeout:g} s ({what} in {self.url})"
            ) from None
        except (FileNotFoundError, IsADirectoryError):
            raise
        except Exception as exc:  # fsspec backends raise anything from OSError to botocore's
            raise ObjectStoreError(f"object store failed ({what} in {self.url}): {exc}") from exc

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        path = self._path(key)
        if end is not None and end <= start:
            return b"" if await self.size(key) is not None else None
        try:
            data = await self._call(
                f"get {key}", partial(self.fs.cat_file, path, start=start, end=end)
            )
        except (FileNotFoundError, IsADirectoryError):
            return None
        except ObjectStoreError:
            # S3 answers a range at or past the end (or any range of an empty
            # object) with 416; the contract says: fewer bytes, here none.
            size = await self.size(key)
            if size is not None and start >= size:
                return b""
            raise
        return bytes(data)

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        await self._call(f"put {key}", partial(self.fs.pipe_file, path, bytes(data)))

    async def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        await self._call(f"upload {key}", partial(self.fs.put_file, str(path), target))

    async def size(self, key: str) -> int | None:
        path = self._path(key)

        def info() -> int | None:
            self.fs.invalidate_cache(path)
            try:
                info = self.fs.info(path)
            except FileNotFoundError:
                return None
            return int(info["size"]) if info.get("type") == "file" else None

        return await self._call(f"stat {key}", info)

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                self.fs.rm_file(path)

        await self._call(f"delete {key}", remove)

    async def keys(self, prefix: str = "") -> list[str]:
        def find() -> list[str]:
            self.fs.invalidate_cache()
            try:
                found = self.fs.find(self.root)
            except FileNotFoundError:
                return []
            start = len(self.root.lstrip("/")) + 1
            keys = (p.lstrip("/")[start:] for p in found)
            return sorted(k for k in keys if k.startswith(prefix))

        return await self._call(f"list {prefix or '/'}", find)

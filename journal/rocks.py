"""Opening and scanning a RocksDB database the way every StrataMQ store does.

Raw mode (keys and values are bytes), created if missing, and one process at
a time: RocksDB's lock file makes a second opener fail, which is reported as
a :class:`~journal.errors.StorageError` naming the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict

from journal.errors import StorageError

__all__ = ["open_rocksdb", "scan_prefix"]


def open_rocksdb(path: str | Path, what: str) -> Rdict:
    """Open (creating if needed) the database at ``path``; ``what`` names it in errors."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    try:
        return Rdict(str(path), options)
    except Exception as exc:  # rocksdict raises a plain Exception
        raise StorageError(
            f"cannot open {what} at {path} (is another process using it?): {exc}"
        ) from exc


def scan_prefix(db: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs whose key starts with ``prefix``, in key order."""
    for key, value in db.items(from_key=prefix):
        if not (isinstance(key, bytes) and key.startswith(prefix)):
            return
        yield key, bytes(value)  # raw mode: always bytes

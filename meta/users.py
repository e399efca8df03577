"""Users and their passwords, stored as scrypt hashes in RocksDB.

One key per user, ``user/<name>``, whose value is a small JSON document::

    {"kdf": "scrypt", "n": 16384, "r": 8, "p": 1,
     "salt": "<base64, 16 bytes>", "hash": "<base64, 32 bytes>", "created_ms": ...}

The scrypt parameters travel with each hash, so the defaults can be raised
later without invalidating stored passwords (a hash is checked with the
parameters it was made with). The password itself is never stored.

:meth:`UserStore.verify` compares with :func:`hmac.compare_digest`, and an
unknown user costs one scrypt run against a dummy salt too, so the time taken
does not tell whether a name exists. Writes are synced: user changes are rare
and must survive a crash.

scrypt is deliberately slow (about 50 ms, 16 MiB of memory per hash), so code
running on trio must not call :meth:`~UserStore.add`,
:meth:`~UserStore.set_password` or :meth:`~UserStore.verify` directly: use
the ``*_async`` twins, which run them in a worker thread, at most
``hash_concurrency`` at a time (a flood of login attempts queues instead of
exhausting memory). The store may be used from several threads at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import trio
from rocksdict import Rdict, WriteOptions

from journal.rocks import open_rocksdb, scan_prefix
from meta.errors import (
    InvalidPasswordError,
    InvalidUserNameError,
    UnknownUserError,
    UserError,
    UserExistsError,
)

__all__ = [
    "DEFAULT_SCRYPT",
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ScryptParams",
    "UserInfo",
    "UserStore",
    "check_name",
    "check_password",
]

MAX_NAME_LENGTH = 64
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_PREFIX = b"user/"
_MAXMEM = 256 << 20  # bytes scrypt may use; n=2**14, r=8 needs 16 MiB


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters for new hashes (stored hashes keep their own)."""

    n: int = 1 << 14
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    key_bytes: int = 32

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"scrypt n must be a power of 2 greater than 1, not {self.n}")
        if self.r < 1 or self.p < 1 or self.salt_bytes < 16 or self.key_bytes < 16:
            raise ValueError("scrypt needs r >= 1, p >= 1, salt and key of at least 16 bytes")
        if 128 * self.n * self.r * self.p > _MAXMEM:
            raise ValueError(f"scrypt parameters need more than {_MAXMEM >> 20} MiB")


DEFAULT_SCRYPT = ScryptParams()
"""n=2**14, r=8, p=1, 16-byte salt, 32-byte key: about 50 ms per hash."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What may be shown about a user: never the hash."""

    name: str
    created_ms: int


def check_name(name: object) -> str:
    """``name`` if it is a valid user name, else :class:`InvalidUserNameError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidUserNameError(
            f"a user name is 1 to {MAX_NAME_LENGTH} characters from A-Z, a-z, 0-9 and . _ @ -"
            f", not {name!r}"
        )
    return name


def check_password(password: object) -> bytes:
    """The UTF-8 bytes of a valid password, else :class:`InvalidPasswordError`."""
    if not isinstance(password, str):
        raise InvalidPasswordError("a password must be a string")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidPasswordError(
            f"a password is {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long,"
            f" not {len(password)}"
        )
    try:
        return password.encode()
    except UnicodeEncodeError:
        raise InvalidPasswordError("a password must be valid Unicode text") from None


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, key_bytes: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=key_bytes)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class UserStore:
    """Users and scrypt password hashes in a RocksDB database; see the module docstring.

    Open with :meth:`UserStore.open` (also a context manager that closes it).
    """

    def __init__(
        self,
        db: Rdict,
        *,
        params: ScryptParams,
        clock: Callable[[], int],
        hash_concurrency: int,
    ) -> None:
        self._db = db
        self._params = params
        self._clock = clock
        self._sync = WriteOptions()
        self._sync.sync = True
        self._lock = threading.Lock()  # check-then-write in add/set_password/delete
        self._count = sum(1 for _ in self._scan())
        self._generation = 0
        self._dummy_salt = secrets.token_bytes(params.salt_bytes)
        self._limiter = trio.CapacityLimiter(hash_concurrency)
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        params: ScryptParams = DEFAULT_SCRYPT,
        clock: Callable[[], int] = _wall_clock_ms,
        hash_concurrency: int = 2,
    ) -> UserStore:
        """Open (creating if needed) the store in directory ``path``.

        ``params`` are the scrypt costs of new hashes (lower them only in
        tests); ``clock`` gives ``created_ms``; ``hash_concurrency`` bounds the
        worker threads the ``*_async`` methods use at once.
        """
        db = open_rocksdb(path, "the user store")
        return cls(db, params=params, clock=clock, hash_concurrency=hash_concurrency)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def empty(self) -> bool:
        """True while no user exists (a fresh install)."""
        return self._count == 0

    @property
    def generation(self) -> int:
        """Goes up with every change, so callers can tell a cached answer went stale."""
        return self._generation

    def list(self) -> list[UserInfo]:
        """Every user, by name."""
        return [_info(key[len(_PREFIX) :].decode(), doc) for key, doc in self._scan()]

    def get(self, name: str) -> UserInfo:
        """The user called ``name``; :class:`UnknownUserError` if there is none."""
        doc = self._load(name)
        if doc is None:
            raise UnknownUserError(f"no user named {name!r}")
        return _info(name, doc)

    def __contains__(self, name: object) -> bool:
        return (
            isinstance(name, str) and bool(_NAME.fullmatch(name)) and self._load(name) is not None
        )

    # -- changes (slow: scrypt) ---------------------------------------------------------

    def add(self, name: str, password: str) -> UserInfo:
        """Create a user; :class:`UserExistsError` if the name is taken."""
        check_name(name)
        doc = self._hash(check_password(password))
        doc["created_ms"] = self._clock()
        with self._lock:
            if self._load(name) is not None:
                raise UserExistsError(f"user {name!r} already exists")
            self._db.put(_key(name), json.dumps(doc).encode(), self._sync)
            self._count += 1
            self._generation += 1
        return _info(name, doc)

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password; :class:`UnknownUserError` if there is no such user."""
        check_name(name)
        doc = self._hash(check_password(password))
        with self._lock:
            old = self._load(name)
            if old is None:
                raise UnknownUserError(f"no user named {name!r}")
            doc["created_ms"] = old["created_ms"]
            self._db.put(_key(name), json.dumps(doc).encode(), self._sync)
            self._generation += 1

    def delete(self, name: str) -> None:
        """Remove a user; :class:`UnknownUserError` if there is no such user."""
        check_name(name)
        with self._lock:
            if self._load(name) is None:
                raise UnknownUserError(f"no user named {name!r}")
            self._db.delete(_key(name), self._sync)
            self._count -= 1
            self._generation += 1

    def verify(self, name: str, password: str) -> bool:
        """True only if ``name`` exists and ``password`` is its password.

        Takes about one scrypt run whether or not the user exists.
        """
        try:
            secret = check_password(password)
        except InvalidPasswordError:
            return False  # no valid password matches; the length is not a secret
        doc = None
        if isinstance(name, str) and _NAME.fullmatch(name):
            doc = self._load(name)
        if doc is None:
            cost = self._params
            _scrypt(secret, self._dummy_salt, cost.n, cost.r, cost.p, cost.key_bytes)  # same time
            return False
        try:
            if doc["kdf"] != "scrypt":
                raise UserError(f"user {name!r} has a hash made with unknown kdf {doc['kdf']!r}")
            salt = base64.b64decode(doc["salt"], validate=True)
            expected = base64.b64decode(doc["hash"], validate=True)
            n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise UserError(f"the stored hash of user {name!r} is unreadable: {exc}") from exc
        actual = _scrypt(secret, salt, n, r, p, len(expected))
        return hmac.compare_digest(actual, expected)

    # -- the same, off the trio thread ------------------------------------------------

    async def add_async(self, name: str, password: str) -> UserInfo:
        """:meth:`add` in a worker thread."""
        return await trio.to_thread.run_sync(self.add, name, password, limiter=self._limiter)

    async def set_password_async(self, name: str, password: str) -> None:
        """:meth:`set_password` in a worker thread."""
        await trio.to_thread.run_sync(self.set_password, name, password, limiter=self._limiter)

    async def verify_async(self, name: str, password: str) -> bool:
        """:meth:`verify` in a worker thread."""
        return await trio.to_thread.run_sync(self.verify, name, password, limiter=self._limiter)

    async def delete_async(self, name: str) -> None:
        """:meth:`delete` (a synced write) in a worker thread."""
        await trio.to_thread.run_sync(self.delete, name, limiter=self._limiter)

    # -- storage ------------------------------------------------------------------------

    def _hash(self, secret: bytes) -> dict[str, Any]:
        p = self._params
        salt = secrets.token_bytes(p.salt_bytes)
        key = _scrypt(secret, salt, p.n, p.r, p.p, p.key_bytes)
        return {
            "kdf": "scrypt",
            "n": p.n,
            "r": p.r,
            "p": p.p,
            "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(key).decode(),
        }

    def _load(self, name: str) -> dict[str, Any] | None:
        raw = self._db.get(_key(name))
        if raw is None:
            return None
        return _decode(name, bytes(raw))

    def _scan(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        for key, value in scan_prefix(self._db, _PREFIX):
            yield key, _decode(key[len(_PREFIX) :].decode(errors="replace"), value)


def _key(name: str) -> bytes:
    return _PREFIX + name.encode()


def _decode(name: str, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"the stored record of user {name!r} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("created_ms"), int):
        raise UserError(f"the stored record of user {name!r} is malformed")
    return doc


def _info(name: str, doc: dict[str, Any]) -> UserInfo:
    return UserInfo(name=name, created_ms=doc["created_ms"])

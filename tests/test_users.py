"""The user store: scrypt hashes in RocksDB, validation, persistence, timing-safe checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from journal.errors import StrataError
from meta import (
    DEFAULT_SCRYPT,
    InvalidPasswordError,
    InvalidUserNameError,
    ScryptParams,
    UnknownUserError,
    UserExistsError,
    UserInfo,
    UserStore,
)

FAST = ScryptParams(n=1 << 4, r=1, p=1)  # the real cost is ~50 ms a hash; the format is the same


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStore]:
    with UserStore.open(tmp_path / "users", params=FAST, clock=lambda: 1234) as users:
        yield users


def raw_values(path: Path) -> dict[bytes, bytes]:
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        return {k: v for k, v in db.items() if isinstance(k, bytes) and isinstance(v, bytes)}
    finally:
        db.close()


def test_add_verify_list(store: UserStore) -> None:
    assert store.empty
    assert len(store) == 0
    assert store.add("alice", "password-a") == UserInfo("alice", 1234)
    store.add("bob@example.com", "password-b")
    assert not store.empty
    assert len(store) == 2
    assert store.list() == [UserInfo("alice", 1234), UserInfo("bob@example.com", 1234)]
    assert store.get("alice") == UserInfo("alice", 1234)
    assert "alice" in store
    assert "carol" not in store
    assert store.verify("alice", "password-a")
    assert store.verify("bob@example.com", "password-b")


def test_wrong_password_and_unknown_user(store: UserStore) -> None:
    store.add("alice", "password-a")
    assert not store.verify("alice", "password-b")
    assert not store.verify("alice", "password-a ")
    assert not store.verify("alice", "")
    assert not store.verify("carol", "password-a")
    assert not store.verify("not a valid name!", "password-a")


def test_set_password_and_delete(store: UserStore) -> None:
    store.add("alice", "password-a")
    generation = store.generation
    store.set_password("alice", "password-new")
    assert store.generation > generation
    assert not store.verify("alice", "password-a")
    assert store.verify("alice", "password-new")
    assert store.get("alice").created_ms == 1234
    store.delete("alice")
    assert store.empty
    assert not store.verify("alice", "password-new")
    with pytest.raises(UnknownUserError, match="no user named 'alice'"):
        store.delete("alice")
    with pytest.raises(UnknownUserError):
        store.set_password("alice", "password-x")
    with pytest.raises(UnknownUserError):
        store.get("alice")


def test_add_twice(store: UserStore) -> None:
    store.add("alice", "password-a")
    with pytest.raises(UserExistsError, match="already exists"):
        store.add("alice", "password-b")
    assert store.verify("alice", "password-a")
    assert len(store) == 1


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "with space", "slash/name", "colon:name", "ünïcode", "tab\t"]
)
def test_invalid_names(store: UserStore, name: str) -> None:
    with pytest.raises(InvalidUserNameError, match="1 to 64 characters") as info:
        store.add(name, "password-a")
    assert isinstance(info.value, StrataError)
    assert isinstance(info.value, ValueError)
    assert store.empty


def test_valid_name_edges(store: UserStore) -> None:
    for name in ("a", "A" * 64, "svc.kafka_01@example-host"):
        store.add(name, "password-a")
    assert len(store) == 3


@pytest.mark.parametrize("password", ["", "1234567", "x" * 1025])
def test_invalid_passwords(store: UserStore, password: str) -> None:
    with pytest.raises(InvalidPasswordError, match="8 to 1024 characters"):
        store.add("alice", password)
    store.add("alice", "password-a")
    with pytest.raises(InvalidPasswordError):
        store.set_password("alice", password)
    assert store.verify("alice", "password-a")


def test_password_edges(store: UserStore) -> None:
    store.add("short", "12345678")
    store.add("long", "ü" * 1024)
    assert store.verify("short", "12345678")
    assert store.verify("long", "ü" * 1024)


def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "users"
    with UserStore.open(path, params=FAST) as users:
        users.add("alice", "password-a")
        users.add("bob", "password-b")
        users.delete("bob")
    with UserStore.open(path) as users:  # default costs now: old hashes keep their own
        assert len(users) == 1
        assert [u.name for u in users.list()] == ["alice"]
        assert users.verify("alice", "password-a")
        assert not users.verify("bob", "password-b")


def test_stored_records_hold_no_password_and_differ_per_salt(tmp_path: Path) -> None:
    path = tmp_path / "users"
    with UserStore.open(path) as users:  # the real parameters
        users.add("alice", "same-password")
        users.add("bob", "same-password")
    values = raw_values(path)
    assert set(values) == {b"user/alice", b"user/bob"}
    docs = {key: json.loads(value) for key, value in values.items()}
    for raw in values.values():
        assert b"same-password" not in raw
    alice, bob = docs[b"user/alice"], docs[b"user/bob"]
    assert alice["salt"] != bob["salt"]
    assert alice["hash"] != bob["hash"]
    assert alice["kdf"] == "scrypt"
    assert (alice["n"], alice["r"], alice["p"]) == (DEFAULT_SCRYPT.n, 8, 1)
    assert (DEFAULT_SCRYPT.n, DEFAULT_SCRYPT.r, DEFAULT_SCRYPT.p) == (1 << 14, 8, 1)


def test_bad_params_refused() -> None:
    with pytest.raises(ValueError, match="power of 2"):
        ScryptParams(n=1000)
    with pytest.raises(ValueError, match="MiB"):
        ScryptParams(n=1 << 20, r=8)


async def test_async_twins(store: UserStore) -> None:
    assert await store.add_async("alice", "password-a") == UserInfo("alice", 1234)
    assert await store.verify_async("alice", "password-a")
    await store.set_password_async("alice", "password-b")
    assert not await store.verify_async("alice", "password-a")
    assert await store.verify_async("alice", "password-b")
    await store.delete_async("alice")
    assert store.empty


_passwords = st.text(min_size=8, max_size=40)


@settings(max_examples=40, deadline=None)
@given(password=_passwords, attempts=st.lists(_passwords, max_size=4))
def test_verify_accepts_only_the_password_set(
    tmp_path_factory: pytest.TempPathFactory, password: str, attempts: list[str]
) -> None:
    path = tmp_path_factory.mktemp("users")
    with UserStore.open(path, params=FAST) as users:
        users.add("alice", password)
        assert users.verify("alice", password)
        for attempt in attempts:
            assert users.verify("alice", attempt) == (attempt == password)
        assert not users.verify("bob", password)

"""Fixtures shared by the test modules: object stores to tier a journal onto.

* ``moto_endpoint`` -- one moto S3 server per test process (xdist worker),
  on a free port of 127.0.0.1, stopped at the end of the session;
* ``s3_store`` -- a fresh bucket on it per test, as an :class:`ObjectStore`
  (``s3://<bucket>/strata`` and its storage options);
* ``file_store`` -- a ``file://`` directory under ``tmp_path``;
* ``object_store`` -- each of the two in turn (parametrized ``file``, ``s3``).

* ``s3_proxy`` -- an :class:`~objectstores.S3Proxy` in front of moto, run in
  the test's nursery; ``s3_store.through(s3_proxy.endpoint)`` reaches the
  test's bucket through it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from objectstores import ObjectStore, S3Proxy, endpoint_port

from tools.s3local import create_bucket, s3_options, start_moto


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with start_moto() as server:
        yield server.endpoint


@pytest.fixture
def s3_store(moto_endpoint: str) -> ObjectStore:
    bucket = f"strata-{uuid.uuid4().hex[:16]}"
    create_bucket(moto_endpoint, bucket)
    return ObjectStore(url=f"s3://{bucket}/strata", options=s3_options(moto_endpoint))


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(url=f"file://{tmp_path}/objects", options={})


@pytest.fixture(params=["file", "s3"])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    store: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return store


@pytest.fixture
async def s3_proxy(moto_endpoint: str, nursery: trio.Nursery) -> S3Proxy:
    proxy: S3Proxy = await nursery.start(S3Proxy.serve, endpoint_port(moto_endpoint))
    return proxy

"""A local S3 for tests and benchmarks: moto's standalone server on 127.0.0.1.

:func:`start_moto` runs ``python -m moto.server -H 127.0.0.1 -p PORT`` as a
child process on a free port and returns once it answers HTTP; use it as a
context manager (``with start_moto() as server: ... server.endpoint``) or call
:meth:`MotoServer.stop`. :func:`s3_options` gives the fsspec storage options
for it (dummy credentials, region ``us-east-1``) and :func:`create_bucket`
makes a bucket there.

Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["MotoServer", "create_bucket", "free_port", "s3_options", "start_moto"]

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def s3_options(endpoint: str) -> dict[str, Any]:
    """fsspec/s3fs storage options for the S3 at ``endpoint`` (dummy credentials)."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


def create_bucket(endpoint: str, name: str) -> None:
    """Create bucket ``name`` on the S3 at ``endpoint``."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_options(endpoint))
    # fs.mkdir(bucket) sends a LocationConstraint moto refuses for us-east-1.
    fs.call_s3("create_bucket", Bucket=name)


class MotoServer:
    """A running ``moto.server`` child process; stops on :meth:`stop` or on leaving ``with``."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"http://{HOST}:{port}"
        self._log = log

    def stop(self) -> None:
        """Terminate the server and wait for it (killing it if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log_text(self) -> str:
        """What the server printed so far (for diagnosing a failed start)."""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


def start_moto(port: int | None = None, *, timeout: float = START_TIMEOUT) -> MotoServer:
    """Start moto's S3 server on 127.0.0.1 (a free port unless given) and wait until it answers."""
    port = free_port() if port is None else port
    log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=True)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = MotoServer(process, port, log)
    deadline = time.monotonic() + timeout
    try:
        while not _answers(server.endpoint):
            if process.poll() is not None:
                raise RuntimeError(
                    f"moto.server exited with {process.returncode}:\n{server.log_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto.server did not answer on {server.endpoint} within {timeout:g} s:\n"
                    f"{server.log_text()}"
                )
            time.sleep(0.05)  # polling a child process, with the deadline above
    except BaseException:
        with contextlib.suppress(Exception):
            server.stop()
        raise
    return server

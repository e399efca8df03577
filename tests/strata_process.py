"""A real ``strata start`` process for tests: free ports, a temp data dir, its output.

:class:`StrataProcess` starts ``python -m tools.strata.cli start`` with every
listener on port 0 (or a port the test chose), reads the process's output on
a thread, and learns each listener's address from the ``listening on`` lines.
Waiting is polling with a deadline on the output queue, never a bare sleep.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
_LISTENING = re.compile(r"^strata: (\w+) listening on (\S+)$")
_PORT_VARS = (
    "STRATA_JOURNAL_PORT",
    "STRATA_ADMIN_PORT",
    "STRATA_MQTT_PORT",
    "STRATA_MQTT_WS_PORT",
    "STRATA_MQTT_TLS_PORT",
    "STRATA_KAFKA_PORT",
    "STRATA_AMQP_PORT",
    "STRATA_META_PORT",
)


def strata_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a strata process or CLI: no inherited STRATA_*, every port 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env.update(dict.fromkeys(_PORT_VARS, "0"))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class StrataProcess:
    """``strata start`` in a subprocess; use as a context manager (killed on exit)."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        argv = command or [sys.executable, "-m", "tools.strata.cli", "start"]
        self.proc = subprocess.Popen(
            [*argv, "--data-dir", str(data_dir), *args] if command is None else list(argv),
            cwd=cwd or ROOT,
            env=strata_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.addresses: dict[str, str] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Wait for an output line matching ``pattern``; fail with the output so far."""
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.output())
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"exited ({self.proc.wait()}) before {pattern!r}; output:\n" + self.output()
                )
            self.lines.append(line)
            listening = _LISTENING.match(line)
            if listening:
                self.addresses[listening[1]] = listening[2]
            match = wanted.search(line)
            if match:
                return match

    def wait_ready(self) -> StrataProcess:
        self.expect(r"^strata \S+: ready")
        return self

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    @property
    def admin(self) -> str:
        return self.addresses["admin"]

    @property
    def journal_port(self) -> int:
        return int(self.addresses["journal_rpc"].rsplit(":", 1)[1])

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.admin, timeout=30.0, **kwargs)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Signal the whole process group, as Ctrl-C in a terminal does."""
        os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=START_TIMEOUT)

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        self.output()
        return code

    def __enter__(self) -> StrataProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=START_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m tools.strata.cli ARGS`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "tools.strata.cli", *args],
        cwd=ROOT,
        env=strata_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


def poll(check: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Call ``check()`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s: {what or check}")
        time.sleep(interval)

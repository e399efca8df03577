"""Small helpers shared by the benchmarks: machine description, percentiles, units."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.text import table

__all__ = [
    "MIB",
    "announce",
    "fmt",
    "json_rows",
    "machine_info",
    "mib_per_s",
    "percentile",
    "settle",
    "table",
]

MIB = 1 << 20


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank ``q``-quantile (0 < q <= 1) of already sorted values; nan if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def mib_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds if seconds > 0 else math.nan


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """The mount point, device and type holding ``path`` (from /proc/mounts)."""
    target = str(path.resolve())
    best: tuple[str, str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                device, mount, fstype = fields[0], fields[1], fields[2]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and (best is None or len(mount) >= len(best[1])):
                    best = (device, mount, fstype)
    except OSError:
        return "unknown"
    return "unknown" if best is None else f"{best[2]} on {best[0]} (mounted at {best[1]})"


def machine_info(directory: Path) -> dict[str, str | int]:
    """What the numbers depend on: CPUs, CPU model, Python, kernel, filesystem."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        nproc = os.cpu_count() or 0
    try:
        import trio

        trio_version = trio.__version__
    except ImportError:  # pragma: no cover - trio is a dependency
        trio_version = "absent"
    return {
        "nproc": nproc,
        "cpu_model": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "trio": trio_version,
        "kernel": f"{platform.system()} {platform.release()}",
        "filesystem": _filesystem(directory),
    }


def settle(directory: Path, prime_bytes: int = 0) -> None:
    """Get the machine to a steady state before a case (never inside a timed region).

    ``os.sync()`` flushes every dirty page, so a case does not pay for the
    writeback of the one before it. Then ``prime_bytes`` of page cache are
    touched and freed (a scratch file written and deleted, no fsync): on a
    virtual machine that hands freed guest memory back to its host, the first
    touch of that memory costs about ten times a warm one, which would
    otherwise make whichever case comes first after an idle moment look slow.
    """
    os.sync()
    if prime_bytes <= 0:
        return
    path = directory / "prime.tmp"
    chunk = bytes(MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        for _ in range(-(-prime_bytes // MIB)):
            os.write(fd, chunk)
    finally:
        os.close(fd)
        path.unlink()


def fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def json_rows(items: Sequence[Any], *derived: str) -> list[dict[str, Any]]:
    """Dataclass rows as dicts for ``--json``, with the named derived properties added."""
    out = []
    for item in items:
        d = asdict(item)
        d.update({name: getattr(item, name) for name in derived})
        out.append(d)
    return out


def announce(title: str, machine: dict[str, Any], root: Path) -> None:
    """The one line on stderr that says what runs where, before a benchmark starts."""
    print(
        f"{title}: nproc {machine['nproc']}, CPU {machine['cpu_model']}, "
        f"{machine['python']}; writing under {root}",
        file=sys.stderr,
        flush=True,
    )


def bench_root(directory: Path | None, prefix: str) -> Path:
    """A fresh directory for one run under ``directory`` (default: the working one)."""
    base = Path.cwd() if directory is None else directory
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def publish_report(text: str, data: dict[str, Any], json_path: Path | None) -> None:
    """Print the report and, if asked, write its JSON form."""
    print(text)
    if json_path is not None:
        json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")

"""Time and size arguments: ``--since``/``--until`` and the vacuum limits.

A time is an ISO 8601 timestamp (``2026-11-27``, ``2026-11-27T10:00:00``,
``...Z`` or ``+02:00``; naive times are UTC), a relative form (``-1h``,
``-30m``, ``+10s``, ``-2d``, ``-1w``), ``now``, ``today`` or ``yesterday``
(midnight UTC), or an integer of milliseconds since the epoch. Everything is
returned as milliseconds since the epoch. Pure: the caller passes ``now_ms``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["TimeSpecError", "parse_age", "parse_size", "parse_time"]

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RELATIVE = re.compile(r"^([+-])?\s*(\d+)\s*(ms|s|m|h|d|w)$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^(\d+)\s*([kmgt]?)(i?b)?$")


class TimeSpecError(ValueError):
    """A time, age or size argument that does not parse."""


def parse_time(text: str, now_ms: int) -> int:
    """``text`` as milliseconds since the epoch (see the module docstring)."""
    spec = text.strip().lower()
    if spec == "now":
        return now_ms
    if spec in ("today", "yesterday"):
        day = datetime.fromtimestamp(now_ms / 1000, UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        if spec == "yesterday":
            day -= timedelta(days=1)
        return int(day.timestamp() * 1000)
    if spec.isdigit():
        return int(spec)
    match = _RELATIVE.match(spec)
    if match is not None:
        sign, amount, unit = match.groups()
        delta = int(amount) * _UNITS_MS[unit]
        return now_ms + delta if sign == "+" else now_ms - delta
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TimeSpecError(
            f"cannot parse time {text!r}: use ISO 8601 (2026-11-27T10:00:00Z), "
            "-1h/-30m/-2d, now, today, yesterday or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_age(text: str) -> int:
    """An age like ``7d``, ``12h``, ``30m``, ``10s`` or ``500ms`` as milliseconds."""
    match = _RELATIVE.match(text.strip().lower())
    if match is None or match.group(1) is not None:
        raise TimeSpecError(f"cannot parse age {text!r}: use e.g. 7d, 12h, 30m, 10s, 500ms")
    return int(match.group(2)) * _UNITS_MS[match.group(3)]


def parse_size(text: str) -> int:
    """A size like ``1G``, ``512M``, ``64KiB`` or ``1000`` (bytes) as bytes (units of 1024)."""
    match = _SIZE.match(text.strip().lower())
    if match is None:
        raise TimeSpecError(f"cannot parse size {text!r}: use e.g. 1G, 512M, 64K or bytes")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]

"""Plain-text output the command-line tools share: sizes and aligned tables."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["human_size", "table"]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> list[str]:
    """Text table lines: columns are (title, width), a negative width aligns left."""

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + " ".join(
                f"{cell:<{-w}}" if w < 0 else f"{cell:>{w}}"
                for cell, (_, w) in zip(cells, columns, strict=True)
            ).rstrip()
        )

    header = line([title for title, _ in columns])
    return [header, "  " + "-" * (len(header) - 2), *(line(row) for row in rows)]

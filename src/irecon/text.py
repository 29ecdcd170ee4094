"""How irecon words counts and sizes for people: one home, so every command says them alike."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 volume``, ``2 volumes``, ``1,024 slices``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def human_bytes(value: int) -> str:
    """Bytes in the largest binary unit that keeps a leading digit: 1.5 GiB, 320.0 MiB, 12.0 KiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value:,} B"


def shorten(text: str, limit: int, ellipsis: str = "...") -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in ``ellipsis`` when cut."""
    if len(text) <= limit:
        return text
    room = limit - len(ellipsis)
    cut = text[: room + 1].rsplit(" ", 1)[0].rstrip(" ;,") if " " in text[: room + 1] else text[:room]
    return cut[:room] + ellipsis

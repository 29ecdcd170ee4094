"""How irecon words counts for people: one home, so every command says "1 volume" and "2 volumes"."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 volume``, ``2 volumes``, ``1,024 slices``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"

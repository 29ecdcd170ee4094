"""How irecon speaks to people: counts, sizes, plain lines and progress bars, alike in every command."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from irecon.errors import spell_options


def plural(count: int, noun: str) -> str:
    """``1 volume``, ``2 volumes``, ``1,024 slices``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def human_bytes(value: int) -> str:
    """Bytes in the largest binary unit that keeps a leading digit: 1.5 GiB, 320.0 MiB, 12.0 KiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value:,} B"


def say(console: Console | None, *lines: str) -> None:
    """Print whole lines verbatim (no rich markup, so ``[best]`` is text; no highlighting, no hard wrapping).

    Option markers (:func:`irecon.errors.option`) are spelled as flags.
    """
    if console is not None:
        for line in lines:
            console.print(spell_options(line), markup=False, highlight=False, emoji=False, soft_wrap=True)


def progress_bar(
    console: Console | None, label: str, *extra: ProgressColumn, visible: bool = True, transient: bool = False
) -> Progress:
    """A rich bar: label, bar, done/total, the ``extra`` columns, elapsed (and remaining when transient).

    Shown only on a terminal and when ``visible`` (rank 0 under torchrun); off-terminal the commands
    print plain progress lines instead.
    """
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn(), *extra, TimeElapsedColumn()]
    if transient:
        columns.append(TimeRemainingColumn())
    shown = console is not None and console.is_terminal and visible
    return Progress(*columns, console=console, transient=transient, disable=not shown)


def shorten(text: str, limit: int, ellipsis: str = "...") -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in ``ellipsis`` when cut."""
    if len(text) <= limit:
        return text
    room = limit - len(ellipsis)
    cut = text[: room + 1].rsplit(" ", 1)[0].rstrip(" ;,") if " " in text[: room + 1] else text[:room]
    return cut[:room] + ellipsis

"""What every command shares: defaults read from the options dataclasses, list options, --device, consoles."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

PIPE_WIDTH = 160  # table width when stdout is a pipe or a file, so logs keep every digit


def default_of(owner: Any, name: str) -> Any:
    """The default of field ``name`` of a dataclass, or of parameter ``name`` of a function.

    Click options read their defaults from here, so each default is written once, in the library.
    """
    if dataclasses.is_dataclass(owner):
        for field in dataclasses.fields(owner):
            if field.name == name:
                if field.default is not dataclasses.MISSING:
                    return field.default
                if field.default_factory is not dataclasses.MISSING:
                    return field.default_factory()
                raise KeyError(f"{owner.__name__}.{name} has no default")
        raise KeyError(f"{owner.__name__} has no field {name}")
    parameter = inspect.signature(owner).parameters[name]
    if parameter.default is inspect.Parameter.empty:
        raise KeyError(f"{owner.__name__}({name}) has no default")
    return parameter.default


class ListCommand(click.Command):
    """Every repeatable option also takes a list: ``--steps 1 2 4`` means ``--steps 1 --steps 2 --steps 4``.

    Values are taken after such an option while they look like numbers; the first other word ends the list.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        repeatable = {name for p in self.params if isinstance(p, click.Option) and p.multiple for name in p.opts}
        expanded: list[str] = []
        current: str | None = None
        taken = 0
        for arg in args:
            if arg in repeatable:
                if current is not None and taken == 0:
                    expanded.append(current)
                current, taken = arg, 0
            elif current is not None and _is_number(arg):
                expanded += [current, arg]
                taken += 1
            else:
                if current is not None and taken == 0:
                    expanded.append(current)  # an option without a value: click reports it
                current = None
                expanded.append(arg)
        if current is not None and taken == 0:
            expanded.append(current)
        return super().parse_args(ctx, expanded)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def device_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--device``: cpu, cuda or cuda:N; default cuda when available."""
    return click.option(
        "--device",
        default=None,
        metavar="DEVICE",
        help="cpu, cuda or cuda:N  [default: cuda if available, else cpu]",
    )(fn)


def threads_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N``: torch's CPU threads (the options dataclass's default, None, keeps torch's)."""
    return click.option(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch. On a busy or shared machine torch's default (one per core) can be "
        "many times slower than 1 or 2.  [default: torch's]",
    )(fn)


def stdout_console() -> Console:
    """A rich console on stdout; wide enough for the tables when the output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


def stderr_console() -> Console:
    """A rich console on stderr, for notes and progress."""
    return Console(stderr=True)


def exit_with(code: int) -> None:
    """End the command with ``code`` (0 returns normally)."""
    if code:
        click.get_current_context().exit(code)

"""The irecon command line: parses options and calls one library function per command."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from irecon import __version__
from irecon.errors import IreconError


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an IreconError into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IreconError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="irecon")
def main() -> None:
    """Reconstruct undersampled MRI with memory-free invertible RIMs (i-RIM)."""


if __name__ == "__main__":
    main()

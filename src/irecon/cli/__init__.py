"""The irecon command line: the only package that imports click.

``main`` is one group; every command body builds its options dataclass, calls one library
function and renders the result. An :class:`IreconError` from anywhere becomes one line
``error: <path>: <problem>`` on stderr and exit status 1, here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import click

from irecon import __version__
from irecon.errors import IreconError


class IreconGroup(click.Group):
    """A group that turns irecon's user errors into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IreconError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=IreconGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="irecon")
def main() -> None:
    """Reconstruct undersampled MRI with memory-free invertible RIMs (i-RIM)."""


def _register() -> None:
    from irecon.cli import bench, data, reconstruct, train

    for module in (data, train, reconstruct, bench):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

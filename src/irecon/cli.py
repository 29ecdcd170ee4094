"""The irecon command line: parses options and calls one library function per command."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

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



@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--challenge", type=click.Choice(["singlecoil", "multicoil"]), default="singlecoil", show_default=True)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="train/val: full k-space + target; test: undersampled k-space + mask, no target")
@click.option("--volumes", type=int, default=4, show_default=True)
@click.option("--slices", type=int, default=8, show_default=True)
@click.option("--coils", type=int, default=4, show_default=True, help="multi-coil only")
@click.option("--kspace-size", type=(int, int), default=(640, 368), show_default=True, metavar="H W")
@click.option("--recon-size", type=(int, int), default=(320, 320), show_default=True, metavar="H W")
@click.option("--acceleration", type=int, default=4, show_default=True, help="test split only")
@click.option("--center-fraction", type=float, default=0.08, show_default=True, help="test split only")
@click.option("--mask-type", default="random", show_default=True, help="test split only")
@click.option("--noise", type=float, default=0.02, show_default=True, help="k-space noise, relative to its RMS")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace existing files")
@user_errors
def synth(out_dir: str, **options: Any) -> None:
    """Write realistic synthetic fastMRI-format volumes into OUT_DIR."""
    from irecon.data.synth import synthesize

    paths = synthesize(out_dir, **options)
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo(f"{len(paths)} {options['challenge']} {options['split']} volume(s) in {out_dir}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--no-values", is_flag=True, help="skip the NaN/Inf scan (which reads every file whole)")
@user_errors
def check(paths: tuple[str, ...], no_values: bool) -> None:
    """Validate fastMRI files and folders; exit 0 only when every volume is valid."""
    from irecon.check import check_paths, summary_table

    result = check_paths(paths, check_values=not no_values)
    for note in result.notes:
        click.echo(f"note: {note}")
    for problem in result.problems:
        click.echo(f"error: {problem}", err=True)
    if result.files:
        Console().print(summary_table(result))
    click.echo(f"{len(result.files)} valid volume(s), {len(result.problems)} problem(s)")
    sys.exit(0 if result.ok else 1)


@main.command()
def models() -> None:
    """List the model presets: kind, dimensionality, steps, layers per step, parameters (docs/presets.md has their sources)."""
    from irecon.models.presets import PRESETS, count_parameters

    table = Table(title="irecon model presets")
    for column in ("preset", "kind", "dims", "steps", "layers", "parameters"):
        table.add_column(column, justify="right" if column in ("steps", "layers", "parameters") else "left")
    for name, (config, _) in PRESETS.items():
        irim = config.kind == "irim"
        table.add_row(
            name, config.kind, f"{config.dims}D",
            str(config.steps) if config.kind in ("irim", "rim") else "-",
            str(config.layers) if irim else "-",
            f"{count_parameters(config):,}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()

"""Data commands: ``irecon synth``, ``irecon check`` and ``irecon models``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from irecon.cli.options import default_of, exit_with, stdout_console
from irecon.data.masks import MASK_TYPES
from irecon.text import plural


def _synth_default(name: str) -> Any:
    from irecon.data.synth import synthesize

    return default_of(synthesize, name)


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--challenge",
    type=click.Choice(["singlecoil", "multicoil"]),
    default=_synth_default("challenge"),
    show_default=True,
    help="fastMRI challenge: k-space of one coil or of several",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default=_synth_default("split"),
    show_default=True,
    help="train/val: full k-space + target; test: undersampled k-space + mask, no target",
)
@click.option("--volumes", type=int, default=_synth_default("volumes"), show_default=True, help="files to write")
@click.option("--slices", type=int, default=_synth_default("slices"), show_default=True, help="slices per volume")
@click.option("--coils", type=int, default=_synth_default("coils"), show_default=True, help="multi-coil only")
@click.option(
    "--kspace-size",
    type=(int, int),
    default=_synth_default("kspace_size"),
    show_default=True,
    metavar="H W",
    help="k-space rows and columns",
)
@click.option(
    "--recon-size",
    type=(int, int),
    default=_synth_default("recon_size"),
    show_default=True,
    metavar="H W",
    help="target image size (the header's recon size)",
)
@click.option(
    "--acceleration", type=int, default=_synth_default("acceleration"), show_default=True, help="test split only"
)
@click.option(
    "--center-fraction",
    type=float,
    default=_synth_default("center_fraction"),
    show_default=True,
    help="test split only",
)
@click.option(
    "--mask-type",
    type=click.Choice(MASK_TYPES),
    default=_synth_default("mask_type"),
    show_default=True,
    help="test split only",
)
@click.option(
    "--noise", type=float, default=_synth_default("noise"), show_default=True, help="k-space noise, relative to its RMS"
)
@click.option("--seed", type=int, default=_synth_default("seed"), show_default=True, help="random seed of the phantoms")
@click.option("--overwrite", is_flag=True, help="replace existing files")
def synth(out_dir: str, **options: Any) -> None:
    """Write realistic synthetic fastMRI-format volumes into OUT_DIR."""
    from irecon.data.synth import synthesize

    paths = synthesize(out_dir, **options)
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo(f"{plural(len(paths), options['challenge'] + ' ' + options['split'] + ' volume')} in {out_dir}")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--no-values", is_flag=True, help="skip the NaN/Inf scan (which reads every file whole)")
def check(paths: tuple[str, ...], no_values: bool) -> None:
    """Validate fastMRI files and folders; exit 0 only when every volume is valid."""
    from irecon.data.check import check_paths

    result = check_paths(paths, check_values=not no_values)
    for note in result.notes:
        click.echo(f"note: {note}")
    for problem in result.problems:
        click.echo(f"error: {problem}", err=True)
    if result.files:
        stdout_console().print(check_table(result))
    click.echo(f"{plural(len(result.files), 'valid volume')}, {plural(len(result.problems), 'problem')}")
    exit_with(0 if result.ok else 1)


def check_table(result: Any) -> Table:
    """One row per valid volume of a :class:`irecon.data.check.CheckResult`.

    The file column never shrinks (the other columns wrap first); files that share a name are
    shown with their folder.
    """
    names = [info.path.name for info in result.files]
    shown = [str(info.path) if names.count(info.path.name) > 1 else name for info, name in zip(result.files, names)]
    table = Table(title=f"{plural(len(result.files), 'valid volume')}")
    table.add_column("file", no_wrap=True, min_width=min(max(map(len, shown), default=4), 100))
    for column in ("challenge", "slices", "k-space", "coils", "target", "mask", "acquisition"):
        table.add_column(column, justify="right" if column in ("slices", "coils") else "left", overflow="fold")
    for info, name in zip(result.files, shown):
        target = "-"
        if info.target_key is not None and info.target_shape is not None:
            target = f"{info.target_key.removeprefix('reconstruction_')} {info.target_shape[0]}x{info.target_shape[1]}"
        mask = "-"
        if info.has_mask:
            acceleration = info.attrs.get("acceleration")
            mask = "yes" if acceleration is None else f"R={acceleration}"
        table.add_row(
            name,
            info.challenge.removesuffix("coil"),
            str(info.num_slices),
            f"{info.kspace_shape[0]}x{info.kspace_shape[1]}",
            str(info.num_coils),
            target,
            mask,
            str(info.attrs.get("acquisition", "-")),
        )
    return table


# What `irecon models` prints, written out so the command need not import torch to count parameters;
# tests/cli/test_data.py checks every row against irecon.models.presets (PRESETS, count_parameters).
PRESET_ROWS: dict[str, tuple[str, int, int | None, int | None, int]] = {
    # preset: (kind, dims, time steps, layers per step, parameters)
    "paper-2d": ("irim", 2, 8, 10, 6_309_568),
    "paper-3d": ("irim", 3, 8, 10, 11_728_576),
    "challenge-singlecoil": ("irim", 2, 8, 12, 275_247_552),
    "challenge-multicoil": ("irim", 2, 8, 12, 329_670_304),
    "rim": ("rim", 2, 8, None, 94_464),
    "unet": ("unet", 2, None, None, 7_756_097),
    "zero-filled": ("zero-filled", 2, None, None, 0),
    "tiny-2d": ("irim", 2, 4, 4, 77_456),
    "tiny-3d": ("irim", 3, 3, 3, 45_056),
    "tiny-rim": ("rim", 2, 4, None, 54_720),
    "tiny-unet": ("unet", 2, None, None, 67_669),
}


@click.command()
def models() -> None:
    """List the model presets (kind, dimensionality, steps, layers, parameters) and the bundled weights.

    docs/presets.md gives the source of each preset, docs/pretrained.md the bundled weights
    (irecon reconstruct takes them by default; bundled:NAME names one as a checkpoint).
    """
    from irecon.models.pretrained.registry import bundled_models

    table = Table(title="irecon model presets")
    for column in ("preset", "kind", "dims", "steps", "layers", "parameters"):
        table.add_column(column, justify="right" if column in ("steps", "layers", "parameters") else "left")
    for name, (kind, dims, steps, layers, parameters) in PRESET_ROWS.items():
        table.add_row(
            name,
            kind,
            f"{dims}D",
            "-" if steps is None else str(steps),
            "-" if layers is None else str(layers),
            f"{parameters:,}",
        )
    console = stdout_console()
    console.print(table)
    bundled = bundled_models()
    if not bundled:
        console.print("no bundled weights: make pretrained", markup=False, highlight=False)
        return
    console.print(bundled_table(bundled))


def bundled_table(bundled: list[Any]) -> Table:
    """One row per bundled model: name, preset, coils, training data and its 4x SSIM against zero-filled."""
    from irecon.models.pretrained.registry import four_x_ssim

    table = Table(title="bundled weights (bundled:NAME)")
    for column in ("name", "preset", "coils", "trained on", "4x SSIM (zero-filled)"):
        table.add_column(column, justify="right" if column.startswith("4x") else "left")
    for model in bundled:
        coils = "1" if model.coils == 1 else f"multi, {model.virtual_coils or model.coils} virtual"
        ssim = four_x_ssim(model)
        score = "-" if ssim is None else f"{ssim[0]:.4f} ({ssim[1]:.4f})"
        table.add_row(model.name, model.preset, coils, model.trained_on, score)
    return table

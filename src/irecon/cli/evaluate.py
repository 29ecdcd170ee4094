"""``irecon evaluate``: score a folder of reconstructions against fastMRI targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from irecon.cli.options import default_of, stdout_console
from irecon.evaluate.options import CHALLENGES, EvaluateOptions
from irecon.text import plural, say


@click.command()
@click.argument("predictions", type=click.Path(path_type=Path))
@click.argument("targets", type=click.Path(path_type=Path))
@click.option(
    "--challenge",
    type=click.Choice(CHALLENGES),
    default=default_of(EvaluateOptions, "challenge"),
    show_default=True,
    help="target dataset: singlecoil reconstruction_esc, multicoil reconstruction_rss, auto esc if present",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write scores and protocol here")
@click.option("--overwrite", is_flag=True, help="replace an existing --json file")
def evaluate_command(predictions: Path, targets: Path, json_path: Path | None, **params: Any) -> None:
    """Score the reconstructions in PREDICTIONS against the same-named files in TARGETS (fastMRI's metrics)."""
    from irecon.evaluate.run import evaluate

    result = evaluate(EvaluateOptions(predictions, targets, json=json_path, **params))
    console = stdout_console()
    console.print(scores_table(result))
    if result.ignored:
        say(console, f"{plural(len(result.ignored), 'prediction')} without a target not scored")
    if json_path is not None:
        say(console, f"wrote {json_path} (scores and protocol)")


def scores_table(result: Any) -> Table:
    """One row per group: acceleration, acquisition, volumes, mean ± sd of NMSE, PSNR and SSIM."""
    table = Table(title=f"{plural(len(result.volumes), 'volume')} scored with fastMRI's metrics (mean ± sd)")
    for name in ("acceleration", "acquisition", "volumes"):
        table.add_column(name)
    for name in ("NMSE", "PSNR (dB)", "SSIM"):
        table.add_column(name, justify="right")
    for group in result.groups:
        table.add_row(
            group.acceleration,
            group.acquisition,
            str(group.volumes),
            f"{group.mean.nmse:.4f} ± {group.sd.nmse:.4f}",
            f"{group.mean.psnr:.2f} ± {group.sd.psnr:.2f}",
            f"{group.mean.ssim:.4f} ± {group.sd.ssim:.4f}",
        )
    return table

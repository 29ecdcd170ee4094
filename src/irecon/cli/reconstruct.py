"""``irecon reconstruct`` and ``irecon export``: options from the dataclasses, the work from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from irecon.cli.options import default_of, device_option, exit_with, stderr_console, stdout_console
from irecon.data.masks import MASK_TYPES
from irecon.export.options import DATASETS, FORMATS, ExportOptions
from irecon.reconstruct.options import OUTPUT_FORMATS, ReconstructOptions


def _default(name: str) -> Any:
    return default_of(ReconstructOptions, name)


@click.command("reconstruct")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="CKPT",
              help="Trained model (from irecon train); carries its config.")
@click.option("--model", "model", default=_default("model"),
              help="Preset; only zero-filled runs without --checkpoint. With one it must match it.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), metavar="OUT_DIR",
              help="Folder for the reconstructions (created if missing).")
@click.option("--mask-type", type=click.Choice(MASK_TYPES), default=_default("mask_type"), show_default=True,
              help="Mask for files without their own mask (seeded by file name).")
@click.option("--acceleration", type=int, default=_default("acceleration"), show_default=True,
              help="Of the drawn mask.")
@click.option("--center-fraction", type=float, default=_default("center_fraction"), show_default=True,
              help="Fully sampled centre of the drawn mask.")
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True,
              help="Slices per forward pass of a 2-D model (3-D models take the whole volume).")
@device_option
@click.option("--overwrite", is_flag=True, help="Replace existing output, preview and JSON files.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Write per-volume records and the mean as JSON.")
@click.option("--preview", "preview_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Folder for one PNG per volume: the middle slice with metrics.")
@click.option("--format", "formats", multiple=True, type=click.Choice(OUTPUT_FORMATS),
              default=_default("formats"), show_default=True,
              help="Output formats, repeatable: h5 (fastMRI, scored by fastmri.evaluate), nifti (.nii.gz), "
                   "dicom (one MR series folder per volume).")
def reconstruct_command(inputs: tuple[Path, ...], **params: Any) -> None:
    """Reconstruct fastMRI volumes (files or folders of .h5) into OUT_DIR, one .h5 per input.

    Volumes with a target are scored (NMSE, PSNR, SSIM as fastmri.evaluate) against zero-filling
    under the same mask. A failed volume gets a one-line error and no output; the exit status is 1
    if any volume failed.
    """
    from irecon.reconstruct.run import reconstruct

    options = ReconstructOptions(inputs=inputs, **params)
    report = reconstruct(options, console=stderr_console())
    stdout_console().print(report_table(report))
    if options.json_path is not None:
        click.echo(f"wrote {options.json_path}")
    exit_with(report.exit_code)


@click.command("export")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RECON...")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              default=default_of(ExportOptions, "formats"), show_default=True,
              help="nifti (.nii.gz) and/or dicom (one MR series folder per volume); repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Folder for the exported files (created if missing).")
@click.option("--dataset", default=default_of(ExportOptions, "dataset"), show_default=True,
              type=click.Choice(DATASETS),
              help="Dataset to export; reconstruction_esc/_rss export an input file's target for side-by-side viewing.")
@click.option("--header-from", type=click.Path(path_type=Path), metavar="INPUT",
              help="fastMRI input file (or its folder) whose header gives the geometry, for files without one.")
@click.option("--overwrite", is_flag=True, help="Replace existing exports.")
def export_command(inputs: tuple[Path, ...], formats: tuple[str, ...], **params: Any) -> None:
    """Export reconstructions (or targets) already written to NIfTI and/or DICOM for viewers.

    Spacing comes from the fastMRI header; fastMRI headers carry no orientation, and every
    export says so. A failed volume gets a one-line error; the others are still written.
    """
    from irecon.export import export_reconstruction

    result = export_reconstruction(ExportOptions(inputs=inputs, formats=formats, **params))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for error in result.errors:
        click.echo(f"error: {error}", err=True)
    for path in result.written:
        click.echo(f"wrote {path}")
    exit_with(result.exit_code)


def report_table(report: Any) -> Table:
    """One row per reconstructed volume of a :class:`ReconstructReport` and the mean.

    Metric columns (model and zero-filled under the same mask) appear only when some volume has a
    target; volumes without one show dashes there.
    """
    with_metrics = bool(report.scored)
    table = Table(title=f"{report.model_name} on {report.device}", title_justify="left")
    table.add_column("volume", overflow="fold")
    table.add_column("slices", justify="right", no_wrap=True)
    if with_metrics:
        for label in ("NMSE", "PSNR", "SSIM", "zf NMSE", "zf PSNR", "zf SSIM"):
            table.add_column(label, justify="right", no_wrap=True, min_width=6)
    table.add_column("time (s)", justify="right", no_wrap=True)
    for result in report.succeeded:
        row = [result.input.name, str(result.slices)]
        if with_metrics:
            row += _score_cells(result.metrics) + _score_cells(result.zero_filled)
        table.add_row(*row, _fmt(result.seconds, ".3f"))
    if report.succeeded:
        mean = [f"mean ({len(report.scored)} scored)" if with_metrics else "mean", ""]
        if with_metrics:
            mean += _score_cells(report.mean_metrics()) + _score_cells(report.mean_zero_filled())
        table.add_section()
        table.add_row(*mean, _fmt(report.mean_seconds(), ".3f"), style="bold")
    if report.failed:
        table.caption = f"{len(report.failed)} volume(s) failed; see the errors above"
    return table


def _score_cells(scores: Any) -> list[str]:
    if scores is None:
        return ["-", "-", "-"]
    return [f"{scores.nmse:.4f}", f"{scores.psnr:.2f}", f"{scores.ssim:.4f}"]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


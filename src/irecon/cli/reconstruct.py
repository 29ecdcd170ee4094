"""``irecon reconstruct`` and ``irecon export``: options from the dataclasses, the work from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table

from irecon.cli.options import default_of, device_option, exit_with, stderr_console, stdout_console, threads_option
from irecon.data.masks import MASK_TYPES
from irecon.export.options import DATASETS, FORMATS, ExportOptions
from irecon.reconstruct.options import OUTPUT_FORMATS, ReconstructOptions
from irecon.text import plural


def _default(name: str) -> Any:
    return default_of(ReconstructOptions, name)


@click.command("reconstruct")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    metavar="CKPT",
    help="Trained model (from irecon train), or bundled:NAME for a bundled one (irecon models lists them); "
    "carries its config.  [default: the bundled i-RIM for the inputs' coils]",
)
@click.option(
    "--onnx",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Run a model exported by irecon export-model --format onnx with onnxruntime, instead of a checkpoint.",
)
@click.option(
    "--model",
    "model",
    default=_default("model"),
    help="Preset; only zero-filled runs without --checkpoint. With one it must match it.  "
    "[default: the bundled i-RIM, see --checkpoint]",
)
@click.option(
    "--out",
    "out_dir",
    default=_default("out_dir"),
    show_default=True,
    type=click.Path(path_type=Path),
    metavar="OUT_DIR",
    help="Folder for the reconstructions (created if missing; the default is in the working directory).",
)
@click.option(
    "--mask-type",
    type=click.Choice(MASK_TYPES),
    default=_default("mask_type"),
    show_default=True,
    help="Mask for files without their own mask (seeded by file name).",
)
@click.option(
    "--acceleration", type=int, default=_default("acceleration"), show_default=True, help="Of the drawn mask."
)
@click.option(
    "--center-fraction",
    type=float,
    default=_default("center_fraction"),
    show_default=True,
    help="Fully sampled centre of the drawn mask.",
)
@click.option(
    "--batch-size",
    type=int,
    default=_default("batch_size"),
    show_default=True,
    help="Slices per forward pass of a 2-D model (3-D models take the whole volume).",
)
@click.option(
    "--max-memory",
    default=_default("max_memory"),
    metavar="SIZE",
    help="Memory the model may use (2GiB; auto: 90% of the free memory): the planner runs whole volumes "
    "when they fit, else overlapping slabs (3-D models) or smaller slice batches (2-D), and says which.",
)
@device_option
@threads_option
@click.option("--overwrite", is_flag=True, help="Replace existing output, preview and JSON files.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Write per-volume records and the mean as JSON.",
)
@click.option(
    "--preview",
    "preview_dir",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Folder for one PNG per volume: the middle slice, zero-filled, reconstruction, target and "
    "|error| maps on one scale, with the model, mask and the volume's scores.",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(OUTPUT_FORMATS),
    default=_default("formats"),
    show_default=True,
    help="Output formats, repeatable: h5 (fastMRI, scored by fastmri.evaluate), nifti (.nii.gz), "
    "dicom (one MR series folder per volume).",
)
@click.option(
    "--virtual-coils",
    type=int,
    default=_default("virtual_coils"),
    metavar="N",
    help="Compress each volume's coils to N virtual coils before the model (default: what the checkpoint "
    "was trained with, if anything).",
)
def reconstruct_command(inputs: tuple[Path, ...], **params: Any) -> None:
    """Reconstruct fastMRI volumes (files or folders of .h5) into OUT_DIR, one .h5 per input.

    As typed, irecon reconstruct volume.h5 writes reconstructions/volume.h5 with the bundled i-RIM
    for the file's coils (single-coil, or multi-coil through its virtual coils); inputs that mix
    single- and multi-coil files are refused: run them apart.

    Volumes with a target are scored (NMSE, PSNR, SSIM as fastmri.evaluate) against zero-filling
    under the same mask. A failed volume gets a one-line error and the others still run; a preview
    that cannot be written is a warning line, and the volume keeps its output. Off a terminal each
    volume prints one progress line to stderr. The table is always printed.

    \b
    Exit status:
      0  every volume reconstructed and every file written
      1  nothing was done (bad option, model, inputs or output path), or a volume failed
      2  usage error (an unknown option or a bad option value)
      3  every volume reconstructed, but a preview or the --json report was not written
    """
    from irecon.reconstruct.run import reconstruct

    options = ReconstructOptions(inputs=inputs, **params)
    report = reconstruct(options, console=stderr_console())
    own_masks = [v.input.name for v in report.succeeded if v.mask_source == "file"]
    ctx = click.get_current_context()
    given = [f"--{n.replace('_', '-')}" for n in MASK_OPTIONS if ctx.get_parameter_source(n) in GIVEN]
    if own_masks and given:
        click.echo(
            f"note: {' and '.join(given)} did not apply to {plural(len(own_masks), 'test-style volume')} "
            f"({', '.join(own_masks)}): {'it carries its' if len(own_masks) == 1 else 'they carry their'} own mask",
            err=True,
        )
    if report.succeeded:
        console = stdout_console()
        console.print(report_table(report))
        for line in [masks_line(report), *written_lines(report)]:
            console.print(line, markup=False, highlight=False, emoji=False)
    else:
        click.echo(
            f"no volume was reconstructed: {plural(len(report.failed), 'volume')} failed (errors above)", err=True
        )
    if report.json_error is not None:
        click.echo(f"error: {report.json_error}", err=True)
    elif options.json_path is not None:
        click.echo(f"wrote {options.json_path}")
    exit_with(report.exit_code)


@click.command("export")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RECON...")
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(FORMATS),
    default=default_of(ExportOptions, "formats"),
    show_default=True,
    help="nifti (.nii.gz) and/or dicom (one MR series folder per volume); repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Folder for the exported files (created if missing).",
)
@click.option(
    "--dataset",
    default=default_of(ExportOptions, "dataset"),
    show_default=True,
    type=click.Choice(DATASETS),
    help="Dataset to export; reconstruction_esc/_rss export an input file's target for side-by-side viewing.",
)
@click.option(
    "--header-from",
    type=click.Path(path_type=Path),
    metavar="INPUT",
    help="fastMRI input file (or its folder) whose header gives the geometry, for files without one.",
)
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


MASK_OPTIONS = ("acceleration", "center_fraction", "mask_type")
GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def written_lines(report: Any) -> list[str]:
    """'wrote FOLDER: N ...' for the reconstructions and the previews of the volumes that succeeded."""
    lines = []
    outputs = [p for v in report.succeeded for p in (v.output, *v.exports) if p is not None]
    if outputs:
        kinds = sorted({p.name[len(v.input.stem) :] for v in report.succeeded for p in (v.output, *v.exports) if p})
        count = plural(len(report.succeeded), "volume")
        lines.append(f"wrote {outputs[0].parent}: {count} as {', '.join(f'<name>{k}' for k in kinds)}")
    previews = [v.preview for v in report.succeeded if v.preview is not None]
    if previews:
        lines.append(f"wrote {previews[0].parent}: {plural(len(previews), 'preview')} (<name>.png)")
    return lines


def report_table(report: Any) -> ReportTable:
    """The table of a :class:`~irecon.reconstruct.report.ReconstructReport`, for ``Console.print``."""
    return ReportTable(report)


class ReportTable:
    """One row per reconstructed volume and the mean, laid out for the width it is printed at.

    Metric columns appear only when some volume has a target (dashes for the others), zero-filled's
    only when the model is not zero-filled itself. Where the model's and zero-filled's scores do not
    fit side by side, zero-filled's go on a row of their own under each volume's. The volume column
    is as wide as the longest name (up to ``NAME_WIDTH``); only where even that does not fit, and
    past ``NAME_WIDTH``, are names folded onto more lines, never cut.
    """

    def __init__(self, report: Any) -> None:
        self.report = report

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        labels = _labels(self.report, side_by_side=False)
        name_width = max(min(max(map(cell_len, labels), default=0), NAME_WIDTH), len("volume"))
        unlimited = options.update_width(_UNLIMITED)
        for side_by_side in (True, False):
            table = _table(self.report, side_by_side, name_width)
            excess = Measurement.get(console, unlimited, table).maximum - options.max_width
            if excess <= 0:
                yield table
                return
        yield _table(self.report, False, max(name_width - excess, _NAME_MIN))


NAME_WIDTH = 40
_NAME_MIN = 12
_UNLIMITED = 10_000
_ZERO_FILLED_ROW = "  zero-filled"


def _has_baseline(report: Any) -> bool:
    """Whether zero-filled's scores are shown beside the model's (not when the model is zero-filled)."""
    return bool(report.scored) and report.config.learned


def _mean_label(report: Any) -> str:
    return f"mean ({len(report.scored)} scored)" if report.scored else "mean"


def _labels(report: Any, side_by_side: bool) -> list[str]:
    """The texts of the volume column, below the header."""
    if not report.succeeded:
        return []
    below = _has_baseline(report) and not side_by_side
    return [v.input.name for v in report.succeeded] + [_mean_label(report)] + ([_ZERO_FILLED_ROW] if below else [])


def _table(report: Any, side_by_side: bool, name_width: int) -> Table:
    with_metrics = bool(report.scored)
    beside = _has_baseline(report) and side_by_side
    below = _has_baseline(report) and not side_by_side
    table = Table(
        title=f"{report.model_name} on {report.device}, {plural(report.threads, 'thread')}"
        + ("" if report.virtual_coils is None else f", coils compressed to {report.virtual_coils} virtual"),
        title_justify="left",
    )
    table.add_column("volume", width=name_width, overflow="fold")
    table.add_column("slices", justify="right", no_wrap=True)
    if with_metrics:
        for label in ("NMSE", "PSNR", "SSIM", *(("zf NMSE", "zf PSNR", "zf SSIM") if beside else ())):
            table.add_column(label, justify="right", no_wrap=True, min_width=6)
    table.add_column("time (s)" if side_by_side else "time\n(s)", justify="right", no_wrap=True)

    for result in report.succeeded:
        row = [result.input.name, str(result.slices)]
        if with_metrics:
            row += _score_cells(result.metrics)
        if beside:
            row += _score_cells(result.zero_filled)
        table.add_row(*row, _fmt(result.seconds, ".3f"))
        if below and result.zero_filled is not None:
            table.add_row(_ZERO_FILLED_ROW, "", *_score_cells(result.zero_filled), "", style="dim")
    if report.succeeded:
        mean = [_mean_label(report), ""]
        if with_metrics:
            mean += _score_cells(report.mean_metrics())
        if beside:
            mean += _score_cells(report.mean_zero_filled())
        table.add_section()
        table.add_row(*mean, _fmt(report.mean_seconds(), ".3f"), style="bold")
        if below:
            table.add_row(_ZERO_FILLED_ROW, "", *_score_cells(report.mean_zero_filled()), "", style="bold dim")

    caption = []
    if report.failed:
        caption.append(f"{plural(len(report.failed), 'volume')} failed; see the errors above")
    if report.warnings:
        caption.append(f"{plural(len(report.warnings), 'preview')} not written; see the warnings above")
    table.caption = "; ".join(caption) or None
    return table


def masks_line(report: Any) -> str:
    """Which mask the volumes used: drawn from the options (seeded by file name) or their own."""
    spec = report.mask_spec
    drawn = sum(v.mask_source == "drawn" for v in report.succeeded)
    own = sum(v.mask_source == "file" for v in report.succeeded)
    parts = []
    if drawn:
        parts.append(
            f"{spec.mask_type} {spec.accelerations[0]}x, centre {spec.center_fractions[0]:g}, seeded by file name "
            f"({plural(drawn, 'volume')})"
        )
    if own:
        parts.append(f"the file's own ({plural(own, 'volume')})")
    return "mask: " + "; ".join(parts)


def _score_cells(scores: Any) -> list[str]:
    if scores is None:
        return ["-", "-", "-"]
    return [f"{scores.nmse:.4f}", f"{scores.psnr:.2f}", f"{scores.ssim:.4f}"]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)

"""``irecon export-model``: options from :class:`ExportModelOptions`, the work from :mod:`irecon.deploy.run`."""

from __future__ import annotations

from pathlib import Path

import click

from irecon.cli.options import default_of, stdout_console
from irecon.deploy.options import MIN_SIZE, MODEL_FORMATS, ExportModelOptions
from irecon.text import say


@click.command("export-model")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "format",
    type=click.Choice(MODEL_FORMATS),
    default=default_of(ExportModelOptions, "format"),
    show_default=True,
    help="onnx (torch's dynamo exporter; run with onnxruntime or irecon reconstruct --onnx) or "
    "torchscript (traced; run with torch.jit.load).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), metavar="FILE", help="The file to write.")
@click.option(
    "--size",
    nargs=2,
    type=int,
    default=None,
    metavar="H W",
    help=f"Fix the k-space size an ONNX file takes (each at least {MIN_SIZE}); TorchScript takes any size "
    "and is traced on this one.  [default: any size]",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing FILE.")
def export_model_command(
    checkpoint: Path, format: str, out: Path, size: tuple[int, int] | None, overwrite: bool
) -> None:
    """Export a checkpoint's whole reconstruction (k-space + mask in, magnitude out) as ONNX or TorchScript.

    The file takes k-space (B, coils, [slices,] H, W, 2) float32 and a (W,) column mask and returns
    (B, [slices,] H, W) magnitudes, data consistency and FFTs included. Before it is written it is
    run on an input it was not exported with and compared with the torch model (at most 1e-4 relative).
    """
    from irecon.deploy.run import export_model

    options = ExportModelOptions(checkpoint, out, format, None if not size else tuple(size), overwrite)
    result = export_model(options)
    console = stdout_console()
    say(
        console,
        f"wrote {result.out} ({result.format}, {result.bytes:,} bytes) in {result.seconds:.0f} s: {result.model_name}",
    )
    say(console, f"inputs: {result.input_shape}; output: magnitude images {result.output_shape}")
    say(
        console,
        f"checked on an unseen {tuple(result.checked_shape)} input: max difference from the torch model "
        f"{result.max_relative_error:.1e} (relative)",
    )

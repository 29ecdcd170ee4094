"""``irecon import``: raw scanner files (ISMRMRD, Siemens twix) to fastMRI HDF5 files."""

from __future__ import annotations

import click

from irecon.cli.options import default_of, exit_with, stderr_console, stdout_console
from irecon.text import plural, say


def _default(name: str) -> object:
    from irecon.rawdata.options import ImportOptions

    return default_of(ImportOptions, name)


@click.command("import")
@click.argument("raw", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="folder for the .h5 files")
@click.option("--overwrite", is_flag=True, help="replace existing output files")
@click.option(
    "--prewhiten/--no-prewhiten",
    default=_default("prewhiten"),
    show_default=True,
    help="whiten the coils with the file's noise scan, when it has one",
)
def import_command(raw: tuple[str, ...], out_dir: str, overwrite: bool, prewhiten: bool) -> None:
    """Import raw k-space (ISMRMRD .h5/.mrd, Siemens twix .dat) as fastMRI HDF5 files into --out."""
    from rich.table import Table

    from irecon.rawdata.options import ImportOptions
    from irecon.rawdata.run import import_raw

    err = stderr_console()
    report = import_raw(ImportOptions(raw, out_dir, overwrite=overwrite, prewhiten=prewhiten), err)
    out = stdout_console()
    table = Table(title="imported volumes")
    for column in ("raw file", "output", "slices", "coils", "k-space", "sampling"):
        table.add_column(column, justify="right" if column in ("slices", "coils") else "left")
    for imported in report.files:
        for note in imported.notes:
            say(out, f"note: {imported.source.name}: {note}")
        if imported.error is not None:
            say(err, f"error: {imported.error}")
        for written in imported.outputs:
            sampling = (
                "full (target written)"
                if written.fully_sampled
                else f"R={written.acceleration:g}, {written.num_low_frequency} centre lines (mask written)"
            )
            table.add_row(
                imported.source.name,
                str(written.path),
                str(written.slices),
                str(written.coils),
                f"{written.kspace_shape[0]}x{written.kspace_shape[1]}",
                sampling,
            )
    if table.rows:
        out.print(table)
    volumes = sum(len(f.outputs) for f in report.files)
    failed = sum(f.error is not None for f in report.files)
    click.echo(f"{plural(volumes, 'volume')} from {plural(len(report.files), 'raw file')}, {plural(failed, 'problem')}")
    exit_with(0 if report.ok else 1)

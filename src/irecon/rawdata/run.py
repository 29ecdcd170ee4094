"""``irecon import``: raw scanner files (ISMRMRD, Siemens twix) to fastMRI HDF5 files in OUT_DIR.

Each raw file gives one file per volume, ``<stem>.h5``, or ``<stem>_contrast1_repetition2.h5``
and so on when it holds several contrasts, repetitions, phases or sets. A problem with one raw
file is one line and the others are still imported; a file's outputs are all checked before the
first is written, and each is written atomically, so no output is ever half-written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from irecon.errors import IreconError
from irecon.files import EXISTS_MESSAGE, check_writable_folder
from irecon.rawdata.assemble import assemble, whitening_matrix
from irecon.rawdata.options import TWIX_SUFFIXES, ImportOptions
from irecon.rawdata.scan import RawScan
from irecon.rawdata.write import Written, write_fastmri
from irecon.text import plural


@dataclass
class ImportedFile:
    """One raw file: what was written from it, the notes on how, or the one-line error."""

    source: Path
    outputs: list[Written] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class ImportReport:
    """Every raw file's outcome, in the order given."""

    files: list[ImportedFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every raw file was imported."""
        return all(f.error is None for f in self.files)


def import_raw(options: ImportOptions, console: Console | None = None) -> ImportReport:
    """Import every raw file; raises IreconError only for problems with the run as a whole."""
    options.validate()
    out_dir = check_writable_folder(options.out_dir)
    report = ImportReport()
    with _progress(console) as progress:
        for name in options.inputs:
            imported = ImportedFile(Path(name))
            report.files.append(imported)
            try:
                _import_one(imported, out_dir, options, progress)
            except IreconError as err:
                imported.error = str(err)
    return report


def _import_one(imported: ImportedFile, out_dir: Path, options: ImportOptions, progress: Progress) -> None:
    path = imported.source
    task = progress.add_task(f"  {path.name}", total=None)
    try:
        scan = _read(path, progress, task)
        whitening = None
        if scan.noise is not None and options.prewhiten:
            whitening = whitening_matrix(scan.noise)
            scan.notes.append(f"prewhitened with the noise scan ({plural(scan.noise.shape[0], 'sample')} per coil)")
        elif scan.noise is None:
            scan.notes.append("no noise scan: not prewhitened")
        progress.update(task, total=len(scan.readouts), completed=0, description=f"  {path.name} (assembling)")
        volumes = assemble(scan.readouts, scan.encoding, path, whitening, lambda n: progress.advance(task, n))
    finally:
        progress.remove_task(task)
    imported.notes.extend(scan.notes)
    outputs = [out_dir / f"{path.stem}{volume.label}.h5" for volume in volumes]
    for output in outputs:
        if output.resolve() == path.resolve():
            raise IreconError("the output would replace this input file; choose another «out_dir»", path)
        if output.exists() and not options.overwrite:
            raise IreconError(EXISTS_MESSAGE, output)
    encoding = scan.encoding
    width = encoding.encoded[1]
    left = width // 2 - encoding.step1_center
    right = left + encoding.step1_maximum + 1
    recon = (min(encoding.recon[0], encoding.encoded[0]), min(encoding.recon[1], width))
    for volume, output in zip(volumes, outputs):
        imported.notes.extend(volume.notes)
        attrs = {"source": path.name, **{name: str(value) for name, value in volume.counters.items()}}
        imported.outputs.append(
            write_fastmri(
                output, volume.kspace, volume.acquired, scan.header_xml, recon, (left, right), attrs, options.overwrite
            )
        )


def _read(path: Path, progress: Progress, task: object) -> RawScan:
    """The raw file through its reader; the reader's package (the ``raw`` extra) is loaded here."""
    try:
        if path.suffix.lower() in TWIX_SUFFIXES:
            from irecon.rawdata.twix import read_twix

            progress.update(task, description=f"  {path.name} (reading twix)")
            return read_twix(path)
        from irecon.rawdata.ismrmrd_reader import count_acquisitions, read_ismrmrd
    except ImportError as err:
        raise IreconError(f"reading raw data needs the {err.name} package: pip install 'irecon[raw]'", path) from None
    progress.update(task, total=count_acquisitions(path), description=f"  {path.name} (reading ISMRMRD)")

    def advance(count: int) -> None:
        progress.advance(task, count)

    return read_ismrmrd(path, advance)


def _progress(console: Console | None) -> Progress:
    """A progress bar per raw file, shown only on a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None or not console.is_terminal,
    )

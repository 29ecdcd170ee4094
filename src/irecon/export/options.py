"""What ``irecon export`` takes, importable without the format libraries or torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("nifti", "dicom")
DATASETS = ("reconstruction", "reconstruction_esc", "reconstruction_rss")


@dataclass(frozen=True)
class ExportOptions:
    """What ``irecon export`` was asked to do.

    ``inputs`` are ``.h5`` files or folders of them; ``header_from`` is a fastMRI input file, or a
    folder holding a file of the same name, used for files without their own ``ismrmrd_header``.
    ``description`` replaces the series description built from the file's attrs.
    """

    inputs: Sequence[str | Path]
    out_dir: str | Path
    formats: Sequence[str] = ("nifti",)
    dataset: str = "reconstruction"
    header_from: str | Path | None = None
    overwrite: bool = False
    description: str = ""

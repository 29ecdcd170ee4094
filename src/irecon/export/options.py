"""What ``irecon export`` takes, importable without the format libraries or torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from irecon.errors import IreconError

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

    def validate(self) -> None:
        """Formats and dataset name; IreconError for none or an unknown one. Pure."""
        check_formats(self.formats)
        if self.dataset not in DATASETS:
            raise IreconError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")


def check_formats(formats: Sequence[str]) -> list[str]:
    """The requested formats, deduplicated in order; IreconError for none or an unknown one."""
    chosen = list(dict.fromkeys(formats))
    if not chosen:
        raise IreconError(f"no export format given; choose from {', '.join(FORMATS)}")
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise IreconError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return chosen

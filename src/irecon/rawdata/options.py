"""What ``irecon import`` takes; imports nothing heavy, so the command line can read it without torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from irecon.errors import IreconError

ISMRMRD_SUFFIXES = (".h5", ".mrd")
TWIX_SUFFIXES = (".dat",)


@dataclass(frozen=True)
class ImportOptions:
    """Raw files to import, the output folder, and whether existing outputs may be replaced."""

    inputs: Sequence[str | Path]
    out_dir: str | Path
    overwrite: bool = False
    prewhiten: bool = True

    def validate(self) -> None:
        """Refuse, before any work, inputs that are missing or of no known raw format."""
        if not self.inputs:
            raise IreconError("no raw files given")
        for name in self.inputs:
            path = Path(name)
            if path.is_dir():
                raise IreconError("is a folder; give raw files (.h5/.mrd ISMRMRD, .dat Siemens twix)", path)
            if not path.exists():
                raise IreconError("no such file", path)
            if path.suffix.lower() not in ISMRMRD_SUFFIXES + TWIX_SUFFIXES:
                raise IreconError(
                    f"unknown raw format {path.suffix or '(no suffix)'}: give ISMRMRD (.h5, .mrd) or Siemens twix (.dat)",
                    path,
                )

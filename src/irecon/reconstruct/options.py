"""What ``irecon reconstruct`` takes: one dataclass whose defaults are the command line's defaults.

Imports nothing heavy, so the command line can read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from irecon.data.masks import MaskSpec

OUTPUT_FORMATS = ("h5", "nifti", "dicom")


@dataclass(frozen=True)
class ReconstructOptions:
    """Everything ``irecon reconstruct`` takes; the defaults are the command's defaults.

    ``max_memory`` (``2GiB`` or ``auto``): the planner picks, per volume size, whole volumes or
    overlapping slabs (3-D models) and the slice batch up to ``batch_size`` (2-D) that fit it.
    """

    inputs: Sequence[str | Path]
    out_dir: str | Path
    checkpoint: str | Path | None = None
    model: str | None = None
    mask_type: str = "random"
    acceleration: int = 4
    center_fraction: float = 0.08
    batch_size: int = 8
    threads: int | None = None
    device: str | None = None
    overwrite: bool = False
    json_path: str | Path | None = None
    preview_dir: str | Path | None = None
    formats: Sequence[str] = ("h5",)
    max_memory: str | None = None

    @property
    def mask_spec(self) -> "MaskSpec":
        """The mask drawn for files without their own mask."""
        from irecon.data.masks import MaskSpec

        return MaskSpec(self.mask_type, (self.center_fraction,), (self.acceleration,))

"""What ``irecon reconstruct`` takes: one dataclass whose defaults are the command line's defaults.

Imports nothing heavy, so the command line can read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from irecon.errors import IreconError
from irecon.values import check_count, check_device_name, check_threads, parse_bytes

if TYPE_CHECKING:
    from irecon.data.masks import MaskSpec

OUTPUT_FORMATS = ("h5", "nifti", "dicom")
DEFAULT_OUT_DIR = "reconstructions"  # relative: beside wherever the command runs


@dataclass(frozen=True)
class ReconstructOptions:
    """Everything ``irecon reconstruct`` takes; the defaults are the command's defaults.

    ``onnx`` is a file from ``irecon export-model --format onnx``, run with onnxruntime instead of
    a checkpoint's torch model.
    ``max_memory`` (``2GiB`` or ``auto``): the planner picks, per volume size, whole volumes or
    overlapping slabs (3-D models) and the slice batch up to ``batch_size`` (2-D) that fit it.
    Without ``checkpoint``, ``model`` or ``onnx`` the model is the bundled i-RIM that fits the inputs'
    coils (``bundled:irim-singlecoil`` or ``bundled:irim-multicoil``).
    """

    inputs: Sequence[str | Path]
    out_dir: str | Path = DEFAULT_OUT_DIR
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
    virtual_coils: int | None = None
    """Compress each volume's coils to N virtual coils; None: what the checkpoint was trained with, if any."""
    onnx: str | Path | None = None
    max_memory: str | None = None

    @property
    def mask_spec(self) -> "MaskSpec":
        """The mask drawn for files without their own mask."""
        from irecon.data.masks import MaskSpec

        return MaskSpec(self.mask_type, (self.center_fraction,), (self.acceleration,))

    def validate(self) -> None:
        """The plain options, with the messages ``irecon train`` gives for the same mistakes; pure."""
        self.mask_spec.validate()
        check_threads(self.threads)
        check_device_name(self.device)
        unknown = [f for f in self.formats if f not in OUTPUT_FORMATS]
        if unknown or not self.formats:
            raise IreconError(
                f"«formats» must be one or more of {', '.join(OUTPUT_FORMATS)}; got {', '.join(unknown) or 'none'}"
            )
        check_count("batch_size", self.batch_size)
        if self.onnx is not None and (self.checkpoint is not None or self.model is not None):
            raise IreconError("«onnx» runs the exported model on its own; leave out «checkpoint» and «model»")
        if self.max_memory is not None and self.max_memory.strip().lower() != "auto":
            parse_bytes(self.max_memory)

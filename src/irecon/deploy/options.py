"""What ``irecon export-model`` takes, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from irecon.errors import IreconError

MODEL_FORMATS = ("onnx", "torchscript")
# The smallest spatial size an exported model takes: the widest stride of the preset i-RIMs is 8.
MIN_SIZE = 8


@dataclass(frozen=True)
class ExportModelOptions:
    """A checkpoint to export, where, in which format; ``size`` (H, W) fixes the spatial size, None keeps it free."""

    checkpoint: str | Path
    out: str | Path
    format: str = "onnx"
    size: tuple[int, int] | None = None
    overwrite: bool = False

    def validate(self) -> None:
        """Raise IreconError for an unknown format or a size too small for the model's strides."""
        if self.format not in MODEL_FORMATS:
            raise IreconError(f"«formats» must be one of {', '.join(MODEL_FORMATS)}, got {self.format!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < MIN_SIZE):
            raise IreconError(f"«size» must be two sizes H W of at least {MIN_SIZE}, got {self.size}")

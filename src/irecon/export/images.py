"""Checks shared by the NIfTI and DICOM writers on the volume they are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irecon.errors import IreconError
from irecon.text import shorten


def check_images(images: np.ndarray, source: str | Path | None = None) -> np.ndarray:
    """Return ``images`` as a C-contiguous float32 ``(slices, rows, columns)`` array.

    Raises IreconError naming ``source`` for a rank other than 3, an empty axis, complex or
    non-numeric values, or NaN/Inf.
    """
    array = np.asarray(images)
    if array.ndim != 3:
        raise IreconError(
            f"images have rank {array.ndim} (shape {array.shape}); expected (slices, rows, columns)",
            source,
        )
    if 0 in array.shape:
        raise IreconError(f"images have an empty axis (shape {array.shape})", source)
    if array.dtype.kind not in "fiub":
        raise IreconError(f"images have dtype {array.dtype}; expected real magnitudes", source)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise IreconError("images contain NaN or Inf values", source)
    return array


def ascii_text(text: str, limit: int) -> str:
    """``text`` with non-printable and non-ASCII characters replaced by ``?``, cut at a word to ``limit``."""
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return shorten(cleaned, limit)

"""A tiny valid fastMRI volume written by hand, for the tests of check and the data commands."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from irecon.data.header import write_header_xml


def write_tiny_volume(path: Path, coils: int | None = None, with_mask: bool = False) -> Path:
    """A tiny valid volume: 2 slices of 16x12 k-space, an 8x8 target, or a test-style mask."""
    shape = (2, 16, 12) if coils is None else (2, coils, 16, 12)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as hf:
        hf["kspace"] = np.ones(shape, dtype=np.complex64)
        hf["ismrmrd_header"] = write_header_xml((16, 12, 1), (8, 8, 1), center=5, maximum=10)
        if with_mask:
            hf["mask"] = np.arange(12) % 2 == 0
            hf.attrs["acceleration"] = 2
        else:
            key = "reconstruction_esc" if coils is None else "reconstruction_rss"
            hf[key] = np.ones((2, 8, 8), dtype=np.float32)
            hf.attrs["max"] = 1.0
        hf.attrs["acquisition"] = "CORPD_FBK"
    return path

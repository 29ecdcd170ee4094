"""Coil compression: any coil count to N virtual coils, by an SVD of the calibration region (as BART ``cc``).

The compression matrix of a volume is ``V[:, :N]^T`` from the SVD ``A = U S V^H`` of its
calibration region, ``A`` holding every calibration sample as a row of coil values (all slices,
all readout rows, the centre phase-encode lines). It is unitary on its N rows, so the virtual coils
keep the energy of the N strongest principal components; applied per k-space sample, it keeps a
mask's zeros zero. Targets stay the RSS of all physical coils.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from irecon.data.masks import centre_lines
from irecon.errors import IreconError
from irecon.text import plural

CALIBRATION_LINES = 24
"""At most this many centre phase-encode lines make the calibration region (BART ``cc -r``'s default size)."""


def calibration_columns(mask: np.ndarray | None, width: int, limit: int = CALIBRATION_LINES) -> slice:
    """The centre columns used for calibration: the mask's sampled centre run (all of it when no mask), at most ``limit``."""
    run = width if mask is None else centre_lines(mask)
    if run < 1:
        raise IreconError(
            "the mask does not sample the k-space centre, so there is no calibration region to compress coils from"
        )
    count = min(run, limit)
    start = width // 2 - count // 2
    return slice(start, start + count)


def compression_matrix(calibration: np.ndarray | Tensor, virtual: int) -> Tensor:
    """The ``(virtual, coils)`` complex64 matrix of the SVD of ``calibration`` ``(..., coils, H, columns)``.

    The coil axis is the third from last; every other axis gives samples.
    """
    data = torch.as_tensor(calibration)
    coils = data.shape[-3]
    samples = data.movedim(-3, -1).reshape(-1, coils).to(torch.complex128)
    _, _, vh = torch.linalg.svd(samples, full_matrices=False)
    return vh[:virtual].conj().to(torch.complex64)  # rows of A are x^T, so x = sum a_k conj(v_k)


def compress(kspace: Tensor, matrix: Tensor, coil_dim: int) -> Tensor:
    """``kspace`` with its coils along ``coil_dim`` replaced by ``matrix @ coils``."""
    moved = kspace.movedim(coil_dim, -1)
    return (moved @ matrix.T.to(moved.dtype)).movedim(-1, coil_dim).contiguous()


def check_coil_count(coils: int, virtual: int, path: str | Path | None) -> None:
    """Refuse ``virtual`` below 1 or above the volume's ``coils``, in one line naming the file."""
    if virtual < 1:
        raise IreconError(f"«virtual_coils» must be at least 1, got {virtual}")
    if coils < virtual:
        raise IreconError(
            f"file has {plural(coils, 'coil')}, fewer than the {virtual} virtual coils the model takes; "
            "coil compression only reduces the coil count",
            path,
        )

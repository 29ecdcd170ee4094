"""The fastMRI HDF5 file an import writes: k-space, ISMRMRD header, and a target or the file's own mask.

Fully sampled data (every line between the header's ``kspace_encoding_step_1`` limits acquired)
gets a ``reconstruction_rss`` target, the RSS of the coil images centre-cropped to the recon
matrix, so it can be trained on. Undersampled data gets fastMRI's test-file layout: a 1-D
``mask`` of the acquired lines with ``acceleration`` and ``num_low_frequency`` attributes, so
``irecon reconstruct`` uses the file's own sampling. Both get ``max`` and ``norm`` of the RSS image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from irecon.data.masks import centre_lines
from irecon.files import atomic_write
from irecon.physics import center_crop, ifft2c


@dataclass(frozen=True)
class Written:
    """What one output file holds, for the report."""

    path: Path
    slices: int
    coils: int
    kspace_shape: tuple[int, int]
    fully_sampled: bool
    acceleration: float | None
    num_low_frequency: int | None


def sampling(acquired: np.ndarray, padding: tuple[int, int]) -> tuple[bool, float, int]:
    """Whether every line in ``padding`` (left, right) was acquired, the acceleration, the centre run."""
    left, right = padding
    inside = acquired[left:right]
    fully = bool(inside.all())
    acceleration = len(inside) / max(int(inside.sum()), 1)
    low = centre_lines(acquired)
    return fully, acceleration, low


def rss_image(kspace: np.ndarray, recon: tuple[int, int]) -> np.ndarray:
    """Root-sum-of-squares of the coil images of ``(slices, coils, H, W)`` k-space, cropped to ``recon``."""
    images = ifft2c(torch.from_numpy(kspace))
    rss = torch.linalg.vector_norm(images, dim=1)
    return center_crop(rss, recon).contiguous().numpy().astype(np.float32)


def write_fastmri(
    path: Path,
    kspace: np.ndarray,
    acquired: np.ndarray,
    header_xml: str,
    recon: tuple[int, int],
    padding: tuple[int, int],
    attrs: dict[str, str],
    overwrite: bool,
) -> Written:
    """Write one fastMRI multi-coil file atomically (never a half-written file at ``path``)."""
    fully, acceleration, low = sampling(acquired, padding)
    image = rss_image(kspace, recon)
    with atomic_write(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as hf:
        hf.create_dataset("kspace", data=kspace, chunks=(1, *kspace.shape[1:]))
        hf.create_dataset("ismrmrd_header", data=np.bytes_(header_xml.encode()))
        if fully:
            hf.create_dataset("reconstruction_rss", data=image)
        else:
            hf.create_dataset("mask", data=acquired.astype(bool))
            hf.attrs["acceleration"] = round(acceleration, 2)
            hf.attrs["num_low_frequency"] = low
        hf.attrs["max"] = float(image.max())
        hf.attrs["norm"] = float(np.linalg.norm(image))
        hf.attrs["acquisition"] = "fully sampled" if fully else "undersampled"
        for key, value in attrs.items():
            hf.attrs[key] = value
    return Written(
        path=path,
        slices=int(kspace.shape[0]),
        coils=int(kspace.shape[1]),
        kspace_shape=(int(kspace.shape[2]), int(kspace.shape[3])),
        fully_sampled=fully,
        acceleration=None if fully else round(acceleration, 2),
        num_low_frequency=None if fully else low,
    )

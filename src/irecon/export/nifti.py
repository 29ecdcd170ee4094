"""Write a reconstructed volume as a float32 ``.nii.gz`` with the header's voxel sizes.

Voxel ``[i, j, k]`` is image ``[k, rows - 1 - j, i]``: columns first, rows bottom-up, then
slices, the layout dcm2niix gives the DICOM series, so both exports hold the same array. fastMRI
headers give no orientation, so the qform and sform codes are 0 ("unknown") and ``descrip`` says so.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from irecon.data.header import Geometry
from irecon.export.images import ascii_text, check_images
from irecon.files import atomic_write

DESCRIP_LIMIT = 80
NIFTI_UNKNOWN = 0
_COMMENT_EXTENSION = 6


def nifti_array(images: np.ndarray) -> np.ndarray:
    """``images`` (slices, rows, columns) in NIfTI voxel order: columns, rows reversed, slices."""
    return np.ascontiguousarray(np.asarray(images).transpose(2, 1, 0)[:, ::-1, :])


def images_from_nifti(data: np.ndarray) -> np.ndarray:
    """The inverse of :func:`nifti_array`: a NIfTI voxel array back to (slices, rows, columns)."""
    return np.ascontiguousarray(np.asarray(data)[:, ::-1, :].transpose(2, 1, 0))


def descrip_text(geometry: Geometry, description: str) -> str:
    """The 80-character ``descrip``: the geometry caveats first, then as much of ``description``."""
    parts = [*geometry.assumptions, description] if description else list(geometry.assumptions)
    return ascii_text("; ".join(parts), DESCRIP_LIMIT)


def write_nifti(
    images: np.ndarray,
    geometry: Geometry,
    path: str | Path,
    description: str = "",
    overwrite: bool = False,
    *,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``images`` (slices, rows, columns) to ``path`` (``.nii.gz``) atomically; return it.

    The float32 magnitudes are stored unscaled; pixdim and the sform diagonal (code 0, not a
    claim about anatomy) are column, row and slice spacing in mm. ``provenance``, if given, is
    stored as JSON in a NIfTI comment extension. An existing file is refused unless
    ``overwrite``. Raises IreconError.
    """
    path = Path(path)
    volume = check_images(images, path)
    affine = np.diag([geometry.column_spacing, geometry.row_spacing, geometry.slice_spacing, 1.0])
    image = nib.Nifti1Image(nifti_array(volume), affine)
    image.set_sform(affine, code=NIFTI_UNKNOWN)
    image.set_qform(affine, code=NIFTI_UNKNOWN)
    header = image.header
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm")
    header["descrip"] = descrip_text(geometry, description).encode("ascii")
    if provenance:
        text = json.dumps(provenance, sort_keys=True).encode()
        header.extensions.append(nib.nifti1.Nifti1Extension(_COMMENT_EXTENSION, text))
    data = gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return path

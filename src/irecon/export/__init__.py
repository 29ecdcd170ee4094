"""Export reconstructions to NIfTI (``.nii.gz``) and DICOM (one MR series per volume).

Spacing comes from the fastMRI ISMRMRD header; orientation is never in it, and every export says
so. See ``docs/export.md`` for what each format holds.
"""

from __future__ import annotations

from typing import Any

_HOMES = {
    "DATASETS": "irecon.export.options",
    "ExportOptions": "irecon.export.options",
    "ExportResult": "irecon.export.run",
    "FORMATS": "irecon.export.options",
    "SeriesInfo": "irecon.export.dicom",
    "export_reconstruction": "irecon.export.run",
    "export_volume": "irecon.export.run",
    "images_from_nifti": "irecon.export.nifti",
    "nifti_array": "irecon.export.nifti",
    "output_paths": "irecon.export.run",
    "quantise": "irecon.export.dicom",
    "read_export_volume": "irecon.export.run",
    "refuse_existing_outputs": "irecon.export.run",
    "write_dicom_series": "irecon.export.dicom",
    "write_nifti": "irecon.export.nifti",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` on first use (the format libraries are heavy)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'irecon.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)

"""Export reconstructions to NIfTI (``.nii.gz``) and DICOM (one MR series per volume).

Spacing comes from the fastMRI ISMRMRD header; orientation is never in it, and every export says
so. See ``docs/export.md`` for what each format holds.
"""

from irecon.export.dicom import SeriesInfo, quantise, write_dicom_series
from irecon.export.header import (
    Geometry,
    ScanParameters,
    geometry_from_header,
    scan_parameters_from_header,
)
from irecon.export.nifti import images_from_nifti, nifti_array, write_nifti
from irecon.export.run import (
    DATASETS,
    FORMATS,
    ExportOptions,
    ExportResult,
    export_reconstruction,
    export_volume,
    output_paths,
    read_export_volume,
)

__all__ = [
    "DATASETS",
    "FORMATS",
    "ExportOptions",
    "ExportResult",
    "Geometry",
    "ScanParameters",
    "SeriesInfo",
    "export_reconstruction",
    "export_volume",
    "geometry_from_header",
    "images_from_nifti",
    "nifti_array",
    "output_paths",
    "quantise",
    "read_export_volume",
    "scan_parameters_from_header",
    "write_dicom_series",
    "write_nifti",
]

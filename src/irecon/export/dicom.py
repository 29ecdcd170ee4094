"""Write a reconstructed volume as one classic MR Image Storage DICOM series, one file per slice.

Pixels are 16-bit unsigned with RescaleSlope/RescaleIntercept chosen per series so that
``stored * slope + intercept`` gives back each float magnitude within half a quantisation step.
Patient fields are anonymous; orientation, which fastMRI headers lack, is the identity and is
marked as assumed in ImageComments and SeriesDescription.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from irecon.data.header import ORIENTATION_UNKNOWN, Geometry, ScanParameters
from irecon.export.folders import atomic_folder
from irecon.export.images import check_images
from irecon.text import shorten

MAX_STORED = 65535
IDENTITY_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ANONYMOUS = "ANONYMOUS"
_LO = 64  # DICOM "long string" limit, used by SeriesDescription and friends
_ORIENTATION_SUFFIX = " (orientation unknown)"


@dataclass(frozen=True)
class SeriesInfo:
    """Where a series came from, for its description; one instance per run shares one study.

    ``study_uid`` and ``created`` (the study and series date/time) are fixed when the instance is
    made, so every volume exported with it lands in the same DICOM study.
    """

    model: str = ""
    checkpoint: str = ""
    acceleration: int | None = None
    mask_type: str = ""
    dataset: str = "reconstruction"
    source: str = ""
    description: str = ""
    patient_id: str = "irecon"
    study_uid: str = field(default_factory=generate_uid)
    created: datetime = field(default_factory=datetime.now)

    def label(self) -> str:
        """A short provenance phrase: the description if set, else model, checkpoint, R, mask."""
        if self.description:
            return self.description
        if not self.model:
            return f"fastMRI {self.dataset}"
        parts = [f"irecon {self.model}"]
        if self.checkpoint and Path(self.checkpoint).name not in self.model:  # "tiny-2d from best.pt" names it
            parts.append(Path(self.checkpoint).name)
        if self.acceleration:
            parts.append(f"R{self.acceleration}")
        if self.mask_type:
            parts.append(self.mask_type)
        return " ".join(parts)

    def derivation(self) -> str:
        """One sentence saying how the images were made, with the full checkpoint path."""
        if not self.model:
            text = f"fastMRI {self.dataset} images"
        else:
            text = f"reconstructed by irecon model {self.model}"
            text += f" from checkpoint {self.checkpoint}" if self.checkpoint else " (no checkpoint)"
            if self.acceleration:
                text += f", acceleration {self.acceleration}"
            if self.mask_type:
                text += f", {self.mask_type} mask"
        if self.source:
            text += f"; source file {self.source}"
        return text


@dataclass(frozen=True)
class Quantised:
    """A volume as 16-bit stored values plus the DICOM decimal strings that map them back."""

    pixels: np.ndarray
    slope: float
    intercept: float
    slope_text: str
    intercept_text: str


def quantise(images: np.ndarray) -> Quantised:
    """Map float images onto 0..65535 with intercept ``min(0, minimum)`` and a per-volume slope.

    The slope is ``(maximum - intercept) / 65535`` (1 for a constant volume), written with ten
    significant digits; the stored values are computed from the written numbers, so a reader's
    ``stored * slope + intercept`` is within half a step of the input.
    """
    values = images.astype(np.float64)
    intercept_text = _ds(min(0.0, float(values.min())))
    intercept = float(intercept_text)
    span = float(values.max()) - intercept
    slope_text = _ds(span / MAX_STORED if span > 0 else 1.0)
    slope = float(slope_text)
    stored = np.rint((values - intercept) / slope).clip(0, MAX_STORED).astype("<u2")
    return Quantised(stored, slope, intercept, slope_text, intercept_text)


def write_dicom_series(
    images: np.ndarray,
    geometry: Geometry,
    folder: str | Path,
    series_info: SeriesInfo,
    overwrite: bool = False,
    *,
    scan: ScanParameters | None = None,
    series_number: int = 1,
) -> Path:
    """Write ``images`` (slices, rows, columns) as ``folder/IM0001.dcm`` ... and return ``folder``.

    Identity orientation; the volume is centred on the origin (slice k at ``(k - (slices - 1) / 2) *
    slice_spacing``), as a NIfTI export without orientation is. The folder appears
    atomically; an existing one is refused unless ``overwrite``. Raises IreconError.
    """
    folder = Path(folder)
    volume = check_images(images, series_info.source or None)
    quantised = quantise(volume)
    series_uid = generate_uid()
    frame_uid = generate_uid()
    shared = _series_dataset(volume, geometry, series_info, scan or ScanParameters(), quantised)
    shared.SeriesInstanceUID = series_uid
    shared.FrameOfReferenceUID = frame_uid
    shared.SeriesNumber = series_number
    width = max(4, len(str(volume.shape[0])))
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for index in range(volume.shape[0]):
            dataset = _slice_dataset(shared, index, geometry, quantised.pixels[index], volume.shape[0])
            path = tmp / f"IM{index + 1:0{width}d}.dcm"
            with open(path, "wb") as handle:
                dcmwrite(handle, dataset, enforce_file_format=True)
                handle.flush()
                os.fsync(handle.fileno())
    return folder


def _series_dataset(
    volume: np.ndarray,
    geometry: Geometry,
    info: SeriesInfo,
    scan: ScanParameters,
    quantised: Quantised,
) -> Dataset:
    """The attributes every slice of the series shares."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    date, time = info.created.strftime("%Y%m%d"), info.created.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Laterality = ""
    ds.Manufacturer = _lo(scan.manufacturer or "")
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "irecon reconstruction"
    ds.SeriesDescription = _series_description(info, geometry)
    ds.ManufacturerModelName = _lo(scan.model_name or "")
    ds.DerivationDescription = _clean(info.derivation())[:1024]
    ds.PatientName = ANONYMOUS
    ds.PatientID = _lo(info.patient_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "irecon export writes no patient data"
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = _ds(geometry.slice_thickness)
    ds.SpacingBetweenSlices = _ds(geometry.slice_spacing)
    ds.EchoTrainLength = ""
    ds.EchoTime = _optional_ds(scan.echo_time_ms)
    ds.RepetitionTime = _optional_ds(scan.repetition_time_ms)
    if scan.field_strength_t is not None:
        ds.MagneticFieldStrength = _ds(scan.field_strength_t)
    if scan.flip_angle_deg is not None:
        ds.FlipAngle = _ds(scan.flip_angle_deg)
    if scan.protocol_name:
        ds.ProtocolName = _lo(scan.protocol_name)
    ds.PatientPosition = (geometry.patient_position or "")[:16]
    ds.StudyInstanceUID = info.study_uid
    ds.StudyID = ""
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds(v) for v in IDENTITY_ORIENTATION]
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = _image_comments(geometry)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
    ds.PixelSpacing = [_ds(geometry.row_spacing), _ds(geometry.column_spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    center, width = _window(volume, quantised.slope)
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.VOILUTFunction = "LINEAR_EXACT"
    ds.RescaleIntercept = quantised.intercept_text
    ds.RescaleSlope = quantised.slope_text
    ds.RescaleType = "US"
    return ds


def _slice_dataset(shared: Dataset, index: int, geometry: Geometry, pixels: np.ndarray, slices: int) -> Dataset:
    """One slice's file: the shared attributes plus its UID, position, number and pixels.

    The volume's centre is at the origin, where a NIfTI without orientation (codes 0) puts its
    centre too, so both exports of a volume place every voxel at the same point.
    """
    ds = Dataset()
    ds.update(shared)
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = index + 1
    rows, columns = pixels.shape
    location = (index - (slices - 1) / 2) * geometry.slice_spacing
    ds.ImagePositionPatient = [
        _ds(-(columns - 1) / 2 * geometry.column_spacing),
        _ds(-(rows - 1) / 2 * geometry.row_spacing),
        _ds(location),
    ]
    ds.SliceLocation = _ds(location)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _series_description(info: SeriesInfo, geometry: Geometry) -> str:
    """The provenance label, cut so an orientation warning still fits in 64 characters."""
    suffix = _ORIENTATION_SUFFIX if ORIENTATION_UNKNOWN in geometry.assumptions else ""
    return shorten(_clean(info.label()), _LO - len(suffix)) + suffix


def _image_comments(geometry: Geometry) -> str:
    """The geometry caveats in plain words."""
    notes = []
    if ORIENTATION_UNKNOWN in geometry.assumptions:
        notes.append(
            "Orientation and position are unknown (the fastMRI header has none); identity "
            "orientation and a volume centred on the origin, slices one spacing apart, are assumed."
        )
    notes.extend(f"Geometry: {a}." for a in geometry.assumptions if a != ORIENTATION_UNKNOWN)
    return " ".join(notes)


def _window(volume: np.ndarray, slope: float) -> tuple[str, str]:
    """Window centre and width covering the minimum to the 99.5th percentile, at least one step."""
    low = float(volume.min())
    high = float(np.percentile(volume, 99.5))
    if high <= low:
        high = float(volume.max())
    width = max(high - low, slope)
    return _ds(low + width / 2), _ds(width)


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for ``value``."""
    text = f"{float(value):.10g}"
    return "0" if text == "-0" else text


def _optional_ds(value: float | None) -> str:
    return "" if value is None else _ds(value)


def _clean(text: str) -> str:
    """Text safe for a DICOM string: no backslash (the value separator) and no control codes."""
    return "".join(c for c in text.replace("\\", "/") if c.isprintable())


def _lo(text: str) -> str:
    return _clean(text)[:_LO]

"""The ISMRMRD XML header, read and written: the fields fastMRI reads, voxel geometry and scan parameters.

The XML header gives field of view and matrix size, hence voxel spacing, but no direction cosines,
slice positions or slice gap (those live in per-acquisition headers that fastMRI files do not
keep), so every export states that orientation is unknown and slices are assumed contiguous.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as etree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from irecon.errors import IreconError

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
_ENCODED = ("encoding", "encodedSpace", "matrixSize")
_LIMITS = ("encoding", "encodingLimits", "kspace_encoding_step_1")
ORIENTATION_UNKNOWN = "orientation unknown"
GAP_UNKNOWN = "slice gap unknown"
SPACING_ASSUMED = "spacing assumed 1mm"
ASSUMED_SPACING_MM = 1.0

_RECON_FOV = ("encoding", "reconSpace", "fieldOfView_mm")
_RECON_MATRIX = ("encoding", "reconSpace", "matrixSize")


@dataclass(frozen=True)
class Geometry:
    """Voxel spacing in mm of a ``(slices, rows, columns)`` volume, and what of it is not known.

    Rows run along ISMRMRD ``x`` (the readout) and columns along ``y``, the axis order fastMRI
    stores images in. ``assumptions`` lists, as short phrases, what is unknown or assumed; it
    always holds ``ORIENTATION_UNKNOWN``, as there is nothing here to give orientation from.
    """

    row_spacing: float
    column_spacing: float
    slice_thickness: float
    slice_spacing: float
    assumptions: tuple[str, ...] = (ORIENTATION_UNKNOWN, GAP_UNKNOWN)
    patient_position: str | None = None

    @property
    def spacing_assumed(self) -> bool:
        """True when some spacing was set to 1 mm because the header did not give it."""
        return SPACING_ASSUMED in self.assumptions


@dataclass(frozen=True)
class ScanParameters:
    """Acquisition facts the header may carry, each None where it is absent or not a number."""

    manufacturer: str | None = None
    model_name: str | None = None
    field_strength_t: float | None = None
    repetition_time_ms: float | None = None
    echo_time_ms: float | None = None
    flip_angle_deg: float | None = None
    protocol_name: str | None = None


def parse_header(xml: bytes | str, source: str | Path | None = None) -> etree.Element:
    """Parse ISMRMRD XML, raising IreconError naming ``source`` when it is not valid XML."""
    if not isinstance(xml, (bytes, str)) or not xml:
        raise IreconError("ismrmrd_header is empty or not an XML string", source)
    try:
        return etree.fromstring(xml)
    except etree.ParseError as exc:
        raise IreconError(f"ismrmrd_header is not valid XML ({exc})", source) from None


def geometry_from_header(xml: bytes | str, source: str | Path | None = None) -> Geometry:
    """Voxel spacing from ``reconSpace`` field of view divided by matrix size, per axis.

    Slice thickness is the ``reconSpace`` z extent over its z matrix size (1 for 2-D fastMRI
    data); slice spacing equals it. An axis whose field of view or matrix size is missing or zero
    gets 1 mm and ``SPACING_ASSUMED``; a value that is present but negative, non-finite or not a
    number raises IreconError.
    """
    root = parse_header(xml, source)
    spacings: list[float] = []
    assumed = False
    for axis in "xyz":
        fov = _number(root, _RECON_FOV + (axis,), source)
        size = _number(root, _RECON_MATRIX + (axis,), source)
        if fov is None or size is None:
            spacings.append(ASSUMED_SPACING_MM)
            assumed = True
        else:
            spacings.append(fov / size)
    assumptions = (ORIENTATION_UNKNOWN, GAP_UNKNOWN) + ((SPACING_ASSUMED,) if assumed else ())
    return Geometry(
        row_spacing=spacings[0],
        column_spacing=spacings[1],
        slice_thickness=spacings[2],
        slice_spacing=spacings[2],
        assumptions=assumptions,
        patient_position=_text(root, ("measurementInformation", "patientPosition")),
    )


def scan_parameters_from_header(xml: bytes | str, source: str | Path | None = None) -> ScanParameters:
    """The vendor, field strength, TR, TE, flip angle and protocol name the header records."""
    root = parse_header(xml, source)

    def number(fields: tuple[str, ...]) -> float | None:
        text = _text(root, fields)
        try:
            value = float(text) if text is not None else math.nan
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    return ScanParameters(
        manufacturer=_text(root, ("acquisitionSystemInformation", "systemVendor")),
        model_name=_text(root, ("acquisitionSystemInformation", "systemModel")),
        field_strength_t=number(("acquisitionSystemInformation", "systemFieldStrength_T")),
        repetition_time_ms=number(("sequenceParameters", "TR")),
        echo_time_ms=number(("sequenceParameters", "TE")),
        flip_angle_deg=number(("sequenceParameters", "flipAngle_deg")),
        protocol_name=_text(root, ("measurementInformation", "protocolName")),
    )


def _text(root: etree.Element, fields: tuple[str, ...]) -> str | None:
    """The stripped text of the first element at ``fields``, or None if absent or empty."""
    try:
        from fastmri.data.mri_data import et_query  # imported here: fastmri loads torch

        text = et_query(root, list(fields))
    except RuntimeError:
        return None
    text = text.strip()
    return text if text and text != "None" else None


def _number(root: etree.Element, fields: tuple[str, ...], source: str | Path | None) -> float | None:
    """A positive finite number at ``fields``; None when absent or zero; IreconError otherwise."""
    text = _text(root, fields)
    if text is None:
        return None
    name = "/".join(fields)
    try:
        value = float(text)
    except ValueError:
        raise IreconError(f"ismrmrd_header field {name} is not a number: {text!r}", source) from None
    if value == 0:
        return None
    if not math.isfinite(value) or value < 0:
        raise IreconError(f"ismrmrd_header field {name} is not a positive number: {text!r}", source)
    return value


def write_header_xml(
    encoding_size: Sequence[int],
    recon_size: Sequence[int],
    center: int,
    maximum: int,
    field_of_view_mm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> bytes:
    """Return a minimal namespaced ISMRMRD header holding the fields fastMRI reads.

    ``encoding_size`` and ``recon_size`` are (x, y, z); ``center`` and ``maximum`` are the
    ``kspace_encoding_step_1`` limits, so ``padding_left = y // 2 - center`` and
    ``padding_right = padding_left + maximum + 1``. ``field_of_view_mm`` (encoded, recon), each
    (x, y, z) in mm, adds the fields that give exports their voxel spacing.
    """
    if len(encoding_size) != 3 or len(recon_size) != 3:
        raise ValueError("encoding_size and recon_size must be (x, y, z)")

    def element(parent: etree.Element, tag: str, text: int | None = None) -> etree.Element:
        child = etree.SubElement(parent, f"{{{ISMRMRD_NAMESPACE}}}{tag}")
        if text is not None:
            child.text = str(int(text))
        return child

    root = etree.Element(f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader")
    encoding = element(root, "encoding")
    for index, (space, size) in enumerate((("encodedSpace", encoding_size), ("reconSpace", recon_size))):
        space_element = element(encoding, space)
        matrix = element(space_element, "matrixSize")
        for axis, value in zip("xyz", size):
            element(matrix, axis, value)
        if field_of_view_mm is not None:
            fov = element(space_element, "fieldOfView_mm")
            for axis, value in zip("xyz", field_of_view_mm[index]):
                etree.SubElement(fov, f"{{{ISMRMRD_NAMESPACE}}}{axis}").text = f"{float(value):g}"
    step1 = element(element(encoding, "encodingLimits"), "kspace_encoding_step_1")
    element(step1, "minimum", 0)
    element(step1, "maximum", maximum)
    element(step1, "center", center)
    return etree.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=ISMRMRD_NAMESPACE)


def fastmri_fields(raw: object, path: Path) -> tuple[tuple[int, int, int], tuple[int, int, int], int, int]:
    """(encoded size, recon size, step-1 centre, step-1 maximum): the header fields fastMRI's
    ``SliceDataset._retrieve_metadata`` reads, each missing or bad one named in one line."""
    root = parse_header(raw, path)  # type: ignore[arg-type]

    def query(fields: tuple[str, ...]) -> int:
        name = "/".join(fields)
        try:
            from fastmri.data.mri_data import et_query  # imported here: fastmri loads torch

            text = et_query(root, list(fields))
        except RuntimeError:
            raise IreconError(f"ismrmrd_header lacks {name} (namespace {ISMRMRD_NAMESPACE})", path) from None
        try:
            return int(text)
        except ValueError:
            raise IreconError(f"ismrmrd_header field {name} is not an integer: {text!r}", path) from None

    encoding_size = tuple(query(_ENCODED + (axis,)) for axis in "xyz")
    recon_size = tuple(query(_RECON_MATRIX + (axis,)) for axis in "xyz")
    center = query(_LIMITS + ("center",))
    maximum = query(_LIMITS + ("maximum",))
    for name, size in (("encodedSpace", encoding_size), ("reconSpace", recon_size)):
        if min(size) < 1:
            raise IreconError(f"ismrmrd_header {name} matrix size {size} has a non-positive entry", path)
    return encoding_size, recon_size, center, maximum  # type: ignore[return-value]

"""ISMRMRD XML headers for imported files, through the ``ismrmrd`` package's schema classes.

An ISMRMRD file's own header is carried over; what fastMRI's ``SliceDataset`` reads is made
sure of: the ``kspace_encoding_step_1`` limits (from the counters when absent) and a recon matrix
no larger than the encoded one. A Siemens twix header is turned into a new ISMRMRD header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ismrmrd import xsd

from irecon.data.header import parse_header
from irecon.errors import IreconError
from irecon.rawdata.scan import Encoding

Header = Any  # ismrmrd.xsd.ismrmrdHeader


def parse(xml: str | bytes, path: Path) -> Header:
    """The header as ``ismrmrd.xsd`` objects; one line naming ``path`` when it breaks the schema."""
    try:
        return xsd.CreateFromDocument(xml)
    except Exception as exc:  # xsdata raises several parser error types
        raise IreconError(f"the ISMRMRD XML header does not follow the ISMRMRD schema ({exc})", path) from None


def encoding_of(header: Header, path: Path) -> Encoding:
    """The first encoding's matrices and centre counters; refuses non-Cartesian trajectories."""
    if not header.encoding:
        raise IreconError("the ISMRMRD header has no encoding", path)
    enc = header.encoding[0]
    trajectory = enc.trajectory.value if hasattr(enc.trajectory, "value") else str(enc.trajectory)
    if trajectory != "cartesian":
        raise IreconError(
            f"{trajectory} trajectory: only Cartesian k-space can be imported (fastMRI stores Cartesian k-space)",
            path,
        )
    encoded = _matrix(enc.encodedSpace.matrixSize)
    recon = _matrix(enc.reconSpace.matrixSize)
    limits = enc.encodingLimits
    step1 = getattr(limits, "kspace_encoding_step_1", None)
    step2 = getattr(limits, "kspace_encoding_step_2", None)
    return Encoding(
        encoded=encoded,
        recon=recon,
        encoded_fov_mm=_fov(enc.encodedSpace.fieldOfView_mm),
        recon_fov_mm=_fov(enc.reconSpace.fieldOfView_mm),
        step1_center=int(step1.center) if step1 is not None else encoded[1] // 2,
        step2_center=int(step2.center) if step2 is not None else encoded[2] // 2,
        step1_maximum=int(step1.maximum) if step1 is not None else -1,
    )


def fastmri_header(header: Header, encoding: Encoding) -> tuple[str, list[str]]:
    """The header to write, with the notes of what was changed for fastMRI."""
    notes: list[str] = []
    enc = header.encoding[0]
    limits = enc.encodingLimits
    if limits.kspace_encoding_step_1 is None:
        limits.kspace_encoding_step_1 = xsd.limitType(
            minimum=0, maximum=encoding.step1_maximum, center=encoding.step1_center
        )
        notes.append(f"kspace_encoding_step_1 limits taken from the counters (centre {encoding.step1_center})")
    recon = enc.reconSpace.matrixSize
    x, y = min(recon.x, encoding.encoded[0]), min(recon.y, encoding.encoded[1])
    if (x, y) != (recon.x, recon.y):
        notes.append(f"recon matrix {recon.x}x{recon.y} clipped to the encoded {x}x{y}")
        recon.x, recon.y = x, y
    return to_xml(header), notes


def twix_header(encoding: Encoding, facts: dict[str, Any]) -> str:
    """A new ISMRMRD header for a Siemens scan: encoding, limits, vendor, TR/TE/flip from ``facts``."""
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=encoding.step1_maximum, center=encoding.step1_center),
        kspace_encoding_step_2=xsd.limitType(
            minimum=0, maximum=max(encoding.encoded[2] - 1, 0), center=encoding.step2_center
        ),
    )

    def space(matrix: tuple[int, int, int], fov: tuple[float, float, float]) -> Any:
        return xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=matrix[0], y=matrix[1], z=matrix[2]),
            fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
        )

    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=int(facts.get("frequency", 0))),
        encoding=[
            xsd.encodingType(
                encodedSpace=space(encoding.encoded, encoding.encoded_fov_mm),
                reconSpace=space(encoding.recon, encoding.recon_fov_mm),
                encodingLimits=limits,
                trajectory=xsd.trajectoryType.CARTESIAN,
            )
        ],
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="Siemens",
            systemModel=facts.get("model"),
            systemFieldStrength_T=facts.get("field_strength"),
            receiverChannels=facts.get("coils"),
        ),
        sequenceParameters=xsd.sequenceParametersType(
            TR=[facts["tr_ms"]] if facts.get("tr_ms") else [],
            TE=[facts["te_ms"]] if facts.get("te_ms") else [],
            flipAngle_deg=[facts["flip_deg"]] if facts.get("flip_deg") else [],
        ),
    )
    position = facts.get("patient_position")
    if position in {p.value for p in xsd.patientPositionType}:
        header.measurementInformation = xsd.measurementInformationType(
            protocolName=facts.get("protocol"), patientPosition=xsd.patientPositionType(position)
        )
    return to_xml(header)


def to_xml(header: Header) -> str:
    """Serialise, and check the result parses as irecon reads headers."""
    xml = xsd.ToXML(header)
    parse_header(xml)
    return xml


def _matrix(matrix: Any) -> tuple[int, int, int]:
    return (int(matrix.x), int(matrix.y), int(matrix.z))


def _fov(fov: Any) -> tuple[float, float, float]:
    return (float(fov.x), float(fov.y), float(fov.z))

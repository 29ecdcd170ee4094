"""Siemens twix raw data (``.dat``, VB and VD/VE) read through ``twixtools``.

The image scans of the file's last measurement are kept (twixtools' ``is_image_scan``: no noise,
phase correction, feedback or reference-only scans); its noise-adjust scans, if any, are kept for
prewhitening. The protocol's encoding and field of view become an ISMRMRD header.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import twixtools

from irecon.errors import IreconError
from irecon.rawdata.header import twix_header
from irecon.rawdata.scan import Encoding, RawScan, ReadoutList
from irecon.text import plural

UNREADABLE = "not a readable Siemens twix file (not twix, truncated or corrupt)"
TRUNCATED = "truncated Siemens twix file"
# sKSpace.ucTrajectory values of the Siemens protocol.
_TRAJECTORIES = {1: "cartesian", 2: "radial", 4: "spiral", 8: "propeller"}
_DIMENSION_3D = 4  # sKSpace.ucDimension of a 3-D scan
_PARTIAL_FOURIER_OFF = 16  # sKSpace.ucPhasePartialFourier of 8/8


def read_twix(path: Path) -> RawScan:
    """The last measurement's image readouts, noise samples and an ISMRMRD header."""
    if not path.is_file():
        raise IreconError("no such file", path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            measurements = twixtools.read_twix(str(path), verbose=False, parse_pmu=False)
    except Exception:  # twixtools raises assorted errors (struct, index, value) on bad files
        raise IreconError(UNREADABLE, path) from None
    if not measurements or not measurements[-1].get("mdb"):
        raise IreconError(f"{UNREADABLE}: no measurement data", path)
    measurement = measurements[-1]
    protocol = measurement["hdr"]
    kspace = _get(protocol, "MeasYaps", "sKSpace") or {}
    trajectory = _TRAJECTORIES.get(int(kspace.get("ucTrajectory", 1)), "non-Cartesian")
    if trajectory != "cartesian":
        raise IreconError(f"{trajectory} trajectory: only Cartesian k-space can be imported", path)
    images = [mdb for mdb in measurement["mdb"] if mdb.is_image_scan()]
    if not images:
        raise IreconError("the last measurement has no image scans", path)
    if any(mdb.is_flag_set("REFLECT") for mdb in images):
        raise IreconError(
            "EPI readouts (reflected lines): EPI needs ramp-sampling and phase correction, which import does not do",
            path,
        )
    if not any(mdb.is_flag_set("LASTSCANINMEAS") for mdb in measurement["mdb"]):
        raise IreconError(f"{TRUNCATED}: the measurement's last scan is missing", path)
    lines = ReadoutList()
    shape = None
    try:
        for number, mdb in enumerate(images):
            data = np.asarray(mdb.data)
            if data.size == 0:
                raise IreconError(f"{TRUNCATED}: image scan {number} of {len(images)} has no data", path)
            shape = data.shape if shape is None else shape
            if data.shape != shape:
                raise IreconError(
                    f"image scans differ in size ({shape[0]} x {shape[1]} and {data.shape[0]} x {data.shape[1]} "
                    "coils x samples)",
                    path,
                )
            counter = mdb.mdh.Counter
            lines.add(
                data,
                step1=counter.Lin,
                step2=counter.Par,
                slice=counter.Sli,
                average=counter.Ave,
                center_sample=mdb.mdh.CenterCol,
                calibration_only=False,
                contrast=counter.Eco,
                repetition=counter.Rep,
                phase=counter.Phs,
                set=counter.Set,
            )
        noise_scans = [np.asarray(m.data).T for m in measurement["mdb"] if m.is_flag_set("NOISEADJSCAN")]
    except (ValueError, IndexError, OSError):
        raise IreconError(f"{UNREADABLE}: a scan cannot be read", path) from None
    readouts = lines.stack()
    encoding = _encoding(protocol, kspace, images[0], readouts)
    facts = _facts(protocol, readouts.data.shape[1])
    xml = twix_header(encoding, facts)
    noise = np.concatenate(noise_scans) if noise_scans else None
    if noise is not None and noise.shape[1] != readouts.data.shape[1]:
        noise = None
    notes = [f"Siemens {facts.get('model') or 'scanner'}: the last of {plural(len(measurements), 'measurement')}"]
    return RawScan(readouts, encoding, xml, noise, notes)


def _encoding(protocol: dict[str, Any], kspace: dict[str, Any], first: Any, readouts: Any) -> Encoding:
    """Matrix sizes from the protocol (``iNoOfFourier*``, ``lBaseResolution``), centres from the scans."""
    meas = protocol.get("Meas", {})
    samples = int(readouts.data.shape[-1])
    columns = int(meas.get("iNoOfFourierColumns") or samples)
    lines = max(
        int(meas.get("iNoOfFourierLines") or kspace.get("lPhaseEncodingLines", 0)), int(readouts.step1.max()) + 1
    )
    three_d = int(kspace.get("ucDimension", 2)) == _DIMENSION_3D
    partitions = 1
    if three_d:
        partitions = max(
            int(meas.get("iNoOfFourierPartitions") or kspace.get("lPartitions", 1)), int(readouts.step2.max()) + 1
        )
    oversampling = float(
        _get(protocol, "Dicom", "flReadoutOSFactor") or columns / max(int(kspace.get("lBaseResolution", columns)), 1)
    )
    base = int(kspace.get("lBaseResolution") or round(columns / oversampling))
    slice_ = (_get(protocol, "MeasYaps", "sSliceArray", "asSlice") or [{}])[0]
    readout_fov = float(slice_.get("dReadoutFOV", 0.0))
    phase_fov = float(slice_.get("dPhaseFOV", readout_fov))
    thickness = float(slice_.get("dThickness", 0.0))
    partial_fourier = int(kspace.get("ucPhasePartialFourier", _PARTIAL_FOURIER_OFF)) != _PARTIAL_FOURIER_OFF
    recon_lines = min(lines, round(base * phase_fov / readout_fov)) if readout_fov else lines
    return Encoding(
        encoded=(columns, lines, partitions),
        recon=(min(base, columns), recon_lines, partitions),
        encoded_fov_mm=(readout_fov * oversampling, phase_fov, thickness),
        recon_fov_mm=(readout_fov, phase_fov, thickness),
        step1_center=int(first.mdh.CenterLin),
        step2_center=int(first.mdh.CenterPar) if three_d else 0,
        step1_maximum=int(readouts.step1.max()) if partial_fourier else lines - 1,
    )


def _facts(protocol: dict[str, Any], coils: int) -> dict[str, Any]:
    """Scanner and sequence facts for the ISMRMRD header (None where the protocol lacks them)."""

    def first(*keys: str) -> float | None:
        values = _get(protocol, "MeasYaps", *keys)
        return float(values[0]) if isinstance(values, list) and values else None

    tr, te = first("alTR"), first("alTE")
    return {
        "model": _get(protocol, "Dicom", "ManufacturersModelName"),
        "field_strength": _get(protocol, "Dicom", "flMagneticFieldStrength"),
        "frequency": _get(protocol, "Dicom", "lFrequency") or 0,
        "tr_ms": None if tr is None else tr / 1000,
        "te_ms": None if te is None else te / 1000,
        "flip_deg": first("adFlipAngleDegree"),
        "protocol": _get(protocol, "MeasYaps", "tProtocolName"),
        "patient_position": _get(protocol, "Dicom", "tPatientPosition"),
        "coils": coils,
    }


def _get(tree: dict[str, Any], *keys: str) -> Any:
    """A nested protocol value, or None when any key on the way is absent."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree

"""ISMRMRD raw files written with the ``ismrmrd`` package's own API, for the import tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

ismrmrd = pytest.importorskip("ismrmrd", reason="the raw extra (irecon[raw]: ismrmrd, twixtools) is not installed")


def header(height: int, width: int, depth: int = 1, trajectory: str = "cartesian", limits: bool = True) -> str:
    """An ISMRMRD header: encoded (height, width, depth), recon (height // 2, width, depth)."""
    xsd = ismrmrd.xsd

    def space(x: int) -> object:
        return xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=x, y=width, z=depth),
            fieldOfView_mm=xsd.fieldOfViewMm(x=2.0 * x, y=2.0 * width, z=3.0 * depth),
        )

    encoding_limits = xsd.encodingLimitsType()
    if limits:
        encoding_limits.kspace_encoding_step_1 = xsd.limitType(minimum=0, maximum=width - 1, center=width // 2)
        encoding_limits.kspace_encoding_step_2 = xsd.limitType(minimum=0, maximum=depth - 1, center=depth // 2)
    return xsd.ToXML(
        xsd.ismrmrdHeader(
            experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
            encoding=[
                xsd.encodingType(
                    encodedSpace=space(height),
                    reconSpace=space(height // 2),
                    encodingLimits=encoding_limits,
                    trajectory=xsd.trajectoryType(trajectory),
                )
            ],
        )
    )


def random_kspace(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Complex64 noise of ``shape``: every sample distinct, so a misplaced line shows."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def acquisition(data: np.ndarray, flags: Iterable[int] = (), **counters: int) -> object:
    """One readout ``(coils, samples)`` centred at its middle sample, with the given counters and flags."""
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data), center_sample=data.shape[1] // 2)
    for name, value in counters.items():
        setattr(acq.idx, name, value)
    for flag in flags:
        acq.set_flag(flag)
    return acq


def write_file(path: Path, xml: str, acquisitions: Iterable[object]) -> Path:
    """An ISMRMRD HDF5 file with ``xml`` and the acquisitions, in order."""
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(xml)
        for acq in acquisitions:
            dataset.append_acquisition(acq)
    return path


def write_2d(path: Path, kspace: np.ndarray, lines: Iterable[int] | None = None, **counters: int) -> Path:
    """Multi-slice 2-D ``kspace (slices, coils, H, W)``: one readout per (slice, acquired line)."""
    slices, _, height, width = kspace.shape
    chosen = range(width) if lines is None else list(lines)
    acqs = [
        acquisition(kspace[s, :, :, y], kspace_encode_step_1=y, slice=s, **counters)
        for s in range(slices)
        for y in chosen
    ]
    return write_file(path, header(height, width), acqs)


def write_3d(path: Path, kspace: np.ndarray, lines: Iterable[int] | None = None) -> Path:
    """3-D ``kspace (partitions, coils, H, W)``: one readout per (partition, acquired line)."""
    depth, _, height, width = kspace.shape
    chosen = range(width) if lines is None else list(lines)
    acqs = [
        acquisition(kspace[z, :, :, y], kspace_encode_step_1=y, kspace_encode_step_2=z)
        for z in range(depth)
        for y in chosen
    ]
    return write_file(path, header(height, width, depth), acqs)

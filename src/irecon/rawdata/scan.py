"""What a raw-data reader gives the assembler: readouts with their encoding counters, and the encoding.

Both readers (ISMRMRD and Siemens twix) turn their files into a :class:`RawScan`, so the placement
of lines into fastMRI k-space, the mask and the written file are the same for every vendor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Counters that split a scan into separate volumes (each value its own output file).
VOLUME_COUNTERS = ("contrast", "repetition", "phase", "set")


@dataclass(frozen=True)
class Encoding:
    """The Cartesian encoding of a scan: matrix sizes (x, y, z) and the k-space centre counters."""

    encoded: tuple[int, int, int]
    recon: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    step1_center: int
    step2_center: int
    step1_maximum: int
    """The last ``kspace_encode_step_1`` of the full matrix (the header's limit, else the last one met)."""


@dataclass
class Readouts:
    """Image readouts, one row each: ``data`` is complex64 ``(N, coils, samples)``; the rest ``(N,)`` ints."""

    data: np.ndarray
    step1: np.ndarray
    step2: np.ndarray
    slice: np.ndarray
    average: np.ndarray
    center_sample: np.ndarray
    calibration_only: np.ndarray
    counters: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.data.shape[0])


@dataclass
class RawScan:
    """One measurement as read: its image readouts, noise samples ``(n, coils)`` or None, and the header."""

    readouts: Readouts
    encoding: Encoding
    header_xml: str
    noise: np.ndarray | None
    notes: list[str] = field(default_factory=list)


class ReadoutList:
    """Collects readouts one by one (as readers meet them) and stacks them into :class:`Readouts`."""

    def __init__(self) -> None:
        self.data: list[np.ndarray] = []
        self.columns: dict[str, list[int]] = {
            name: []
            for name in ("step1", "step2", "slice", "average", "center_sample", "calibration_only", *VOLUME_COUNTERS)
        }

    def add(self, data: np.ndarray, **counters: int) -> None:
        """One readout ``(coils, samples)`` with every counter of :attr:`columns`."""
        self.data.append(np.asarray(data, dtype=np.complex64))
        for name, column in self.columns.items():
            column.append(int(counters[name]))

    def __len__(self) -> int:
        return len(self.data)

    def stack(self) -> Readouts:
        """The collected readouts as arrays (the caller has checked they share one shape)."""
        ints = {name: np.asarray(values, dtype=np.int64) for name, values in self.columns.items()}
        return Readouts(
            data=np.stack(self.data),
            step1=ints["step1"],
            step2=ints["step2"],
            slice=ints["slice"],
            average=ints["average"],
            center_sample=ints["center_sample"],
            calibration_only=ints["calibration_only"].astype(bool),
            counters={name: ints[name] for name in VOLUME_COUNTERS},
        )

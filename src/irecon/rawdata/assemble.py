"""Encoding counters to fastMRI k-space: lines placed, averages averaged, 3-D turned into slices, a mask.

fastMRI stores k-space as ``(slices, coils, readout, phase)`` with the readout oversampling kept.
A readout with ``kspace_encode_step_1 = k`` goes to column ``k - center + W // 2`` of the encoded
width ``W``, so the header's ``kspace_encoding_step_1`` limits give fastMRI's padding exactly; its
samples go to the rows that put ``center_sample`` at ``H // 2``. 3-D scans are inverse-Fourier
transformed along ``kspace_encode_step_2`` (centred, orthonormal), giving one slice per partition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from irecon.errors import IreconError
from irecon.rawdata.scan import VOLUME_COUNTERS, Encoding, Readouts
from irecon.text import plural


@dataclass
class AssembledVolume:
    """One volume: k-space ``(slices, coils, H, W)`` complex64, the acquired columns and a name suffix."""

    kspace: np.ndarray
    acquired: np.ndarray
    label: str
    counters: dict[str, int]
    averages: int
    notes: list[str]


def whitening_matrix(noise: np.ndarray) -> np.ndarray:
    """``L^-1`` with ``L L^H`` the noise covariance of ``noise`` ``(samples, coils)``: whitened = W @ coils."""
    samples = noise.shape[0]
    covariance = (noise.T @ noise.conj()) / max(samples - 1, 1)  # E[x x^H] over coil vectors x
    try:
        lower = np.linalg.cholesky(covariance.astype(np.complex128))
    except np.linalg.LinAlgError:
        raise IreconError("the noise scan's coil covariance is not positive definite; cannot prewhiten") from None
    return np.linalg.inv(lower).astype(np.complex64)


def assemble(
    readouts: Readouts,
    encoding: Encoding,
    path: Path,
    whitening: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[AssembledVolume]:
    """Every volume of a scan, one per combination of contrast, repetition, phase and set.

    Raises IreconError naming ``path`` for counters outside the encoded matrix, readouts longer
    than the encoded readout, or 3-D data undersampled along ``kspace_encode_step_2`` (the 1-D
    fastMRI mask cannot describe it).
    """
    if len(readouts) == 0:
        raise IreconError("no image readouts (only noise, navigator or calibration data?)", path)
    _check_placement(readouts, encoding, path)
    varying = [name for name in VOLUME_COUNTERS if len(np.unique(readouts.counters[name])) > 1]
    keys = np.stack([readouts.counters[name] for name in varying], axis=1) if varying else np.zeros((len(readouts), 0))
    volumes = []
    for key in np.unique(keys, axis=0) if varying else [np.zeros(0, dtype=np.int64)]:
        rows = np.flatnonzero((keys == key).all(axis=1)) if varying else np.arange(len(readouts))
        counters = {name: int(value) for name, value in zip(varying, key)}
        label = "".join(f"_{name}{value}" for name, value in counters.items())
        volumes.append(_volume(readouts, rows, encoding, path, whitening, progress, label, counters))
    return volumes


def _check_placement(readouts: Readouts, encoding: Encoding, path: Path) -> None:
    height, width, depth = encoding.encoded
    if width > 1 and len(readouts) > 1 and len(np.unique(readouts.step1)) == 1:
        raise IreconError(
            f"all {len(readouts)} readouts have kspace_encode_step_1 = {int(readouts.step1[0])} in an encoded "
            f"matrix of {width} lines: the encoding counters are missing",
            path,
        )
    columns = readouts.step1 - encoding.step1_center + width // 2
    bad = np.flatnonzero((columns < 0) | (columns >= width))
    if bad.size:
        step = int(readouts.step1[bad[0]])
        raise IreconError(
            f"kspace_encode_step_1 {step} lies outside the encoded matrix (y = {width}, centre line "
            f"{encoding.step1_center})",
            path,
        )
    if depth > 1:
        partitions = readouts.step2 - encoding.step2_center + depth // 2
        bad = np.flatnonzero((partitions < 0) | (partitions >= depth))
        if bad.size:
            step = int(readouts.step2[bad[0]])
            raise IreconError(
                f"kspace_encode_step_2 {step} lies outside the encoded matrix (z = {depth}, centre "
                f"partition {encoding.step2_center})",
                path,
            )
    samples = readouts.data.shape[-1]
    starts = height // 2 - readouts.center_sample
    if (starts < 0).any() or (starts + samples > height).any():
        raise IreconError(
            f"readouts of {samples} samples (centre sample {int(readouts.center_sample.max())}) do not fit the "
            f"encoded readout of {height} samples",
            path,
        )


def _volume(
    readouts: Readouts,
    rows: np.ndarray,
    encoding: Encoding,
    path: Path,
    whitening: np.ndarray | None,
    progress: Callable[[int], None] | None,
    label: str,
    counters: dict[str, int],
) -> AssembledVolume:
    """Sum the readouts of ``rows`` into place, divide by the count, and transform partitions."""
    height, width, depth = encoding.encoded
    coils, samples = readouts.data.shape[1:]
    imaging = rows[~readouts.calibration_only[rows]]
    calibration = rows[readouts.calibration_only[rows]]
    slices = np.unique(readouts.slice[rows])
    slice_index = {int(s): i for i, s in enumerate(slices)}
    sums = np.zeros((len(slices), depth, coils, height, width), dtype=np.complex64)
    counts = np.zeros((len(slices), depth, width), dtype=np.int64)
    notes: list[str] = []
    for part, chosen in (("imaging", imaging), ("calibration", calibration)):
        for row in chosen:
            s = slice_index[int(readouts.slice[row])]
            z = int(readouts.step2[row] - encoding.step2_center + depth // 2) if depth > 1 else 0
            y = int(readouts.step1[row] - encoding.step1_center + width // 2)
            if part == "calibration" and counts[s, z, y]:
                continue  # the imaging readout of this line is kept; calibration lines fill gaps only
            x0 = int(height // 2 - readouts.center_sample[row])
            line = readouts.data[row] if whitening is None else whitening @ readouts.data[row]
            sums[s, z, :, x0 : x0 + samples, y] += line
            counts[s, z, y] += 1
        if progress is not None:
            progress(len(chosen))
    if calibration.size:
        notes.append(f"{plural(calibration.size, 'calibration readout')} used where no imaging readout was")
    averages = int(counts.max())
    if averages > 1:
        notes.append(f"up to {averages} averages of a line averaged")
    kspace = sums
    kspace /= np.maximum(counts, 1)[:, :, None, None, :].astype(np.float32)
    acquired_by_partition = counts > 0  # (slices, depth, W)
    if depth > 1:
        columns = acquired_by_partition.any(axis=1)
        if (acquired_by_partition != columns[:, None, :]).any():
            raise IreconError(
                "3-D data undersampled along kspace_encode_step_2: fastMRI's 1-D mask cannot describe it; "
                "only phase-encode (kspace_encode_step_1) undersampling can be imported",
                path,
            )
        kspace = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=1), axis=1, norm="ortho"), axes=1)
        kspace = kspace.astype(np.complex64, copy=False)
        notes.append(f"3-D: {plural(depth, 'partition')} per slab inverse-Fourier transformed into slices")
    acquired = acquired_by_partition.any(axis=1)  # (slices, W)
    union = acquired.any(axis=0)
    if (acquired != union[None, :]).any():
        notes.append("slices sampled different phase-encode lines; the mask is their union")
    kspace = kspace.reshape(len(slices) * depth, coils, height, width).astype(np.complex64, copy=False)
    return AssembledVolume(kspace, union, label, counters, averages, notes)

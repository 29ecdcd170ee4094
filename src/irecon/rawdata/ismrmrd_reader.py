"""ISMRMRD / MRD raw data (HDF5, ``.h5`` or ``.mrd``) read through the ``ismrmrd`` package.

Noise scans are kept apart for prewhitening; navigators, phase correction, feedback, dummy and
phase-stabilisation readouts are left out; parallel-imaging calibration readouts fill lines no
imaging readout has; readouts of other encoding spaces than the first are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import ismrmrd
import numpy as np

from irecon.errors import IreconError
from irecon.rawdata.header import encoding_of, fastmri_header, parse
from irecon.rawdata.scan import VOLUME_COUNTERS, RawScan, ReadoutList
from irecon.text import plural

_LEFT_OUT = {
    "navigator": ismrmrd.ACQ_IS_NAVIGATION_DATA,
    "phase correction": ismrmrd.ACQ_IS_PHASECORR_DATA,
    "feedback": ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    "real-time feedback": ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    "dummy": ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    "surface coil correction": ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    "phase stabilisation": ismrmrd.ACQ_IS_PHASE_STABILIZATION,
    "phase stabilisation reference": ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
}
TRUNCATED = "not a readable ISMRMRD file (not HDF5, truncated or corrupt)"


def count_acquisitions(path: Path) -> int:
    """How many acquisitions the file holds (for a progress bar), reading nothing else."""
    with _open(path) as dataset:
        return _number(dataset, path)


def read_ismrmrd(path: Path, progress: Callable[[int], None] | None = None) -> RawScan:
    """The image readouts, noise samples and header of an ISMRMRD file; one line per problem."""
    with _open(path) as dataset:
        try:
            xml = dataset.read_xml_header()
        except LookupError:
            raise IreconError("no ISMRMRD XML header (dataset/xml)", path) from None
        header = parse(xml, path)
        encoding = encoding_of(header, path)
        count = _number(dataset, path)
        lines, noise, skipped = ReadoutList(), [], {name: 0 for name in (*_LEFT_OUT, "other encoding space")}
        shape = None
        for index in range(count):
            try:
                acq = dataset.read_acquisition(index)
            except (OSError, ValueError, KeyError, RuntimeError):
                raise IreconError(f"acquisition {index} of {count} cannot be read ({TRUNCATED})", path) from None
            if progress is not None:
                progress(1)
            if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                noise.append(np.asarray(acq.data).T)
                continue
            left_out = next((name for name, flag in _LEFT_OUT.items() if acq.is_flag_set(flag)), None)
            if left_out is None and acq.encoding_space_ref != 0:
                left_out = "other encoding space"
            if left_out is not None:
                skipped[left_out] += 1
                continue
            data = np.asarray(acq.data)
            if shape is None:
                shape = data.shape
            elif data.shape != shape:
                raise IreconError(
                    f"acquisition {index} has {data.shape[0]} coils x {data.shape[1]} samples, the first image "
                    f"readout {shape[0]} x {shape[1]}; readouts of one scan must share their size",
                    path,
                )
            if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
                data = data[:, ::-1]
            idx = acq.idx
            calibration_only = acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) and not acq.is_flag_set(
                ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
            )
            lines.add(
                data,
                step1=idx.kspace_encode_step_1,
                step2=idx.kspace_encode_step_2,
                slice=idx.slice,
                average=idx.average,
                center_sample=acq.center_sample,
                calibration_only=calibration_only,
                **{name: getattr(idx, name) for name in VOLUME_COUNTERS},
            )
    if not lines:
        raise IreconError("no image readouts (only noise, navigator or calibration data)", path)
    readouts = lines.stack()
    if encoding.step1_maximum < 0:
        encoding = replace(encoding, step1_maximum=int(readouts.step1.max()))
    xml_out, notes = fastmri_header(header, encoding)
    notes += [f"left out {plural(n, name + ' readout')}" for name, n in skipped.items() if n]
    noise_samples = None
    if noise:
        noise_samples = np.concatenate(noise)
        if noise_samples.shape[1] != readouts.data.shape[1]:
            notes.append(f"noise scan has {noise_samples.shape[1]} coils, the data {readouts.data.shape[1]}: not used")
            noise_samples = None
    return RawScan(readouts, encoding, xml_out, noise_samples, notes)


class _open:
    """``ismrmrd.Dataset`` opened read-only; HDF5 and layout problems become one line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> ismrmrd.Dataset:
        if not self.path.is_file():
            raise IreconError("no such file", self.path)
        try:
            with h5py.File(self.path, "r") as hf:
                if "dataset" not in hf:
                    raise IreconError("no ISMRMRD 'dataset' group (is this an ISMRMRD file?)", self.path)
            self.dataset = ismrmrd.Dataset(str(self.path), "dataset", mode="r")
        except OSError:
            raise IreconError(TRUNCATED, self.path) from None
        return self.dataset

    def __exit__(self, *exc: object) -> None:
        self.dataset.close()


def _number(dataset: ismrmrd.Dataset, path: Path) -> int:
    try:
        return int(dataset.number_of_acquisitions())
    except LookupError:
        raise IreconError("no acquisitions (dataset/data)", path) from None
    except (OSError, KeyError):
        raise IreconError(TRUNCATED, path) from None

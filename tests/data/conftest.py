"""Tiny fastMRI-format files (3 slices of 32x24 k-space) written with h5py for the data tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from irecon.data.header import write_header_xml

NUM_SLICES = 3
KSPACE_SHAPE = (32, 24)
RECON_SHAPE = (16, 16)
NUM_COILS = 4
# padding_left = 24 // 2 - 11 = 1, padding_right = 1 + 22 + 1 = 24, like fastMRI knee files.
CENTER, MAXIMUM = 11, 22
PADDING = (1, 24)

WriteVolume = Callable[..., Path]


@dataclass(frozen=True)
class Layout:
    """The sizes every fixture file has, so tests can assert on them without importing conftest."""

    num_slices: int = NUM_SLICES
    kspace_shape: tuple[int, int] = KSPACE_SHAPE
    recon_shape: tuple[int, int] = RECON_SHAPE
    num_coils: int = NUM_COILS
    center: int = CENTER
    maximum: int = MAXIMUM
    padding: tuple[int, int] = PADDING


def write_volume(
    path: Path,
    challenge: str = "singlecoil",
    *,
    num_slices: int = NUM_SLICES,
    num_coils: int = NUM_COILS,
    test_style: bool = False,
    seed: int = 0,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one small fastMRI-style volume: k-space, target or mask, header and attrs."""
    rng = np.random.default_rng(seed)
    height, width = KSPACE_SHAPE
    lead = (num_slices,) if challenge == "singlecoil" else (num_slices, num_coils)
    kspace = rng.standard_normal(lead + KSPACE_SHAPE) + 1j * rng.standard_normal(lead + KSPACE_SHAPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as hf:
        hf.create_dataset(
            "ismrmrd_header",
            data=write_header_xml((height, width, 1), (*RECON_SHAPE, 1), CENTER, MAXIMUM),
        )
        if test_style:
            mask = np.zeros(width, dtype=bool)
            mask[::4] = True
            mask[width // 2 - 2 : width // 2 + 2] = True
            hf.create_dataset("kspace", data=(kspace * mask).astype(np.complex64))
            hf.create_dataset("mask", data=mask)
            hf.attrs.update(acceleration=4, num_low_frequency=4)
        else:
            hf.create_dataset("kspace", data=kspace.astype(np.complex64))
            target = rng.random((num_slices, *RECON_SHAPE)).astype(np.float32)
            key = "reconstruction_esc" if challenge == "singlecoil" else "reconstruction_rss"
            hf.create_dataset(key, data=target)
            if challenge == "singlecoil":
                hf.create_dataset("reconstruction_rss", data=target)
            hf.attrs.update(max=float(target.max()) if target.size else 1.0, norm=float(np.linalg.norm(target)))
        hf.attrs.update(
            acquisition="CORPD_FBK" if challenge == "singlecoil" else "AXT2",
            patient_id=f"synthetic{seed:04d}",
        )
        if attrs:
            hf.attrs.update(attrs)
    return path


@pytest.fixture
def layout() -> Layout:
    return Layout()


@pytest.fixture
def volume_writer() -> WriteVolume:
    """The writer itself, for tests that need a variant of the standard files."""
    return write_volume


@pytest.fixture
def singlecoil_file(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "singlecoil" / "file1000001.h5", "singlecoil")


@pytest.fixture
def multicoil_file(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "multicoil" / "file1000002.h5", "multicoil", seed=1)


@pytest.fixture
def test_style_file(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "test" / "file1000003.h5", "singlecoil", test_style=True, seed=2)


@pytest.fixture
def edit_file() -> Callable[[Path, Callable[[h5py.File], None]], Path]:
    """Open a written file read-write and let a test break it in one specific way."""

    def edit(path: Path, change: Callable[[h5py.File], None]) -> Path:
        with h5py.File(path, "r+") as hf:
            change(hf)
        return path

    return edit

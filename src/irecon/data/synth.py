"""Synthetic fastMRI-format volumes, so irecon can be trained and tested without the real data set.

Each file holds one volume in the layout of the fastMRI knee data (``kspace``, ``ismrmrd_header``,
targets or a test ``mask``, attrs), readable by ``fastmri.data.SliceDataset``. The content is random
but anatomy-like and varies from volume to volume and smoothly from slice to slice:

* a body made of a few large soft-edged ellipses, with inner structures of several sizes and
  intensities painted over it; every structure is the cross-section of a 3-D ellipsoid that drifts
  and shrinks along the slice axis, so neighbouring slices are similar and far ones are not;
* multiplicative texture from filtered noise at three scales, also smooth along the slice axis;
* small additive features (dots and thin lines) a few pixels across, present on a few slices;
* a smooth image phase (a quadratic polynomial whose coefficients change with the slice);
* multi-coil: smooth complex coil sensitivities, Gaussian bumps around coils placed on a ring;
* complex Gaussian k-space noise.

The object lies inside the recon box (centre crop of size ``recon_size``) of the image, which is the
central half of the 2x-oversampled readout for the default 640x368 k-space and 320x320 target.

File names are ``synth_<split>_<seed>_<index:03d>.h5``. The content of a file depends only on the
arguments and its name (split, seed, index); the anatomy does not depend on ``challenge``, so the
single- and multi-coil files of one name show the same object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from irecon.data.header import write_header_xml
from irecon.data.masks import MaskSpec, make_mask, seed_for_file
from irecon.data.phantom import anatomy, coil_maps
from irecon.data.volumes import CHALLENGES
from irecon.errors import IreconError, option
from irecon.files import atomic_write, check_writable_folder

SPLITS = ("train", "val", "test")
ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK")
MIN_SIZE = 8
PIXEL_SPACING_MM = 0.5  # in-plane spacing of the recon grid written to the header (knee-like)
SLICE_THICKNESS_MM = 3.0


def synth_filename(split: str, seed: int, index: int) -> str:
    """File name of volume ``index`` of ``split`` for ``seed``: ``synth_<split>_<seed>_<index:03d>.h5``."""
    return f"synth_{split}_{seed}_{index:03d}.h5"


def synthesize(
    out_dir: str | Path,
    *,
    challenge: str = "singlecoil",
    split: str = "train",
    volumes: int = 4,
    slices: int = 8,
    coils: int = 4,
    kspace_size: tuple[int, int] = (640, 368),
    recon_size: tuple[int, int] = (320, 320),
    acceleration: int = 4,
    center_fraction: float = 0.08,
    mask_type: str = "random",
    noise: float = 0.02,
    seed: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``volumes`` synthetic fastMRI files into ``out_dir`` and return their paths.

    ``challenge`` is "singlecoil" (k-space ``(slices, H, W)``, target ``reconstruction_esc``) or
    "multicoil" (k-space ``(slices, coils, H, W)``, target ``reconstruction_rss``); ``coils`` is used
    only for multicoil. ``split`` "train" and "val" store fully sampled k-space and the target
    computed from it as fastMRI does (magnitude or root-sum-of-squares of the centred inverse FFT,
    centre-cropped to ``recon_size``); "test" stores k-space undersampled with a fastMRI mask of
    ``mask_type``/``center_fraction``/``acceleration`` (seeded by the file name, the same for all
    slices), the 1-D ``mask`` and attrs ``acceleration``/``num_low_frequency``, and no target.
    ``noise`` is the relative noise level: the standard deviation of the complex k-space noise
    (``E|n|^2 = sigma^2``) is ``noise`` times the RMS of the noiseless k-space of the volume
    (equal to the RMS of its noiseless coil images over the whole field of view).
    The ``ismrmrd_header`` (``irecon.data.header.write_header_xml``) gives encoded size
    ``(H, W, 1)``, recon size ``(rh, rw, 1)`` and phase-encode limits ``center = W // 2``,
    ``maximum = W - 1``, so ``SliceDataset`` reports ``padding_left = 0``, ``padding_right = W``.

    Every argument is checked before anything is written; bad ones, and an existing file when
    ``overwrite`` is false, raise ``IreconError``. Files appear atomically (written under a
    temporary name in ``out_dir``, then renamed).
    """
    kspace_hw, recon_hw = _validate(
        challenge,
        split,
        volumes,
        slices,
        coils,
        kspace_size,
        recon_size,
        acceleration,
        center_fraction,
        mask_type,
        noise,
        seed,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IreconError("exists and is not a directory", out)
    check_writable_folder(out, create=False)
    names = [synth_filename(split, seed, i) for i in range(volumes)]
    if not overwrite:
        for name in names:
            if (out / name).exists():
                raise IreconError("file exists; pass «overwrite» to replace it", out / name)

    width = kspace_hw[1]
    spacing = PIXEL_SPACING_MM
    field_of_view = (
        (kspace_hw[0] * spacing, recon_hw[1] * spacing, SLICE_THICKNESS_MM),
        (recon_hw[0] * spacing, recon_hw[1] * spacing, SLICE_THICKNESS_MM),
    )
    header = write_header_xml(
        (*kspace_hw, 1), (*recon_hw, 1), center=width // 2, maximum=width - 1, field_of_view_mm=field_of_view
    )
    mask_spec = _mask_spec(mask_type, center_fraction, acceleration, kspace_hw) if split == "test" else None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IreconError(f"cannot create directory: {exc.strerror or exc}", out) from exc

    n_coils = coils if challenge == "multicoil" else 0
    paths = []
    for index, name in enumerate(names):
        root = np.random.SeedSequence([seed, SPLITS.index(split), index])
        anatomy_ss, coil_ss, noise_ss = root.spawn(3)
        acquisition = ACQUISITIONS[index % len(ACQUISITIONS)]
        image = anatomy(
            np.random.default_rng(anatomy_ss), slices, recon_hw, fat_suppressed=acquisition == "CORPDFS_FBK"
        )
        maps = coil_maps(np.random.default_rng(coil_ss), n_coils, slices, recon_hw) if n_coils else None
        kspace = _kspace(image, maps, kspace_hw, noise, np.random.default_rng(noise_ss))
        datasets: dict[str, Any] = {"kspace": kspace}
        attrs: dict[str, Any] = {
            "acquisition": acquisition,
            "patient_id": f"synth-{split}-{seed}-{index:03d}",
        }
        if mask_spec is None:
            target = _target(kspace, recon_hw)
            datasets["reconstruction_esc" if challenge == "singlecoil" else "reconstruction_rss"] = target
            attrs["max"] = float(target.max())
            attrs["norm"] = float(np.linalg.norm(target))
        else:
            mask, num_low = _sample_mask(mask_spec, kspace_hw, name)
            kspace *= mask
            datasets["mask"] = mask
            attrs["acceleration"] = int(acceleration)
            attrs["num_low_frequency"] = int(num_low)
        datasets["ismrmrd_header"] = np.bytes_(header)
        path = out / name
        _write_atomic(path, datasets, attrs, overwrite)
        paths.append(path)
    return paths


def _validate(
    challenge: str,
    split: str,
    volumes: int,
    slices: int,
    coils: int,
    kspace_size: Sequence[int],
    recon_size: Sequence[int],
    acceleration: int,
    center_fraction: float,
    mask_type: str,
    noise: float,
    seed: int,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Check every argument (so nothing is written for a bad call); return the two sizes as int pairs."""
    if challenge not in CHALLENGES:
        raise IreconError(f"unknown challenge {challenge!r} (expected one of {', '.join(CHALLENGES)})")
    if split not in SPLITS:
        raise IreconError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    for label, value in (("volumes", volumes), ("slices", slices), ("coils", coils)):
        if not _is_int(value) or value < 1:
            raise IreconError(f"{option(label)} must be at least 1, got {value!r}")
    if not _is_int(seed) or seed < 0:
        raise IreconError(f"«seed» must not be negative, got {seed!r}")
    kspace_hw = _size_pair("kspace size", kspace_size)
    recon_hw = _size_pair("recon size", recon_size)
    if recon_hw[0] > kspace_hw[0] or recon_hw[1] > kspace_hw[1]:
        raise IreconError(f"recon size {recon_hw} is larger than the k-space size {kspace_hw}")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not math.isfinite(noise) or noise < 0:
        raise IreconError(f"«noise» must be a finite number >= 0, got {noise!r}")
    MaskSpec(mask_type, (center_fraction,), (acceleration,)).validate()  # the messages of train and reconstruct
    width = kspace_hw[1]
    num_low = round(width * center_fraction)
    if num_low < 1:
        raise IreconError(f"center fraction {center_fraction} keeps no line of {width} k-space columns")
    if num_low >= width / acceleration:
        raise IreconError(
            f"center fraction {center_fraction} ({num_low} lines) leaves no outer lines at "
            f"acceleration {acceleration} ({width / acceleration:g} of {width} lines)"
        )
    return kspace_hw, recon_hw


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _size_pair(label: str, size: Sequence[int]) -> tuple[int, int]:
    """Return ``size`` as ``(height, width)`` ints, or raise for anything else or a side < MIN_SIZE."""
    try:
        pair = tuple(size)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise IreconError(f"{label} must be two integers (height, width), got {size!r}")
    if min(pair) < MIN_SIZE:
        raise IreconError(f"{label} {pair} is below the minimum of {MIN_SIZE} per side")
    return int(pair[0]), int(pair[1])


def _mask_spec(mask_type: str, center_fraction: float, acceleration: int, kspace_hw: tuple[int, int]) -> MaskSpec:
    """The test-split mask spec, tried once so an impossible combination fails before anything is written."""
    spec = MaskSpec(mask_type, (float(center_fraction),), (int(acceleration),))
    mask, _ = make_mask(spec, kspace_hw[1], seed=0)
    if not mask.any():
        raise IreconError(f"{mask_type} mask samples no k-space line")
    return spec


def _sample_mask(spec: MaskSpec, kspace_hw: tuple[int, int], name: str) -> tuple[np.ndarray, int]:
    """The volume's 1-D bool mask, seeded by the file name as fastMRI's transforms seed theirs."""
    mask, num_low = make_mask(spec, kspace_hw[1], seed_for_file(name))
    return mask.astype(bool), num_low


def _fft2c(image: np.ndarray) -> np.ndarray:
    """The centred orthonormal 2-D FFT of irecon.physics on a complex numpy array."""
    import torch  # imported here, with physics: the command line reads this module's defaults

    from irecon.physics import fft2c

    return fft2c(torch.from_numpy(image)).numpy()


def _kspace(
    image: np.ndarray,
    maps: np.ndarray | None,
    kspace_hw: tuple[int, int],
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noisy fully sampled k-space: the (coil) images placed in the field of view, then the centred FFT."""
    slices = image.shape[0]
    coils = 1 if maps is None else maps.shape[1]
    h, w = kspace_hw
    rh, rw = image.shape[-2:]
    top, left = (h - rh) // 2, (w - rw) // 2
    kspace = np.empty((slices, coils, h, w), dtype=np.complex64)
    fov = np.zeros((coils, h, w), dtype=np.complex64)
    for k in range(slices):
        fov[:, top : top + rh, left : left + rw] = image[k] if maps is None else maps[k] * image[k]
        kspace[k] = _fft2c(np.ascontiguousarray(fov))
    sigma = noise * math.sqrt(float(np.mean(np.abs(kspace) ** 2)))
    if sigma > 0:
        for k in range(slices):
            n = rng.standard_normal((coils, h, w, 2), dtype=np.float32)
            kspace[k] += (sigma / math.sqrt(2)) * n.view(np.complex64)[..., 0]
    return kspace[:, 0] if maps is None else kspace


def _target(kspace: np.ndarray, recon_hw: tuple[int, int]) -> np.ndarray:
    """fastMRI target from stored k-space: centre-cropped magnitude (single-coil) or RSS over coils."""
    import torch

    from irecon.physics import center_crop, ifft2c

    target = np.empty((kspace.shape[0], *recon_hw), dtype=np.float32)
    for k in range(kspace.shape[0]):
        coil_images = center_crop(ifft2c(torch.from_numpy(np.ascontiguousarray(kspace[k]))), recon_hw).numpy()
        if kspace.ndim == 3:
            target[k] = np.abs(coil_images)
        else:
            target[k] = np.sqrt((np.abs(coil_images) ** 2).sum(axis=0))
    return target


def _write_atomic(path: Path, datasets: dict[str, Any], attrs: dict[str, Any], overwrite: bool) -> None:
    """Write an HDF5 file under a temporary name next to ``path``, then move it into place."""
    with atomic_write(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as hf:
        for key, value in datasets.items():
            hf.create_dataset(key, data=value, track_times=False)
        hf.attrs.update(attrs)

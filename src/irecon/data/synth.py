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

from irecon.data.masks import MaskSpec, make_mask, seed_for_file
from irecon.data.volumes import CHALLENGES, write_header_xml
from irecon.errors import IreconError
from irecon.files import atomic_write, check_writable_folder

SPLITS = ("train", "val", "test")
ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK")
MIN_SIZE = 8
PIXEL_SPACING_MM = 0.5  # in-plane spacing of the recon grid written to the header (knee-like)
SLICE_THICKNESS_MM = 3.0

_SLICE_SPACING = 0.05  # distance between slices, in units of the recon box half-width
_FOV_LIMIT = 0.95  # structures stay within this fraction of the recon box half-size
_EDGE_PX = 1.0  # width of the soft edge of the ellipses, in pixels


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
    The ``ismrmrd_header`` (``irecon.data.volumes.write_header_xml``) gives encoded size
    ``(H, W, 1)``, recon size ``(rh, rw, 1)`` and phase-encode limits ``center = W // 2``,
    ``maximum = W - 1``, so ``SliceDataset`` reports ``padding_left = 0``, ``padding_right = W``.

    Every argument is checked before anything is written; bad ones, and an existing file when
    ``overwrite`` is false, raise ``IreconError``. Files appear atomically (written under a
    temporary name in ``out_dir``, then renamed).
    """
    kspace_hw, recon_hw = _validate(
        challenge, split, volumes, slices, coils, kspace_size, recon_size,
        acceleration, center_fraction, mask_type, noise, seed,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IreconError("exists and is not a directory", out)
    check_writable_folder(out, create=False)
    names = [synth_filename(split, seed, i) for i in range(volumes)]
    if not overwrite:
        for name in names:
            if (out / name).exists():
                raise IreconError("file exists; pass --overwrite to replace it", out / name)

    width = kspace_hw[1]
    spacing = PIXEL_SPACING_MM
    field_of_view = ((kspace_hw[0] * spacing, recon_hw[1] * spacing, SLICE_THICKNESS_MM),
                     (recon_hw[0] * spacing, recon_hw[1] * spacing, SLICE_THICKNESS_MM))
    header = write_header_xml((*kspace_hw, 1), (*recon_hw, 1), center=width // 2, maximum=width - 1,
                              field_of_view_mm=field_of_view)
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
        image = _anatomy(np.random.default_rng(anatomy_ss), slices, recon_hw,
                         fat_suppressed=acquisition == "CORPDFS_FBK")
        maps = _coil_maps(np.random.default_rng(coil_ss), n_coils, slices, recon_hw) if n_coils else None
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
    challenge: str, split: str, volumes: int, slices: int, coils: int,
    kspace_size: Sequence[int], recon_size: Sequence[int], acceleration: int,
    center_fraction: float, mask_type: str, noise: float, seed: int,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Check every argument (so nothing is written for a bad call); return the two sizes as int pairs."""
    if challenge not in CHALLENGES:
        raise IreconError(f"unknown challenge {challenge!r} (expected one of {', '.join(CHALLENGES)})")
    if split not in SPLITS:
        raise IreconError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    for label, value in (("volumes", volumes), ("slices", slices), ("coils", coils)):
        if not _is_int(value) or value < 1:
            raise IreconError(f"--{label} must be at least 1, got {value!r}")
    if not _is_int(seed) or seed < 0:
        raise IreconError(f"--seed must not be negative, got {seed!r}")
    kspace_hw = _size_pair("kspace size", kspace_size)
    recon_hw = _size_pair("recon size", recon_size)
    if recon_hw[0] > kspace_hw[0] or recon_hw[1] > kspace_hw[1]:
        raise IreconError(f"recon size {recon_hw} is larger than the k-space size {kspace_hw}")
    if (not isinstance(noise, (int, float)) or isinstance(noise, bool)
            or not math.isfinite(noise) or noise < 0):
        raise IreconError(f"--noise must be a finite number >= 0, got {noise!r}")
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


def _grid(recon_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of the recon box, each axis scaled to [-1, 1] (rows ``u``, columns ``v``)."""
    h, w = recon_hw
    u = ((np.arange(h, dtype=np.float32) - (h - 1) / 2) / (h / 2))[:, None]
    v = ((np.arange(w, dtype=np.float32) - (w - 1) / 2) / (w / 2))[None, :]
    return u, v


def _slice_positions(slices: int) -> np.ndarray:
    """Slice positions along z, centred on 0, ``_SLICE_SPACING`` apart."""
    return (np.arange(slices) - (slices - 1) / 2) * _SLICE_SPACING


def _structures(rng: np.random.Generator, half_depth: float, fat_suppressed: bool) -> list[dict[str, Any]]:
    """Random ellipsoids of the volume: body lobes, then large and medium inner parts and small
    features centred inside a random body lobe."""
    def make(kind: str, centre: tuple[float, float], axes: tuple[float, float], aspect: tuple[float, float],
             depth: tuple[float, float], z_spread: float, value: float) -> dict[str, Any]:
        a = rng.uniform(*axes)
        return {
            "kind": kind, "u0": centre[0], "v0": centre[1],
            "z0": rng.uniform(-z_spread, z_spread),
            "a": a, "b": a * rng.uniform(*aspect),
            "c": rng.uniform(*depth),
            "theta": rng.uniform(0, math.pi), "dtheta": rng.normal(0, 0.3),
            "du": rng.normal(0, 0.15), "dv": rng.normal(0, 0.15),
            "value": value,
        }

    def in_disk(radius: float) -> tuple[float, float]:
        r, phi = radius * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        return r * math.cos(phi), r * math.sin(phi)

    def in_body(reach: float) -> tuple[float, float]:
        lobe = bodies[int(rng.integers(len(bodies)))]
        x, y = in_disk(reach)
        x, y = x * lobe["a"], y * lobe["b"]
        cos_t, sin_t = math.cos(lobe["theta"]), math.sin(lobe["theta"])
        return lobe["u0"] + x * cos_t - y * sin_t, lobe["v0"] + x * sin_t + y * cos_t

    body_value = rng.uniform(0.3, 0.5) * (0.4 if fat_suppressed else 1.0)
    body_depth = (1.3 * half_depth + 0.3, 2.0 * half_depth + 0.6)
    bodies = [make("body", in_disk(0.2), (0.55, 0.85), (0.6, 1.0), body_depth, 0.2 * half_depth, body_value)
              for _ in range(int(rng.integers(1, 4)))]
    spread = half_depth + 0.2
    items = list(bodies)
    items += [make("part", in_body(0.6), (0.12, 0.4), (0.35, 1.0), (0.3, 1.5), spread, rng.uniform(0.05, 1.0))
              for _ in range(int(rng.integers(3, 7)))]
    items += [make("part", in_body(0.75), (0.03, 0.12), (0.35, 1.0), (0.15, 0.6), spread,
                   rng.uniform(0.0, 1.0))
              for _ in range(int(rng.integers(5, 12)))]
    for _ in range(int(rng.integers(8, 17))):
        line = rng.uniform() < 0.4
        sign = 1.0 if rng.uniform() < 0.6 else -1.0
        axes, aspect = ((0.05, 0.2), (0.03, 0.08)) if line else ((0.006, 0.02), (0.6, 1.0))
        items.append(make("line" if line else "dot", in_body(0.85), axes, aspect, (0.05, 0.3), spread,
                          sign * rng.uniform(0.15, 0.4)))
    return items


def _paint(
    canvas: np.ndarray, item: dict[str, Any], z: float, u: np.ndarray, v: np.ndarray,
    support: np.ndarray | None,
) -> np.ndarray | None:
    """Paint the cross-section of ellipsoid ``item`` at ``z`` onto ``canvas`` in place.

    Body and inner parts replace what is below them (soft alpha blend), small features add to it;
    inner parts and features are limited to the body ``support``. Returns the alpha of the
    ellipse over the whole canvas for body lobes (to build the support), else None.
    """
    dz = z - item["z0"]
    s = 1.0 - (dz / item["c"]) ** 2
    if s <= 0:
        return None
    scale = math.sqrt(s)
    a, b = item["a"] * scale, item["b"] * scale
    cu, cv = item["u0"] + item["du"] * dz, item["v0"] + item["dv"] * dz
    theta = item["theta"] + item["dtheta"] * dz
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    ext_u = math.hypot(a * cos_t, b * sin_t)
    ext_v = math.hypot(a * sin_t, b * cos_t)
    fit = min(1.0, (_FOV_LIMIT - abs(cu)) / ext_u, (_FOV_LIMIT - abs(cv)) / ext_v)
    if fit <= 0:
        return None
    a, b, ext_u, ext_v = a * fit, b * fit, ext_u * fit, ext_v * fit
    h, w = canvas.shape
    rows = slice(max(0, int((cu - ext_u + 1) * h / 2) - 2), min(h, int((cu + ext_u + 1) * h / 2) + 3))
    cols = slice(max(0, int((cv - ext_v + 1) * w / 2) - 2), min(w, int((cv + ext_v + 1) * w / 2) + 3))
    du, dv = u[rows] - cu, v[:, cols] - cv
    x = du * cos_t + dv * sin_t
    y = -du * sin_t + dv * cos_t
    radius = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    sharpness = min(a, b) * min(h, w) / 2 / _EDGE_PX
    alpha = np.clip(0.5 + (1.0 - radius) * sharpness, 0.0, 1.0)
    if support is not None:
        alpha *= support[rows, cols]
    region = canvas[rows, cols]
    if item["kind"] in ("dot", "line"):
        region += item["value"] * alpha
        return None
    region *= 1.0 - alpha
    region += item["value"] * alpha
    if item["kind"] == "body":
        full = np.zeros_like(canvas)
        full[rows, cols] = alpha
        return full
    return None


def _texture(rng: np.random.Generator, slices: int, recon_hw: tuple[int, int]) -> np.ndarray:
    """Zero-mean unit-std noise filtered at three in-plane scales and smoothed along the slices."""
    h, w = recon_hw
    pad = 3
    white = rng.standard_normal((slices + 2 * pad, h, w), dtype=np.float32)
    fu = np.fft.fftfreq(h)[:, None]
    fv = np.fft.rfftfreq(w)[None, :]
    f2 = fu**2 + fv**2
    response = np.zeros(f2.shape)
    for fraction in (0.005, 0.015, 0.05):
        sigma = max(0.5, fraction * min(h, w))
        gauss = np.exp(-2 * math.pi**2 * sigma**2 * f2)
        response += gauss / math.sqrt(np.mean(gauss**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * response, s=(h, w)).astype(np.float32)
    taps = np.exp(-0.5 * np.arange(-pad, pad + 1) ** 2)
    taps /= taps.sum()
    smooth = sum(t * field[k : k + slices] for k, t in enumerate(taps))
    return (smooth - smooth.mean()) / (smooth.std() + 1e-12)


def _anatomy(
    rng: np.random.Generator, slices: int, recon_hw: tuple[int, int], *, fat_suppressed: bool
) -> np.ndarray:
    """Complex image of the volume on the recon box, ``(slices, rh, rw)`` complex64."""
    z_all = _slice_positions(slices)
    half_depth = float(abs(z_all[0]))
    items = _structures(rng, half_depth, fat_suppressed)
    texture = _texture(rng, slices, recon_hw)
    texture_amp = rng.uniform(0.1, 0.25)
    phase_base = np.concatenate([[rng.uniform(-math.pi, math.pi)], rng.normal(0, 0.5, 5)])
    phase_drift = rng.normal(0, 0.5, 6)
    gain = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    u, v = _grid(recon_hw)
    basis = [np.ones_like(u * v), u + 0 * v, v + 0 * u, u * v, u**2 + 0 * v, v**2 + 0 * u]
    image = np.empty((slices, *recon_hw), dtype=np.complex64)
    for k, z in enumerate(z_all):
        canvas = np.zeros(recon_hw, dtype=np.float32)
        support = np.zeros(recon_hw, dtype=np.float32)
        for item in items:
            if item["kind"] == "body":
                lobe = _paint(canvas, item, z, u, v, None)
                if lobe is not None:
                    np.maximum(support, lobe, out=support)
        for item in items:
            if item["kind"] != "body":
                _paint(canvas, item, z, u, v, support)
        magnitude = np.clip(canvas * (1.0 + texture_amp * texture[k]), 0.0, None) * gain
        phase = sum((c + d * z) * p for c, d, p in zip(phase_base, phase_drift, basis))
        image[k] = magnitude * np.exp(1j * phase)
    return image


def _coil_maps(rng: np.random.Generator, coils: int, slices: int, recon_hw: tuple[int, int]) -> np.ndarray:
    """Smooth complex coil sensitivities on the recon box, ``(slices, coils, rh, rw)`` complex64.

    Coils sit on a ring (radius 1.1-1.5 box half-widths, a little above or below the volume
    centre); each map is a Gaussian bump of its distance with a smooth linear phase. A single
    coil is a wide bump at the centre (body-coil-like). The maps are scaled so that their
    root-sum-of-squares peaks at 1 over the volume, keeping realistic shading.
    """
    u, v = _grid(recon_hw)
    z_all = _slice_positions(slices)
    start = rng.uniform(0, 2 * math.pi)
    maps = np.empty((slices, coils, *recon_hw), dtype=np.complex64)
    params = []
    for c in range(coils):
        if coils == 1:
            pu = pv = pz = 0.0
            width = 1.5
        else:
            angle = start + 2 * math.pi * c / coils + rng.normal(0, 0.15)
            radius = rng.uniform(1.1, 1.5)
            pu, pv, pz = radius * math.cos(angle), radius * math.sin(angle), rng.uniform(-0.3, 0.3)
            width = rng.uniform(0.7, 1.1)
        params.append((pu, pv, pz, width, rng.uniform(-math.pi, math.pi), rng.normal(0, 0.6, 3)))
    for k, z in enumerate(z_all):
        for c, (pu, pv, pz, width, phase0, grad) in enumerate(params):
            du, dv, dz = u - pu, v - pv, z - pz
            magnitude = np.exp(-(du**2 + dv**2 + dz**2) / (2 * width**2))
            phase = phase0 + grad[0] * du + grad[1] * dv + grad[2] * dz
            maps[k, c] = magnitude * np.exp(1j * phase)
    peak = float(np.sqrt((np.abs(maps) ** 2).sum(axis=1)).max())
    maps /= peak
    return maps


def _kspace(
    image: np.ndarray, maps: np.ndarray | None, kspace_hw: tuple[int, int], noise: float,
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

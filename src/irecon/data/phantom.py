"""The synthetic anatomy behind ``irecon synth``: knee-like structures, texture and coil sensitivities.

Ellipsoids of tissue-like intensities drift smoothly from slice to slice inside the recon box, with
multi-scale texture and a smooth phase; coil maps are smooth and normalised. Every draw comes from
the ``numpy.random.Generator`` passed in, so the same seed gives the same volume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_SLICE_SPACING = 0.05  # distance between slices, in units of the recon box half-width
_FOV_LIMIT = 0.95  # structures stay within this fraction of the recon box half-size
_EDGE_PX = 1.0  # width of the soft edge of the ellipses, in pixels


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

    def make(
        kind: str,
        centre: tuple[float, float],
        axes: tuple[float, float],
        aspect: tuple[float, float],
        depth: tuple[float, float],
        z_spread: float,
        value: float,
    ) -> dict[str, Any]:
        a = rng.uniform(*axes)
        return {
            "kind": kind,
            "u0": centre[0],
            "v0": centre[1],
            "z0": rng.uniform(-z_spread, z_spread),
            "a": a,
            "b": a * rng.uniform(*aspect),
            "c": rng.uniform(*depth),
            "theta": rng.uniform(0, math.pi),
            "dtheta": rng.normal(0, 0.3),
            "du": rng.normal(0, 0.15),
            "dv": rng.normal(0, 0.15),
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
    bodies = [
        make("body", in_disk(0.2), (0.55, 0.85), (0.6, 1.0), body_depth, 0.2 * half_depth, body_value)
        for _ in range(int(rng.integers(1, 4)))
    ]
    spread = half_depth + 0.2
    items = list(bodies)
    items += [
        make("part", in_body(0.6), (0.12, 0.4), (0.35, 1.0), (0.3, 1.5), spread, rng.uniform(0.05, 1.0))
        for _ in range(int(rng.integers(3, 7)))
    ]
    items += [
        make("part", in_body(0.75), (0.03, 0.12), (0.35, 1.0), (0.15, 0.6), spread, rng.uniform(0.0, 1.0))
        for _ in range(int(rng.integers(5, 12)))
    ]
    for _ in range(int(rng.integers(8, 17))):
        line = rng.uniform() < 0.4
        sign = 1.0 if rng.uniform() < 0.6 else -1.0
        axes, aspect = ((0.05, 0.2), (0.03, 0.08)) if line else ((0.006, 0.02), (0.6, 1.0))
        items.append(
            make(
                "line" if line else "dot",
                in_body(0.85),
                axes,
                aspect,
                (0.05, 0.3),
                spread,
                sign * rng.uniform(0.15, 0.4),
            )
        )
    return items


def _paint(
    canvas: np.ndarray,
    item: dict[str, Any],
    z: float,
    u: np.ndarray,
    v: np.ndarray,
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


def anatomy(rng: np.random.Generator, slices: int, recon_hw: tuple[int, int], *, fat_suppressed: bool) -> np.ndarray:
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


def coil_maps(rng: np.random.Generator, coils: int, slices: int, recon_hw: tuple[int, int]) -> np.ndarray:
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

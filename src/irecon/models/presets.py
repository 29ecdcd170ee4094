"""Named model configurations: each preset is a config of one kind (see :mod:`irecon.models.configs`).

``docs/presets.md`` gives each preset's source.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch

from irecon.errors import IreconError, option
from irecon.models.configs import (
    POSITIVE_FIELDS,
    IRIMConfig,
    ModelConfig,
    RIMConfig,
    UNetConfig,
    ZeroFilledConfig,
)

CHALLENGE_STRIDES = (1, 1, 2, 2, 4, 8, 8, 4, 2, 2, 1, 1)
CHALLENGE_HIDDEN = (64, 64, 128, 128, 256, 1024, 1024, 256, 128, 128, 64, 64)


PRESETS: dict[str, tuple[ModelConfig, str]] = {
    "paper-2d": (IRIMConfig(dims=2, output="residual"), "appendix B; T=8 and 64 channels assumed; residual output"),
    "paper-3d": (IRIMConfig(dims=3, output="residual"), "appendix B, 3-D convolutions; residual output"),
    "challenge-singlecoil": (
        IRIMConfig(n_latent=64, multiplicity=4, strides=CHALLENGE_STRIDES, hidden=CHALLENGE_HIDDEN),
        "official fastMRI-challenge model",
    ),
    "challenge-multicoil": (
        IRIMConfig(coils=15, n_latent=96, strides=CHALLENGE_STRIDES, hidden=CHALLENGE_HIDDEN),
        "official fastMRI-challenge model, 15 coils",
    ),
    "rim": (RIMConfig(steps=8, rim_hidden=64), "appendix B RIM baseline"),
    "unet": (UNetConfig(unet_chans=32, unet_pools=4), "fastMRI U-Net baseline"),
    "zero-filled": (ZeroFilledConfig(), "zero-filled inverse FFT"),
    "tiny-2d": (
        IRIMConfig(steps=4, n_latent=16, strides=(1, 2, 2, 1), hidden=(12, 24, 24, 12), output="residual"),
        "CPU demo model (make demo); residual output",
    ),
    "tiny-3d": (
        IRIMConfig(dims=3, steps=3, n_latent=16, strides=(1, 2, 1), hidden=(8, 16, 8), output="residual"),
        "CPU demo model, 3-D; residual output",
    ),
    "tiny-rim": (
        RIMConfig(steps=4, rim_hidden=48),
        "CPU RIM baseline, 4 steps x 48 hidden: 54,720 parameters single-coil, within 2x of tiny-2d",
    ),
    "tiny-unet": (
        UNetConfig(unet_chans=6, unet_pools=3),
        "CPU U-Net baseline, 6 channels x 3 pools: 67,669 parameters, within 2x of tiny-2d",
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset with any field overridden; ``layers=N`` repeats or cuts the per-layer pattern.

    A residual i-RIM preset on more than one coil takes the ``residual-rss`` output unless ``output``
    is given.

    An override the preset's kind of model does not have (``layers`` for a RIM, ``steps`` for a
    U-Net) and a count below 1 are user errors; ``None`` values are ignored.
    """
    if name not in PRESETS:
        raise IreconError(f"unknown model preset '{name}' (choose from {', '.join(PRESETS)})")
    config = PRESETS[name][0]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key, value in overrides.items():
        if key in POSITIVE_FIELDS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise IreconError(f"{option(key)} must be at least 1, got {value!r}")
        if key not in ("dims", "coils") and key not in config.overridable:
            if any(key in kind.overridable for kind in (IRIMConfig, RIMConfig, UNetConfig)):
                raise IreconError(f"{option(key)} does not apply to {option('model')} {name} (a {config.kind} model)")
            raise IreconError(f"unknown model option(s) {[key]}")
    layers = overrides.pop("layers", None)
    if layers is not None and isinstance(config, IRIMConfig):
        strides = overrides.get("strides", config.strides)
        hidden = overrides.get("hidden", config.hidden)
        overrides["strides"] = tuple(strides[i % len(strides)] for i in range(layers))
        overrides["hidden"] = tuple(hidden[i % len(hidden)] for i in range(layers))
    unknown = set(overrides) - {f.name for f in fields(config)}
    if unknown:
        raise IreconError(f"unknown model option(s) {sorted(unknown)}")
    configured = replace(config, **overrides)
    return _multicoil_output(configured) if "output" not in overrides else configured


def _multicoil_output(config: ModelConfig) -> ModelConfig:
    """A residual i-RIM on multi-coil data corrects the coil-combined magnitude (``residual-rss``).

    Measured (docs/compare.md): the per-coil residual hardly moves from zero-filled in 60 steps on
    4 coils, while ``residual-rss`` starts at zero-filled and learns faster than the official head.
    """
    if isinstance(config, IRIMConfig) and config.output == "residual" and config.coils > 1:
        return replace(config, output="residual-rss")
    return config


def count_parameters(config: ModelConfig) -> int:
    """Parameter count without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        model = config.build()
    return sum(p.numel() for p in model.parameters())

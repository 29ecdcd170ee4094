"""Named model configurations and the one function that builds any model from its config.

A :class:`ModelConfig` holds only plain values, so it is stored in checkpoints as a dict and a
checkpoint rebuilds its model with no architecture flags. ``docs/presets.md`` gives each preset's
source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from irecon.errors import IreconError
from irecon.models.baselines import UNetBaseline, ZeroFilled
from irecon.models.irim import IRIM
from irecon.models.rim import RIM

KINDS = ("irim", "rim", "unet", "zero-filled")

PAPER_STRIDES = (1, 1, 2, 2, 4, 4, 2, 2, 1, 1)
# The appendix lists only 8 widths for 10 layers; completed symmetrically with (8, 8).
PAPER_HIDDEN = (8, 8, 32, 32, 128, 128, 32, 32, 8, 8)
CHALLENGE_STRIDES = (1, 1, 2, 2, 4, 8, 8, 4, 2, 2, 1, 1)
CHALLENGE_HIDDEN = (64, 64, 128, 128, 256, 1024, 1024, 256, 128, 128, 64, 64)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model. i-RIM fields are ignored by the other kinds."""

    kind: str
    dims: int = 2
    coils: int = 1
    steps: int = 8
    n_latent: int = 64
    multiplicity: int = 1
    strides: tuple[int, ...] = PAPER_STRIDES
    hidden: tuple[int, ...] = PAPER_HIDDEN
    shared_weights: bool = False
    parametric_output: bool = True
    num_reflections: int = 3
    norm_crop: tuple[int, int] = (320, 320)
    rim_hidden: int = 64
    unet_chans: int = 32
    unet_pools: int = 4

    @property
    def layers(self) -> int:
        """Invertible layers per step (i-RIM)."""
        return len(self.strides)

    def to_dict(self) -> dict[str, Any]:
        """Plain python values only (lists for tuples), safe for torch.load(weights_only=True)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """The config a checkpoint stored; older checkpoints carry ``metadata_channels: 0``, which is dropped."""
        values = dict(values)
        if values.pop("metadata_channels", 0):
            raise IreconError("the checkpoint's model uses metadata channels, which this irecon no longer supports")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise IreconError(f"unknown model config fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


PRESETS: dict[str, tuple[ModelConfig, str]] = {
    "paper-2d": (ModelConfig("irim", dims=2), "appendix B; T=8 and 64 channels assumed"),
    "paper-3d": (ModelConfig("irim", dims=3), "appendix B, 3-D convolutions"),
    "challenge-singlecoil": (
        ModelConfig("irim", n_latent=64, multiplicity=4, strides=CHALLENGE_STRIDES, hidden=CHALLENGE_HIDDEN),
        "official fastMRI-challenge model",
    ),
    "challenge-multicoil": (
        ModelConfig("irim", coils=15, n_latent=96, strides=CHALLENGE_STRIDES, hidden=CHALLENGE_HIDDEN),
        "official fastMRI-challenge model, 15 coils",
    ),
    "rim": (ModelConfig("rim", steps=8, rim_hidden=64), "appendix B RIM baseline"),
    "unet": (ModelConfig("unet", unet_chans=32, unet_pools=4), "fastMRI U-Net baseline"),
    "zero-filled": (ModelConfig("zero-filled"), "zero-filled inverse FFT"),
    "tiny-2d": (
        ModelConfig("irim", steps=4, n_latent=16, strides=(1, 2, 2, 1), hidden=(12, 24, 24, 12)),
        "CPU demo model (make demo)",
    ),
    "tiny-3d": (
        ModelConfig("irim", dims=3, steps=3, n_latent=16, strides=(1, 2, 1), hidden=(8, 16, 8)),
        "CPU demo model, 3-D",
    ),
    "tiny-rim": (
        ModelConfig("rim", steps=4, rim_hidden=48),
        "CPU RIM baseline, 4 steps x 48 hidden: 54,720 parameters single-coil, within 2x of tiny-2d",
    ),
    "tiny-unet": (
        ModelConfig("unet", unet_chans=6, unet_pools=3),
        "CPU U-Net baseline, 6 channels x 3 pools: 67,669 parameters, within 2x of tiny-2d",
    ),
}


# The config fields each kind of model reads (dims and coils apply to all); overriding any other is an error.
KIND_FIELDS = {
    "irim": (
        "steps",
        "layers",
        "n_latent",
        "multiplicity",
        "strides",
        "hidden",
        "shared_weights",
        "parametric_output",
        "num_reflections",
        "norm_crop",
    ),
    "rim": ("steps", "rim_hidden", "norm_crop"),
    "unet": ("unet_chans", "unet_pools"),
    "zero-filled": (),
}
POSITIVE_FIELDS = ("steps", "layers", "n_latent", "multiplicity", "coils", "rim_hidden", "unet_chans", "unet_pools")


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset with any field overridden; ``layers=N`` repeats or cuts the per-layer pattern.

    An override the preset's kind of model does not have (``--layers`` for a RIM, ``--steps`` for a
    U-Net) and a count below 1 are user errors.
    """
    if name not in PRESETS:
        raise IreconError(f"unknown model preset '{name}' (choose from {', '.join(PRESETS)})")
    config = PRESETS[name][0]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key, value in overrides.items():
        if key in POSITIVE_FIELDS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise IreconError(f"--{key.replace('_', '-')} must be at least 1, got {value!r}")
        if key not in ("dims", "coils") and key in KIND_FIELDS["irim"] + KIND_FIELDS["rim"] + KIND_FIELDS["unet"]:
            if key not in KIND_FIELDS[config.kind]:
                raise IreconError(f"--{key.replace('_', '-')} does not apply to --model {name} (a {config.kind} model)")
    layers = overrides.pop("layers", None)
    if layers is not None:
        strides = overrides.get("strides", config.strides)
        hidden = overrides.get("hidden", config.hidden)
        overrides["strides"] = tuple(strides[i % len(strides)] for i in range(layers))
        overrides["hidden"] = tuple(hidden[i % len(hidden)] for i in range(layers))
    unknown = set(overrides) - {f.name for f in fields(ModelConfig)}
    if unknown:
        raise IreconError(f"unknown model option(s) {sorted(unknown)}")
    return replace(config, **overrides)


def build_model(config: ModelConfig, memory_free: bool = True) -> nn.Module:
    """Instantiate the model a config describes (the same call for every kind)."""
    try:
        if config.kind == "irim":
            return IRIM(
                coils=config.coils,
                dims=config.dims,
                n_latent=config.n_latent,
                multiplicity=config.multiplicity,
                steps=config.steps,
                strides=config.strides,
                hidden=config.hidden,
                shared_weights=config.shared_weights,
                parametric_output=config.parametric_output,
                num_reflections=config.num_reflections,
                norm_crop=config.norm_crop,
                memory_free=memory_free,
            )
        if config.kind == "rim":
            return RIM(
                coils=config.coils,
                dims=config.dims,
                steps=config.steps,
                hidden=config.rim_hidden,
                norm_crop=config.norm_crop,
            )
        if config.kind == "unet":
            return UNetBaseline(
                coils=config.coils, dims=config.dims, chans=config.unet_chans, num_pool_layers=config.unet_pools
            )
        if config.kind == "zero-filled":
            return ZeroFilled(coils=config.coils, dims=config.dims)
    except ValueError as err:
        raise IreconError(f"invalid {config.kind} model: {err}") from None
    raise IreconError(f"unknown model kind '{config.kind}' (choose from {', '.join(KINDS)})")


def count_parameters(config: ModelConfig) -> int:
    """Parameter count without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())

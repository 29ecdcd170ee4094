"""One config class per model kind: its fields, the overrides it allows, how it builds, and its depth.

A config holds only plain values, so a checkpoint stores it as a dict (with its ``kind``) and rebuilds
the model from the file alone. :data:`KINDS` maps each kind name to its class; :func:`config_from_dict`
is the one way back from a stored dict, older checkpoints (one flat config with every kind's fields)
included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from torch import nn

from irecon.errors import IreconError

PAPER_STRIDES = (1, 1, 2, 2, 4, 4, 2, 2, 1, 1)
# The appendix lists only 8 widths for 10 layers; completed symmetrically with (8, 8).
PAPER_HIDDEN = (8, 8, 32, 32, 128, 128, 32, 32, 8, 8)
# Fields every flat config before the per-kind classes stored; a kind drops the ones it does not have.
_LEGACY_FIELDS = frozenset(
    {
        "steps", "n_latent", "multiplicity", "strides", "hidden", "shared_weights", "parametric_output",
        "num_reflections", "norm_crop", "rim_hidden", "unet_chans", "unet_pools",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """What every kind has: dimensionality and coil count. Subclasses add their own fields."""

    kind: ClassVar[str] = ""
    invertible: ClassVar[bool] = False  # can train memory-free
    learned: ClassVar[bool] = True  # has weights (needs a checkpoint)
    coil_bound: ClassVar[bool] = False  # its weights fix the coil count
    overridable: ClassVar[tuple[str, ...]] = ()  # fields a user may override besides dims and coils

    dims: int = 2
    coils: int = 1

    @property
    def time_steps(self) -> int | None:
        """Recurrent steps T, or None for a model without time steps."""
        return None

    @property
    def layers_total(self) -> int | None:
        """Depth as the memory figures count it (coupling layers, or RIM steps); None without depth."""
        return None

    @property
    def layers_per_step(self) -> int | None:
        """Invertible layers per time step (i-RIM only)."""
        return None

    def describe(self) -> str:
        """Kind and dimensionality, e.g. ``irim 2-D``."""
        return f"{self.kind} {self.dims}-D"

    def build(self, memory_free: bool = True) -> nn.Module:
        """The model this config describes, with fresh weights."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The kind and plain python values only (lists for tuples), safe for torch.load(weights_only=True)."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"kind": self.kind, **values}


@dataclass(frozen=True)
class IRIMConfig(ModelConfig):
    """The invertible RIM: T steps of invertible layers (strides, hidden widths) over an n_latent state."""

    kind: ClassVar[str] = "irim"
    invertible: ClassVar[bool] = True
    coil_bound: ClassVar[bool] = True
    overridable: ClassVar[tuple[str, ...]] = (
        "steps", "layers", "n_latent", "multiplicity", "strides", "hidden", "shared_weights",
        "parametric_output", "output", "num_reflections", "norm_crop",
    )  # fmt: skip

    steps: int = 8
    n_latent: int = 64
    multiplicity: int = 1
    strides: tuple[int, ...] = PAPER_STRIDES
    hidden: tuple[int, ...] = PAPER_HIDDEN
    shared_weights: bool = False
    parametric_output: bool = True
    # "official" head, or "residual" / "residual-rss" on the state's image (irecon.models.irim.OUTPUTS);
    # checkpoints written before this field load as "official".
    output: str = "official"
    num_reflections: int = 3
    norm_crop: tuple[int, int] = (320, 320)

    @property
    def time_steps(self) -> int:
        return self.steps

    @property
    def layers_per_step(self) -> int:
        return len(self.strides)

    @property
    def layers(self) -> int:
        """Invertible layers per step."""
        return len(self.strides)

    @property
    def layers_total(self) -> int:
        return self.steps * len(self.strides)

    def build(self, memory_free: bool = True) -> nn.Module:
        from irecon.models.irim import IRIM

        return _checked(
            lambda: IRIM(
                coils=self.coils,
                dims=self.dims,
                n_latent=self.n_latent,
                multiplicity=self.multiplicity,
                steps=self.steps,
                strides=self.strides,
                hidden=self.hidden,
                shared_weights=self.shared_weights,
                parametric_output=self.parametric_output,
                output=self.output,
                num_reflections=self.num_reflections,
                norm_crop=self.norm_crop,
                memory_free=memory_free,
            ),
            self.kind,
        )


@dataclass(frozen=True)
class RIMConfig(ModelConfig):
    """The plain recurrent inference machine baseline: T steps of a GRU cell with rim_hidden channels."""

    kind: ClassVar[str] = "rim"
    coil_bound: ClassVar[bool] = True
    overridable: ClassVar[tuple[str, ...]] = ("steps", "rim_hidden", "norm_crop")

    steps: int = 8
    rim_hidden: int = 64
    norm_crop: tuple[int, int] = (320, 320)

    @property
    def time_steps(self) -> int:
        return self.steps

    @property
    def layers_total(self) -> int:
        return self.steps

    def build(self, memory_free: bool = True) -> nn.Module:
        from irecon.models.rim import RIM

        return _checked(
            lambda: RIM(
                coils=self.coils, dims=self.dims, steps=self.steps, hidden=self.rim_hidden, norm_crop=self.norm_crop
            ),
            self.kind,
        )


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """fastMRI's U-Net on the zero-filled image: no time steps, no depth in the memory figures."""

    kind: ClassVar[str] = "unet"
    overridable: ClassVar[tuple[str, ...]] = ("unet_chans", "unet_pools")

    unet_chans: int = 32
    unet_pools: int = 4

    def build(self, memory_free: bool = True) -> nn.Module:
        from irecon.models.baselines import UNetBaseline

        return _checked(
            lambda: UNetBaseline(
                coils=self.coils, dims=self.dims, chans=self.unet_chans, num_pool_layers=self.unet_pools
            ),
            self.kind,
        )


@dataclass(frozen=True)
class ZeroFilledConfig(ModelConfig):
    """The inverse FFT of the masked k-space (root-sum-of-squares over coils): no weights."""

    kind: ClassVar[str] = "zero-filled"
    learned: ClassVar[bool] = False

    def build(self, memory_free: bool = True) -> nn.Module:
        from irecon.models.baselines import ZeroFilled

        return ZeroFilled(coils=self.coils, dims=self.dims)


KINDS: dict[str, type[ModelConfig]] = {c.kind: c for c in (IRIMConfig, RIMConfig, UNetConfig, ZeroFilledConfig)}
POSITIVE_FIELDS = ("steps", "layers", "n_latent", "multiplicity", "coils", "rim_hidden", "unet_chans", "unet_pools")


def config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """The config a checkpoint stored, through :data:`KINDS`.

    Checkpoints written before the per-kind classes hold every kind's fields: a kind keeps its own and
    drops the others. ``metadata_channels: 0`` (older still) is dropped; a non-zero value is refused.
    """
    values = dict(values)
    if values.pop("metadata_channels", 0):
        raise IreconError("the checkpoint's model uses metadata channels, which this irecon no longer supports")
    kind = values.pop("kind", None)
    if kind not in KINDS:
        raise IreconError(f"unknown model kind {kind!r} (choose from {', '.join(KINDS)})")
    cls = KINDS[kind]
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known - _LEGACY_FIELDS
    if unknown:
        raise IreconError(f"unknown model config fields {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def _checked(build: Any, kind: str) -> nn.Module:
    """Run a model constructor, turning its argument errors into one line."""
    try:
        return build()
    except ValueError as err:
        raise IreconError(f"invalid {kind} model: {err}") from None

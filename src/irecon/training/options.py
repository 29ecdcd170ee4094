"""What ``irecon train`` accepts: one dataclass whose defaults are the command line's defaults.

Imports nothing heavy, so the command line can read it without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irecon.data.splits import SplitSpec
from irecon.errors import IreconError, option
from irecon.models.names import IRIM_OUTPUTS
from irecon.values import check_count, check_device_name, check_threads, parse_bytes

if TYPE_CHECKING:
    from irecon.data.masks import MaskSpec

MODEL_OVERRIDES = ("steps", "layers", "n_latent", "multiplicity", "shared_weights", "output", "unet_chans")
DEFAULT_3D_SLAB = 8
FIT_CHOICES = ("steps", "batch", "slab")  # what --fit-memory may choose
MAKE_DATA = (
    "; «train_dir» and «val_dir» are folders of fastMRI .h5 volumes: make synthetic ones with "
    "irecon synth data/train && irecon synth data/val --split val"
)


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``irecon train`` accepts; the command line's defaults are these.

    ``slab`` None means 8 for a 3-D preset and 1 for a 2-D one; ``device`` None means CUDA when
    available; ``num_workers`` None means 0 on the CPU and min(4, CPUs per process - 1) on a GPU; ``shard_optimizer`` shards the Adam
    state over the ``torchrun`` processes (plain Adam on one); ``max_steps`` stops after that many
    optimisation steps in total (demos and tests); the model overrides (``steps`` ...
    ``shared_weights``, ``output``, ``unet_chans``) replace the preset's values when set. Validation uses the first
    acceleration / center-fraction pair. ``virtual_coils`` N compresses every volume's coils to N
    before the model (``irecon.data.coils``), so files of any coil count >= N train one model.
    ``tensorboard`` writes TensorBoard event files into
    ``out/tensorboard`` (needs the ``tensorboard`` extra).
    ``fit_memory`` (``22GiB`` or ``auto``) lets the planner
    choose ``fit`` (the time steps T, the batch size or the 3-D slab) as the largest that fits.
    ``self_supervised`` trains by SSDU (docs/self-supervised.md; no targets needed): per sample,
    ``ssdu_splits`` seeded splits of the acquired lines, a fraction ``ssdu_rho`` of them held out
    for the k-space loss, drawn with ``ssdu_selection`` (uniform or gaussian); ``ssdu_seen_weight``
    weighs the same loss on the lines the model saw (0: Yaman et al.'s loss on the held-out lines only).
    """

    train_dir: Path | None
    val_dir: Path | None
    model: str | None
    out: Path | None
    epochs: int = 10
    batch_size: int = 1
    lr: float = 1e-3
    lr_step: int = 10
    lr_gamma: float = 0.5
    loss: str = "ssim-l1"
    train_resolution: tuple[int, int] | None = None
    accelerations: tuple[int, ...] = (4, 8)
    center_fractions: tuple[float, ...] = (0.08, 0.04)
    mask_type: str = "random"
    slab: int | None = None
    seed: int = 0
    device: str | None = None
    amp: str | None = None
    memory_free: bool = True
    steps: int | None = None
    layers: int | None = None
    n_latent: int | None = None
    multiplicity: int | None = None
    shared_weights: bool | None = None
    output: str | None = None
    unet_chans: int | None = None
    checkpoint_every: int = 100
    num_workers: int | None = None
    shard_optimizer: bool = False
    resume: bool = False
    overwrite: bool = False
    max_steps: int | None = None
    max_bad_steps: int = 10
    time_budget_s: float | None = None
    threads: int | None = None
    scan: bool = True
    log_every: float = 30.0
    virtual_coils: int | None = None
    tensorboard: bool = False
    fit_memory: str | None = None
    fit: str = "steps"
    self_supervised: bool = False
    ssdu_rho: float = 0.4
    ssdu_selection: str = "uniform"
    ssdu_splits: int = 1
    ssdu_seen_weight: float = 0.1
    init: str | None = None
    """Start from these weights: ``default`` (the bundled model for the data's coils), ``bundled:NAME`` or a checkpoint."""

    def __post_init__(self) -> None:
        for name in ("train_dir", "val_dir", "out"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else Path(value))
        for name in ("accelerations", "center_fractions", "train_resolution"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else tuple(value))

    def to_dict(self) -> dict[str, Any]:
        """Plain python values (str paths, lists for tuples), safe for torch.load(weights_only=True)."""
        plain = {}
        for key, value in asdict(self).items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            plain[key] = value
        return plain

    @property
    def mask_spec(self) -> "MaskSpec":
        """The training masks: one (center fraction, acceleration) pair drawn per sample."""
        from irecon.data.masks import MaskSpec

        return MaskSpec(self.mask_type, tuple(self.center_fractions), tuple(self.accelerations))

    @property
    def val_mask_spec(self) -> "MaskSpec":
        """The validation masks: the first pair only, seeded by the file name."""
        from irecon.data.masks import MaskSpec

        return MaskSpec(self.mask_type, tuple(self.center_fractions[:1]), tuple(self.accelerations[:1]))

    def validate(self) -> None:
        """Ranges and combinations of the plain options; IreconError for the first that is wrong.

        Pure: reads no file, changes nothing. The checks that need the data or torch are the run's.
        """
        missing = [name for name in ("train_dir", "val_dir", "model") if getattr(self, name) is None]
        missing = [name for name in missing if not (name == "model" and self.init is not None)]
        if missing:
            names = [option(name) for name in missing]
            named = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            data = "" if "train_dir" not in missing and "val_dir" not in missing else MAKE_DATA
            raise IreconError(
                f"{named} {'is' if len(missing) == 1 else 'are'} needed for a new run (or «resume» an earlier one)"
                + data
            )
        for name in (
            "epochs",
            "batch_size",
            "lr_step",
            "checkpoint_every",
            "max_bad_steps",
            "max_steps",
            "virtual_coils",
            "ssdu_splits",
        ):
            check_count(name, getattr(self, name))
        for name in ("num_workers", "seed"):
            check_count(name, getattr(self, name), minimum=0)
        check_threads(self.threads)
        check_device_name(self.device)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise IreconError(f"«lr» must be a positive number, got {self.lr}")
        if not 0 < self.lr_gamma <= 1:
            raise IreconError(f"«lr_gamma» must be in (0, 1], got {self.lr_gamma}")
        if self.amp not in (None, "bf16"):
            raise IreconError(f"«amp» must be bf16 (or left out), got {self.amp!r}")
        if self.output not in (None, *IRIM_OUTPUTS):
            raise IreconError(f"«output» must be one of {', '.join(IRIM_OUTPUTS)}, got {self.output!r}")
        if not self.log_every > 0:
            raise IreconError(f"«log_every» must be a positive number of seconds, got {self.log_every}")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise IreconError(f"«time_budget_s» must be a positive duration, got {self.time_budget_s}")
        if self.resume and self.overwrite:
            raise IreconError("«resume» and «overwrite» contradict each other; pass one of them")
        self.mask_spec.validate()
        if self.fit not in FIT_CHOICES:
            raise IreconError(f"«fit» must be one of {', '.join(FIT_CHOICES)}, got {self.fit!r}")
        if self.fit_memory is not None and self.fit_memory.strip().lower() != "auto":
            parse_bytes(self.fit_memory)
        SplitSpec(self.ssdu_rho, self.ssdu_selection).validate()
        if not (math.isfinite(self.ssdu_seen_weight) and self.ssdu_seen_weight >= 0):
            raise IreconError(f"«ssdu_seen_weight» must be a non-negative number, got {self.ssdu_seen_weight}")
        if self.self_supervised and self.fit_memory is not None:
            raise IreconError("«fit_memory» plans a supervised step; leave it out with «self_supervised»")

    def model_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_OVERRIDES if getattr(self, name) is not None}


# Options a resumed run never takes from its checkpoint: they say what this launch does.
PER_LAUNCH = ("out", "resume", "overwrite", "max_steps")

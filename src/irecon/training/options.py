"""What ``irecon train`` accepts: one dataclass whose defaults are the command line's defaults.

Imports nothing heavy, so the command line can read it without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irecon.data.masks import MaskSpec

MODEL_OVERRIDES = ("steps", "layers", "n_latent", "multiplicity", "shared_weights", "parametric_output")
DEFAULT_3D_SLAB = 8


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``irecon train`` accepts; the command line's defaults are these.

    ``slab`` None means 8 for a 3-D preset and 1 for a 2-D one; ``device`` None means CUDA when
    available; ``num_workers`` None means 0 on the CPU and min(4, CPUs per process - 1) on a GPU; ``shard_optimizer`` shards the Adam
    state over the ``torchrun`` processes (plain Adam on one); ``max_steps`` stops after that many
    optimisation steps in total (demos and tests); the model overrides (``steps`` ...
    ``shared_weights``) replace the preset's values when set. Validation uses the first
    acceleration / center-fraction pair. ``self_supervised`` trains by SSDU (no targets needed): per sample,
    ``ssdu_splits`` seeded splits of the acquired lines, a fraction ``ssdu_rho`` of them held out
    for the k-space loss, drawn with ``ssdu_selection`` (uniform or gaussian); ``ssdu_seen_weight`` weighs
    the same loss on the lines the model saw (0: Yaman et al.'s loss on the held-out lines only).
    """

    train_dir: Path | None
    val_dir: Path | None
    model: str | None
    out: Path
    epochs: int = 10
    batch_size: int = 1
    lr: float = 1e-3
    lr_step: int = 10
    lr_gamma: float = 0.5
    loss: str = "ssim"
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
    parametric_output: bool | None = None
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
    self_supervised: bool = False
    ssdu_rho: float = 0.4
    ssdu_selection: str = "uniform"
    ssdu_splits: int = 1
    ssdu_seen_weight: float = 0.1

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

    def model_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_OVERRIDES if getattr(self, name) is not None}


OPTION_NAMES = {"time_budget_s": "time-budget", "train_dir": "TRAIN_DIR", "val_dir": "val", "scan": "scan"}
# Options a resumed run never takes from its checkpoint: they say what this launch does.
PER_LAUNCH = ("out", "resume", "overwrite", "max_steps")


def flag(name: str) -> str:
    """The command-line spelling of an option field: ``lr_step`` -> ``lr-step``."""
    return OPTION_NAMES.get(name, name.replace("_", "-"))


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``2h`` or ``1h30m``; ValueError for anything else."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        seconds, number = 0.0, ""
        for char in value:
            if char.isdigit() or char == ".":
                number += char
            elif char in units and number:
                seconds += float(number) * units[char]
                number = ""
            else:
                raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h or 1h30m)") from None
        if number:
            raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h or 1h30m)") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a positive, finite duration")
    return seconds

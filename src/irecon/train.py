"""Train any irecon model on fastMRI volumes: the library function :func:`train` and ``irecon train``.

The protocol follows the i-RIM papers (digest §b.5, §e.3, §f.3): Adam at 1e-3 halved every 10
epochs (appendix B), the SSIM loss of the official code (``fastmri.losses.SSIMLoss``, data range =
the volume's max), masks re-drawn for every sample and epoch, and validation on whole volumes with
file-name-seeded masks, scored as ``fastmri.evaluate`` scores them. The RIM is trained on the mean
loss over its steps, the i-RIM and U-Net on their one output.

What a run guarantees:

* every option and every input file is checked before ``RUN_DIR`` is created or anything written;
* ``last.pt`` (every ``checkpoint_every`` steps and after each epoch) and ``best.pt`` (the epoch with
  the highest mean validation SSIM) are written atomically, so a kill at any moment leaves the
  previous checkpoint intact; both load with ``torch.load(weights_only=True)``;
* ``--resume`` continues exactly where the run stopped: the epoch's batch order comes from a
  ``DistributedSampler`` seeded by ``seed`` and the epoch, the masks from (seed, epoch, index), and
  the optimiser, scheduler and position within the epoch from ``last.pt``;
* SIGINT/SIGTERM finish the current step, write ``last.pt`` and stop with status 130/143;
* under ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel; every rank
  validates its share of the volumes and the score sums are all-reduced, and only rank 0 writes.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import resource
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import click
import torch
import torch.distributed as dist
from fastmri.losses import SSIMLoss
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from irecon.atomic import atomic_write
from irecon.checkpoint import load_checkpoint, save_checkpoint
from irecon.data.datasets import MRIDataset, load_volume
from irecon.data.masks import MASK_TYPES, MaskSpec
from irecon.data.volumes import VolumeInfo, find_volumes
from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.inference import crop_to, reconstruct_volume
from irecon.metrics import Scores, score_volume
from irecon.models.presets import PRESETS, ModelConfig, build_model, preset

__all__ = [
    "ImageLoss", "TrainOptions", "TrainResult", "print_summary", "resume_command", "score_model",
    "summary_table", "train", "train_command", "validate_model",
]

LOSSES = ("ssim", "l1", "mse")
CHECKPOINTS = ("last.pt", "best.pt")
REPORTS = ("metrics.jsonl", "training_curve.png")
MODEL_OVERRIDES = ("steps", "layers", "n_latent", "multiplicity", "shared_weights")
# Options that decide the batches, masks and learning rates: a resumed run must keep them.
RESUME_FIXED = (
    "batch_size", "lr", "lr_step", "lr_gamma", "loss", "train_resolution", "accelerations",
    "center_fractions", "mask_type", "slab", "seed",
)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
VAL_BATCH = 8  # slices per forward pass of a 2-D model in validation (fastMRI README)
SSIM_WINDOW = 7


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``irecon train`` accepts; :func:`train` checks it all before writing anything.

    ``slab`` None means 8 for a 3-D preset and 1 for a 2-D one; ``device`` None means CUDA when
    available; ``max_steps`` stops after that many optimisation steps in total (demos and tests);
    the model overrides (``steps`` ... ``shared_weights``) replace the preset's values when set.
    Validation uses the first acceleration / center-fraction pair.
    """

    train_dir: Path
    val_dir: Path
    model: str
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
    checkpoint_every: int = 100
    num_workers: int = 0
    resume: bool = False
    overwrite: bool = False
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("train_dir", "val_dir", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
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
    def mask_spec(self) -> MaskSpec:
        """The training masks: one (center fraction, acceleration) pair drawn per sample."""
        return MaskSpec(self.mask_type, tuple(self.center_fractions), tuple(self.accelerations))

    @property
    def val_mask_spec(self) -> MaskSpec:
        """The validation masks: the first pair only, seeded by the file name."""
        return MaskSpec(self.mask_type, tuple(self.center_fractions[:1]), tuple(self.accelerations[:1]))

    def model_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_OVERRIDES if getattr(self, name) is not None}


@dataclass
class TrainResult:
    """What a run did. ``exit_code`` is 0, or 130/143 after SIGINT/SIGTERM."""

    run_dir: Path
    model: nn.Module
    config: ModelConfig
    epochs_done: int
    global_step: int
    history: list[dict[str, Any]]
    zero_filled: dict[str, float]
    best_epoch: int | None
    best_ssim: float | None
    stopped: str
    exit_code: int
    wall_time_s: float
    is_main: bool
    resume_command: str


def train(options: TrainOptions, console: Console | None = None) -> TrainResult:
    """Train ``options.model`` on ``options.train_dir``, validating on ``options.val_dir`` each epoch.

    Raises IreconError for any bad option or input before ``options.out`` is created. Runs under
    DDP when launched by ``torchrun`` with ``WORLD_SIZE`` > 1.
    """
    started = time.perf_counter()
    world = _World.from_env()
    plan = _prepare(options, world)
    with _process_group(world, plan.device):
        if world.is_main:
            _make_run_dir(options)
        world.barrier()
        console = (console or Console()) if world.is_main else Console(quiet=True)
        trainer = _Trainer(options, plan, world, console)
        with _StopSignals() as signals:
            return trainer.run(signals, started)


# ----------------------------------------------------------------------------------------------
# Checking options and inputs (nothing is written here)


@dataclass
class _Plan:
    """The checked inputs of a run."""

    train_set: MRIDataset
    val_infos: list[VolumeInfo]
    config: ModelConfig
    model: nn.Module
    device: torch.device
    slab: int
    resume: dict[str, Any] | None


def _prepare(options: TrainOptions, world: "_World") -> _Plan:
    """Check every option and read every header; raise IreconError before anything is written."""
    _check_options(options)
    device = resolve_device(options.device, world.local_rank if world.size > 1 else None)
    dims = _base_config(options).dims
    slab = _resolve_slab(options.slab, dims)
    train_files, _ = find_volumes([options.train_dir])
    val_files, _ = find_volumes([options.val_dir])
    train_set = MRIDataset(
        train_files, options.mask_spec, train=True, resolution=options.train_resolution,
        slab=slab, seed=options.seed,
    )
    first = train_set.volumes[0]
    _check_batching(train_set.volumes, options)
    val_set = MRIDataset(val_files, options.val_mask_spec, train=False, challenge=first.challenge)
    _check_validation(val_set.volumes, first.num_coils)
    _check_loss_size(train_set.volumes, options.loss)
    config = preset(options.model, coils=first.num_coils, **options.model_overrides())
    model = _build(config, options)
    resume = _check_run_dir(options, config, [p.name for p in train_files], world.size)
    return _Plan(train_set, val_set.volumes, config, model, device, slab, resume)


def _check_options(options: TrainOptions) -> None:
    """Ranges and combinations of the plain options."""
    positive = ("epochs", "batch_size", "lr_step", "checkpoint_every")
    for name in positive:
        if getattr(options, name) < 1:
            raise IreconError(f"--{_flag(name)} must be at least 1, got {getattr(options, name)}")
    if not (math.isfinite(options.lr) and options.lr > 0):
        raise IreconError(f"--lr must be a positive number, got {options.lr}")
    if not 0 < options.lr_gamma <= 1:
        raise IreconError(f"--lr-gamma must be in (0, 1], got {options.lr_gamma}")
    if options.loss not in LOSSES:
        raise IreconError(f"unknown loss {options.loss!r}; choose one of {', '.join(LOSSES)}")
    if options.amp not in (None, "bf16"):
        raise IreconError(f"--amp must be bf16 (or left out), got {options.amp!r}")
    if options.num_workers < 0 or options.seed < 0:
        raise IreconError("--num-workers and --seed must not be negative")
    if options.max_steps is not None and options.max_steps < 1:
        raise IreconError(f"--max-steps must be at least 1, got {options.max_steps}")
    if options.resume and options.overwrite:
        raise IreconError("--resume and --overwrite contradict each other; pass one of them")
    options.mask_spec.validate()


def _base_config(options: TrainOptions) -> ModelConfig:
    """The preset with the overrides; refuses presets that have nothing to train."""
    config = preset(options.model, **options.model_overrides())
    if config.kind == "zero-filled":
        raise IreconError("the zero-filled preset has no parameters to train; choose another --model")
    return config


def _resolve_slab(slab: int | None, dims: int) -> int:
    if dims == 2:
        if slab not in (None, 1):
            raise IreconError(f"--slab {slab} needs a 3-D preset (tiny-3d, paper-3d); 2-D models train on slices")
        return 1
    slab = 8 if slab is None else slab
    if slab < 2:
        raise IreconError(f"--slab must be at least 2 for a 3-D preset, got {slab}")
    return slab


def _check_batching(volumes: Sequence[VolumeInfo], options: TrainOptions) -> None:
    """Batches of more than one sample need one k-space size (after --train-resolution) and one target size."""
    if options.batch_size == 1:
        return
    kspace_sizes = {v.kspace_shape for v in volumes}
    if options.train_resolution is None and len(kspace_sizes) > 1:
        sizes = ", ".join(f"{h}x{w}" for h, w in sorted(kspace_sizes))
        raise IreconError(
            f"training volumes differ in k-space size ({sizes}); --batch-size {options.batch_size} "
            "needs --train-resolution H W (the official i-RIM uses 368 368) or --batch-size 1"
        )
    target_sizes = {v.target_shape for v in volumes}
    if len(target_sizes) > 1:
        sizes = ", ".join(f"{h}x{w}" for h, w in sorted(target_sizes))
        raise IreconError(f"training targets differ in size ({sizes}); use --batch-size 1")


def _check_validation(volumes: Sequence[VolumeInfo], coils: int) -> None:
    for info in volumes:
        if info.target_key is None:
            raise IreconError("validation file has no target to score against", info.path)
        if info.num_coils != coils:
            raise IreconError(
                f"validation file has {info.num_coils} coils but the training data has {coils}", info.path
            )


def _check_loss_size(volumes: Sequence[VolumeInfo], loss: str) -> None:
    if loss != "ssim":
        return
    for info in volumes:
        if info.target_shape is not None and min(info.target_shape) < SSIM_WINDOW:
            raise IreconError(
                f"target {info.target_shape} is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window; "
                "use --loss l1 or mse",
                info.path,
            )


def _check_run_dir(
    options: TrainOptions, config: ModelConfig, train_files: list[str], world_size: int
) -> dict[str, Any] | None:
    """Refuse to clobber checkpoints; with --resume, load last.pt and check it fits this run."""
    out = options.out
    if out.exists() and not out.is_dir():
        raise IreconError("--out exists and is not a folder", out)
    has_checkpoints = any((out / name).exists() for name in CHECKPOINTS)
    if options.resume:
        if not (out / "last.pt").is_file():
            raise IreconError("--resume: no last.pt to resume from", out)
        payload = load_checkpoint(out / "last.pt")
        _check_resumable(payload, options, config, train_files, world_size)
        return payload
    if has_checkpoints and not options.overwrite:
        raise IreconError(
            "holds checkpoints of an earlier run; pass --resume to continue it or --overwrite to start afresh",
            out,
        )
    return None


def _check_resumable(
    payload: dict[str, Any], options: TrainOptions, config: ModelConfig, train_files: list[str], world_size: int
) -> None:
    path = options.out / "last.pt"
    if "options" not in payload or "global_step" not in payload:
        raise IreconError("not a training checkpoint (no options/progress); cannot resume", path)
    saved_config = payload["model_config"]
    model_diff = _differences(saved_config, config.to_dict(), list(saved_config))
    if model_diff:
        raise IreconError(f"cannot resume with different model options: {model_diff}", path)
    option_diff = _differences(payload["options"], options.to_dict(), list(RESUME_FIXED))
    if option_diff:
        raise IreconError(f"cannot resume with different training options: {option_diff}", path)
    if payload.get("train_files") != train_files:
        raise IreconError("cannot resume: the training files differ from the ones the run started with", path)
    if payload.get("world_size", 1) != world_size and payload.get("epoch_position", 0):
        raise IreconError(
            f"cannot resume mid-epoch with {world_size} processes; the run used {payload.get('world_size')}", path
        )


def _differences(saved: dict[str, Any], now: dict[str, Any], keys: Sequence[str]) -> str:
    """'name: saved (checkpoint) vs now' for every key whose value changed, joined by '; '."""
    changed = [k for k in keys if saved.get(k) != now.get(k)]
    return "; ".join(f"{_flag(k)} {saved.get(k)} in the checkpoint vs {now.get(k)} now" for k in changed)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _make_run_dir(options: TrainOptions) -> None:
    """Create RUN_DIR; with --overwrite, remove the earlier run's checkpoints and reports first."""
    options.out.mkdir(parents=True, exist_ok=True)
    if options.overwrite:
        for name in CHECKPOINTS + REPORTS:
            (options.out / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Distributed training (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK)


@dataclass(frozen=True)
class _World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "_World":
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        return cls(size, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def all_reduce(self, values: Tensor, op: Any = dist.ReduceOp.SUM) -> Tensor:
        if self.size > 1:
            dist.all_reduce(values, op=op)
        return values


@contextmanager
def _process_group(world: _World, device: torch.device) -> Iterator[None]:
    """Join the process group (nccl on CUDA, gloo on CPU) unless single-process or already joined."""
    if world.size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Signals


class _StopSignals:
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second signal stops at once.

    Handlers can only be installed in the main thread; elsewhere the signals keep their defaults.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------
# Loss and validation


class ImageLoss(nn.Module):
    """1 - SSIM (fastmri.losses.SSIMLoss), L1 or MSE between magnitude images, each scaled by the
    sample's data range (the volume's max). Slabs (B, S, h, w) are folded into the batch.

    The loss runs in float32 even under bf16 autocast: SSIM subtracts nearly equal moments.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.ssim = SSIMLoss(win_size=SSIM_WINDOW)

    def forward(self, estimate: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        with torch.autocast(estimate.device.type, enabled=False):
            if estimate.dim() == 4:
                max_value = max_value.repeat_interleave(estimate.shape[1])
            estimate = estimate.float().reshape(-1, 1, *estimate.shape[-2:])
            target = target.float().reshape(-1, 1, *target.shape[-2:])
            max_value = max_value.float().clamp_min(1e-12)
            if self.kind == "ssim":
                return self.ssim(estimate, target, max_value)
            scale = max_value.view(-1, 1, 1, 1)
            error = estimate / scale - target / scale
            return error.abs().mean() if self.kind == "l1" else error.square().mean()


def validate_model(
    model: nn.Module, volumes: Sequence[VolumeInfo], mask_spec: MaskSpec, device: torch.device
) -> list[Scores]:
    """Scores of ``model`` on whole volumes with file-name-seeded masks (fastMRI's validation)."""
    return score_model(model, volumes, mask_spec, device)


def score_model(
    model: nn.Module, volumes: Sequence[VolumeInfo], mask_spec: MaskSpec, device: torch.device
) -> list[Scores]:
    """NMSE/PSNR/SSIM per volume (metrics.score_volume) of the model's reconstructions."""
    was_training = model.training
    model.eval()
    scores = []
    try:
        for info in volumes:
            volume = load_volume(info.path, mask_spec, info)
            assert volume.target is not None  # checked in _check_validation
            images = reconstruct_volume(
                model, volume, batch_size=VAL_BATCH, device=device, crop_size=tuple(volume.target.shape[-2:])
            )
            scores.append(score_volume(volume.target.numpy(), images.numpy()))
    finally:
        model.train(was_training)
    return scores


def _mean_over_ranks(scores: list[Scores], world: _World, device: torch.device) -> dict[str, float]:
    """Mean NMSE/PSNR/SSIM over all volumes of all ranks (every rank must call this)."""
    sums = [sum(getattr(s, key) for s in scores) for key in ("nmse", "psnr", "ssim")]
    totals = world.all_reduce(torch.tensor([*sums, len(scores)], dtype=torch.float64, device=device))
    count = max(float(totals[3]), 1.0)
    return {key: float(totals[i]) / count for i, key in enumerate(("nmse", "psnr", "ssim"))}


# ----------------------------------------------------------------------------------------------
# The training loop


@dataclass
class _Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0
    epoch_position: int = 0
    global_step: int = 0
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])
    best_ssim: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    zero_filled: dict[str, float] | None = None


class _Trainer:
    """One run: model, optimiser, scheduler, progress, and what the run writes."""

    def __init__(self, options: TrainOptions, plan: _Plan, world: _World, console: Console) -> None:
        self.options, self.plan, self.world, self.console = options, plan, world, console
        self.device = plan.device
        self.model = plan.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=options.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=options.lr_step, gamma=options.lr_gamma
        )
        self.loss_fn = ImageLoss(options.loss).to(self.device)
        self.progress = _Progress()
        self.epoch_speed: float | None = None
        if plan.resume is not None:
            self._restore(plan.resume)
        self.network = self._wrap(self.model)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world.size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    # -- run -------------------------------------------------------------------------------------

    def run(self, signals: _StopSignals, started: float) -> TrainResult:
        self._announce()
        if self.progress.zero_filled is None:
            self.progress.zero_filled = self._zero_filled_scores()
        stopped = self._between_epochs(signals)
        while stopped == "continue":
            stopped = self._train_epoch(signals)
            if stopped in ("completed", "epoch-end"):
                self._finish_epoch()
                stopped = self._between_epochs(signals)
        return self._result(stopped, started)

    def _between_epochs(self, signals: _StopSignals) -> str:
        """'continue' with the next epoch, or why the run ends: signal, 'completed' or 'max_steps'."""
        if self.progress.epoch >= self.options.epochs:
            return "completed"
        return self._signalled(signals) or ("max_steps" if self._reached_max_steps() else "continue")

    def _announce(self) -> None:
        plan, config = self.plan, self.plan.config
        count = sum(p.numel() for p in self.model.parameters())
        slices = sum(v.num_slices for v in plan.train_set.volumes)
        where = f"{self.device}" + (f" x {self.world.size} processes" if self.world.size > 1 else "")
        if self.progress.epoch >= self.options.epochs:
            self._say(f"{self.options.out} already holds all {self.options.epochs} epochs; raise --epochs to go on")
            return
        verb = "resuming at" if plan.resume else "starting"
        self._say(
            f"{verb} epoch {self.progress.epoch + 1}/{self.options.epochs}: {self.options.model} "
            f"({config.kind} {config.dims}-D, {count:,} parameters"
            f"{', memory-free' if self.options.memory_free and config.kind == 'irim' else ''}) on "
            f"{len(plan.train_set.volumes)} volumes / {slices} slices, validating on "
            f"{len(plan.val_infos)} volumes; device {where}; run dir {self.options.out}"
        )

    def _train_epoch(self, signals: _StopSignals) -> str:
        """Train the rest of the current epoch; 'completed', 'epoch-end' or why it stopped early."""
        loader, total = self._loader()
        self._reset_peak_memory()
        start_position, tick = self.progress.epoch_position, time.perf_counter()
        slices = 0
        with self._progress_bar() as bar:
            task = bar.add_task("train", total=total, completed=start_position, epoch=self._epoch_label(),
                                loss=math.nan, speed=0.0, memory="")
            stop = None
            for batch in loader:
                loss, count = self._step(batch)
                slices += count
                self._account(loss, count)
                bar.update(task, advance=1, loss=self._epoch_loss(), memory=self._peak_memory(),
                           speed=slices / max(time.perf_counter() - tick, 1e-9))
                stop = self._stop_reason(signals, at_epoch_end=self.progress.epoch_position == total)
                if stop != "epoch-end" and (stop or self.progress.global_step % self.options.checkpoint_every == 0):
                    self._save("last.pt")
                if stop:
                    break
        self.epoch_speed = slices / max(time.perf_counter() - tick, 1e-9)
        return stop or "completed"

    def _loader(self) -> tuple[DataLoader, int]:
        """This epoch's remaining batches: the seeded sampler's order minus the batches already done."""
        dataset, options = self.plan.train_set, self.options
        dataset.set_epoch(self.progress.epoch)
        sampler = DistributedSampler(
            dataset, num_replicas=self.world.size, rank=self.world.rank, shuffle=True, seed=options.seed
        )
        sampler.set_epoch(self.progress.epoch)
        indices = list(sampler)[self.progress.epoch_position * options.batch_size :]
        total = math.ceil(len(sampler) / options.batch_size)
        loader = DataLoader(
            dataset, batch_size=options.batch_size, sampler=indices, num_workers=options.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_sigint if options.num_workers else None,
        )
        return loader, total

    def _step(self, batch: Any) -> tuple[float, int]:
        """One optimisation step; returns the batch's loss and its number of slices."""
        kspace = batch.kspace.to(self.device, non_blocking=True)
        mask = batch.mask.to(self.device, non_blocking=True)
        target = batch.target.to(self.device, non_blocking=True)
        max_value = batch.max_value.to(self.device, torch.float32)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.amp == "bf16"):
            estimates = self.network(kspace, mask)
            losses = [self.loss_fn(crop_to(e, tuple(target.shape[-2:])), target, max_value) for e in estimates]
            loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        slices = target.shape[0] * (target.shape[1] if target.dim() == 4 else 1)
        return float(loss.detach()), int(slices)

    def _account(self, loss: float, slices: int) -> None:
        self.progress.global_step += 1
        self.progress.epoch_position += 1
        self.progress.epoch_loss[0] += loss * slices
        self.progress.epoch_loss[1] += slices

    def _stop_reason(self, signals: _StopSignals, at_epoch_end: bool) -> str | None:
        """Why to stop after this step: a signal on any rank, or --max-steps (then validate first)."""
        signalled = self._signalled(signals)
        if signalled:
            return signalled
        if self._reached_max_steps():
            return "epoch-end" if at_epoch_end else "max_steps"
        return None

    def _signalled(self, signals: _StopSignals) -> str | None:
        """'SIGINT'/'SIGTERM' when any rank got one (all ranks stop at the same step)."""
        flag = torch.tensor([signals.signum or 0], device=self.device)
        signum = int(self.world.all_reduce(flag, dist.ReduceOp.MAX))
        if not signum:
            return None
        signals.signum = signum
        return signal.Signals(signum).name

    def _reached_max_steps(self) -> bool:
        return self.options.max_steps is not None and self.progress.global_step >= self.options.max_steps

    def _finish_epoch(self) -> None:
        """Validate, record, step the scheduler, then write best.pt, last.pt and the reports."""
        lr = self.optimizer.param_groups[0]["lr"]
        val = _mean_over_ranks(
            validate_model(self.model, self._my_volumes(), self.options.val_mask_spec, self.device),
            self.world, self.device,
        )
        record = self._record(val, lr)
        self.progress.epoch += 1
        self.progress.epoch_position = 0
        self.progress.epoch_loss = [0.0, 0.0]
        with warnings.catch_warnings():
            # After a resume at an epoch's end, the optimiser stepped in the previous process only.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            self.scheduler.step()
        if record["best"]:
            self.progress.best_ssim, self.progress.best_epoch = record["val_ssim"], record["epoch"]
            self._save("best.pt")
        self._save("last.pt")
        self._write_reports()
        self._say(_epoch_line(record, self.options.epochs))

    def _record(self, val: dict[str, float], lr: float) -> dict[str, Any]:
        zero = self.progress.zero_filled or {}
        best = self.progress.best_ssim
        record = {
            "epoch": self.progress.epoch + 1,
            "global_step": self.progress.global_step,
            "train_loss": self._epoch_loss_over_ranks(),
            **{f"val_{k}": v for k, v in val.items()},
            **{f"zero_filled_{k}": v for k, v in zero.items()},
            "lr": lr,
            "slices_per_s": self.epoch_speed,
            "peak_memory_bytes": _peak_memory_bytes(self.device),
            "peak_memory_kind": "cuda_max_allocated" if self.device.type == "cuda" else "process_peak_rss",
            "best": math.isfinite(val["ssim"]) and (best is None or val["ssim"] > best),
        }
        self.progress.history.append(record)
        return record

    def _epoch_loss(self) -> float:
        total, count = self.progress.epoch_loss
        return total / count if count else math.nan

    def _epoch_loss_over_ranks(self) -> float:
        """The epoch's mean loss per slice over all ranks (every rank must call this)."""
        sums = torch.tensor(self.progress.epoch_loss, dtype=torch.float64, device=self.device)
        total, count = self.world.all_reduce(sums).tolist()
        return total / count if count else math.nan

    def _my_volumes(self) -> list[VolumeInfo]:
        return self.plan.val_infos[self.world.rank :: self.world.size]

    def _zero_filled_scores(self) -> dict[str, float]:
        """Zero-filled scores under the validation masks, once per run (every rank takes part)."""
        zero = build_model(preset("zero-filled", coils=self.plan.config.coils)).to(self.device)
        return _mean_over_ranks(
            score_model(zero, self._my_volumes(), self.options.val_mask_spec, self.device), self.world, self.device
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def _save(self, name: str) -> None:
        if self.world.is_main:
            save_checkpoint(self.options.out / name, self._payload())

    def _payload(self) -> dict[str, Any]:
        progress = self.progress
        return {
            "model_config": self.plan.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "preset": self.options.model,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": progress.epoch,
            "epoch_position": progress.epoch_position,
            "global_step": progress.global_step,
            "epoch_loss": list(progress.epoch_loss),
            "rng": _rng_state(self.device),
            "options": self.options.to_dict(),
            "best_ssim": progress.best_ssim,
            "best_epoch": progress.best_epoch,
            "history": list(progress.history),
            "zero_filled": progress.zero_filled,
            "train_files": [v.path.name for v in self.plan.train_set.volumes],
            "world_size": self.world.size,
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        _set_rng_state(payload.get("rng", {}), self.device)
        self.progress = _Progress(
            epoch=payload["epoch"], epoch_position=payload["epoch_position"],
            global_step=payload["global_step"], epoch_loss=list(payload["epoch_loss"]),
            best_ssim=payload["best_ssim"], best_epoch=payload["best_epoch"],
            history=list(payload["history"]), zero_filled=payload["zero_filled"],
        )

    def _write_reports(self) -> None:
        if not self.world.is_main:
            return
        history, out = self.progress.history, self.options.out
        lines = "".join(json.dumps(_finite(r)) + "\n" for r in history)
        _write_atomic(out / "metrics.jsonl", lines.encode())
        _write_atomic(out / "training_curve.png", _curve_png(history, self.progress.zero_filled, self.options.loss))

    # -- feedback --------------------------------------------------------------------------------

    def _progress_bar(self) -> Progress:
        return Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.1f} slices/s"),
            TextColumn("{task.fields[memory]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=True, disable=not self.world.is_main,
        )

    def _say(self, line: str) -> None:
        """One plain line: no rich markup (``[best]`` is text) and no hard wrapping in logs."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _epoch_label(self) -> str:
        return f"{self.progress.epoch + 1}/{self.options.epochs}"

    def _reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak_memory(self) -> str:
        label = "peak" if self.device.type == "cuda" else "RSS"
        return f"{label} {_format_bytes(_peak_memory_bytes(self.device))}"

    def _result(self, stopped: str, started: float) -> TrainResult:
        progress = self.progress
        code = EXIT_CODES.get(signal.Signals[stopped], 0) if stopped.startswith("SIG") else 0
        return TrainResult(
            run_dir=self.options.out, model=self.model, config=self.plan.config, epochs_done=progress.epoch,
            global_step=progress.global_step, history=list(progress.history),
            zero_filled=dict(progress.zero_filled or {}), best_epoch=progress.best_epoch,
            best_ssim=progress.best_ssim, stopped=stopped, exit_code=code,
            wall_time_s=time.perf_counter() - started, is_main=self.world.is_main,
            resume_command=resume_command(
                replace(self.options, max_steps=None) if stopped == "max_steps" else self.options, self.world.size
            ),
        )


def _build(config: ModelConfig, options: TrainOptions) -> nn.Module:
    """The model with weights drawn from ``options.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return build_model(config, memory_free=options.memory_free)


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _peak_memory_bytes(device: torch.device) -> int:
    """CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _format_bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count / 1e3:.0f} kB"


# ----------------------------------------------------------------------------------------------
# Reports


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/Inf: those become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


def _curve_png(history: list[dict[str, Any]], zero_filled: dict[str, float] | None, loss: str) -> bytes:
    """Training loss and validation SSIM per epoch, with zero-filled SSIM as a reference line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, ssim_ax = figure.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o")
    loss_ax.set(xlabel="epoch", ylabel=f"training loss ({'1 - SSIM' if loss == 'ssim' else loss})", title="loss")
    ssim_ax.plot(epochs, [r["val_ssim"] for r in history], marker="o", label="model")
    if zero_filled:
        ssim_ax.axhline(zero_filled["ssim"], color="gray", linestyle="--", label="zero-filled")
    best = [r for r in history if r.get("best")]
    if best:
        ssim_ax.plot([best[-1]["epoch"]], [best[-1]["val_ssim"]], "r*", markersize=12, label="best")
    ssim_ax.set(xlabel="epoch", ylabel="SSIM", title="validation SSIM")
    ssim_ax.legend()
    for ax in (loss_ax, ssim_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f}  "
        f"val NMSE {record['val_nmse']:.4f} PSNR {record['val_psnr']:.2f} SSIM {record['val_ssim']:.4f}  "
        f"(zero-filled SSIM {record.get('zero_filled_ssim', math.nan):.4f})  lr {record['lr']:.2e}  "
        f"{record['slices_per_s'] or math.nan:.1f} slices/s{'  [best]' if record['best'] else ''}"
    )


def summary_table(result: TrainResult) -> Table:
    """One row per epoch (the best in bold) and a zero-filled reference row."""
    table = Table(title=f"training run {result.run_dir}")
    for column in ("epoch", "train loss", "NMSE", "PSNR", "SSIM", "lr"):
        table.add_column(column, justify="right")
    for r in result.history:
        table.add_row(
            str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['val_nmse']:.4f}", f"{r['val_psnr']:.2f}",
            f"{r['val_ssim']:.4f}", f"{r['lr']:.2e}", style="bold" if r["epoch"] == result.best_epoch else None,
        )
    zero = result.zero_filled
    if zero:
        table.add_row("zero-filled", "", f"{zero['nmse']:.4f}", f"{zero['psnr']:.2f}", f"{zero['ssim']:.4f}", "",
                      style="dim")
    if result.best_epoch is not None:
        table.caption = f"best.pt = epoch {result.best_epoch} (SSIM {result.best_ssim:.4f}); {result.wall_time_s:.0f} s"
    return table


def print_summary(result: TrainResult, console: Console | None = None) -> None:
    """The final table, and for an interrupted run the line that says how to resume it."""
    if not result.is_main:
        return
    console = console or Console()
    if result.history:
        console.print(summary_table(result))
    if result.exit_code:
        console.print(
            f"interrupted at epoch {result.epochs_done + 1} step {result.global_step}; "
            f"resume with: {result.resume_command}",
            markup=False, highlight=False, soft_wrap=True,
        )
    elif result.stopped == "max_steps":
        console.print(f"stopped at step {result.global_step} (--max-steps); continue with: {result.resume_command}",
                      markup=False, highlight=False, soft_wrap=True)


def resume_command(options: TrainOptions, world_size: int = 1) -> str:
    """The ``irecon train`` command line that continues this run (its non-default options + --resume)."""
    args = ["irecon", "train", str(options.train_dir), "--val", str(options.val_dir), "--model", options.model,
            "--out", str(options.out)]
    defaults = TrainOptions(Path(), Path(), "", Path())
    skip = {"train_dir", "val_dir", "model", "out", "resume", "overwrite"}
    for f in fields(TrainOptions):
        value = getattr(options, f.name)
        if f.name in skip or value == getattr(defaults, f.name) or value is None:
            continue
        if isinstance(value, bool):
            args.append(f"--{_flag(f.name)}" if value else f"--no-{_flag(f.name)}")
        elif isinstance(value, tuple):
            args += [f"--{_flag(f.name)}", *map(str, value)]
        else:
            args += [f"--{_flag(f.name)}", str(value)]
    command = shlex.join([*args, "--resume"])
    return f"torchrun --nproc-per-node {world_size} --no-python {command}" if world_size > 1 else command


# ----------------------------------------------------------------------------------------------
# Command line


class _VariadicCommand(click.Command):
    """Accepts ``--accelerations 4 8``: values after a variadic option are split into repeats of it."""

    variadic = ("--accelerations", "--center-fractions")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        expanded: list[str] = []
        current, pending = None, False
        for arg in args:
            if arg in self.variadic:
                if pending:
                    expanded.append(current)
                current, pending = arg, True
            elif current is not None and _is_number(arg):
                expanded += [current, arg]
                pending = False
            else:
                if pending:
                    expanded.append(current)  # an option without a value: click reports it
                current, pending = None, False
                expanded.append(arg)
        if pending:
            expanded.append(current)
        return super().parse_args(ctx, expanded)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@click.command("train", cls=_VariadicCommand)
@click.argument("train_dir", type=click.Path(path_type=Path))
@click.option("--val", "val_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of validation .h5 volumes (whole volumes, file-name-seeded masks).")
@click.option("--model", required=True, help=f"Preset: {', '.join(p for p in PRESETS if p != 'zero-filled')}.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="RUN_DIR for last.pt, best.pt, metrics.jsonl, training_curve.png.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate (appendix B).")
@click.option("--lr-step", type=int, default=10, show_default=True, help="StepLR: epochs between decays.")
@click.option("--lr-gamma", type=float, default=0.5, show_default=True, help="StepLR: decay factor.")
@click.option("--loss", type=click.Choice(LOSSES), default="ssim", show_default=True,
              help="1-SSIM (fastmri SSIMLoss), or L1/MSE, each with the data range = the volume's max.")
@click.option("--train-resolution", nargs=2, type=int, default=None, metavar="H W",
              help="Crop/pad training k-space in image space (official i-RIM: 368 368); needed for "
                   "batches > 1 of differently sized volumes.  [default: native size]")
@click.option("--accelerations", multiple=True, type=int, default=(4, 8), show_default=True,
              help="One or more values, paired with --center-fractions; validation uses the first pair.")
@click.option("--center-fractions", multiple=True, type=float, default=(0.08, 0.04), show_default=True)
@click.option("--mask-type", type=click.Choice(MASK_TYPES), default="random", show_default=True)
@click.option("--slab", type=int, default=None, help="Slices per 3-D training slab.  [default: 8 for 3-D presets]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N  [default: cuda if available, else cpu]")
@click.option("--amp", type=click.Choice(["bf16"]), default=None, help="bfloat16 autocast for forward and loss.")
@click.option("--memory-free/--no-memory-free", default=True, show_default=True,
              help="Invert-to-learn backprop for the i-RIM (memory independent of depth).")
@click.option("--steps", type=int, default=None, help="Override the preset's steps.")
@click.option("--layers", type=int, default=None, help="Override the i-RIM layers per step.")
@click.option("--n-latent", type=int, default=None, help="Override the i-RIM state channels.")
@click.option("--multiplicity", type=int, default=None, help="Override the i-RIM multiplicity.")
@click.option("--shared-weights/--no-shared-weights", default=None, help="Override weight sharing across steps.")
@click.option("--checkpoint-every", type=int, default=100, show_default=True, help="Write last.pt every N steps.")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from last.pt, exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Start afresh in a RUN_DIR that holds checkpoints.")
@click.option("--max-steps", type=int, default=None,
              help="Stop after N optimisation steps in total (demos, tests); resume to continue.")
def train_command(**params: Any) -> None:
    """Train a preset on TRAIN_DIR, validating on --val after every epoch.

    Writes RUN_DIR/last.pt (every --checkpoint-every steps and each epoch), best.pt (highest mean
    validation SSIM), metrics.jsonl and training_curve.png. Ctrl-C or SIGTERM finishes the step,
    writes last.pt and exits 130/143; --resume continues. Run under torchrun for multi-GPU.
    """
    from irecon.cli import user_errors  # imported here: cli.py imports this module to register it

    user_errors(_run_command)(**params)


def _run_command(**params: Any) -> None:
    options = TrainOptions(**params)
    try:
        result = train(options)
    except KeyboardInterrupt:
        click.echo("interrupted before training started; nothing was written", err=True)
        sys.exit(130)
    print_summary(result)
    sys.exit(result.exit_code)

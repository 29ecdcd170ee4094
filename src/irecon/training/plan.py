"""Every check made before a training run writes anything, and the checked inputs it runs on.

:func:`prepare` checks the options, reads every input header, builds the model and applies the
run-folder rules of :mod:`irecon.training.state`; it raises :class:`IreconError` and leaves
the disk untouched when anything is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from irecon.data.datasets import MRIDataset
from irecon.data.splits import SplitSpec
from irecon.data.volumes import VolumeInfo, find_volumes, read_volume_info
from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.losses import LOSSES, SSIM_WINDOW
from irecon.models.checkpoint import load_checkpoint
from irecon.models.configs import ModelConfig
from irecon.models.presets import preset
from irecon.training.options import DEFAULT_3D_SLAB, PER_LAUNCH, TrainOptions, flag
from irecon.training.state import check_run_dir


@dataclass
class Plan:
    """The checked inputs of a run; ``resume`` is the payload of the ``last.pt`` to continue from."""

    train_set: MRIDataset
    val_infos: list[VolumeInfo]
    config: ModelConfig
    model: nn.Module
    device: torch.device
    slab: int
    resume: dict[str, Any] | None


def prepare(
    options: TrainOptions, world_size: int = 1, local_rank: int | None = None, given: Collection[str] | None = None
) -> tuple[TrainOptions, Plan]:
    """Check every option and read every header; raise IreconError before anything is written.

    Returns the options the run uses: with ``resume``, every option not in ``given`` (the names the
    user set; None means all) comes from the checkpoint.
    """
    if options.resume and options.overwrite:
        raise IreconError("--resume and --overwrite contradict each other; pass one of them")
    if options.resume:
        options = resumed_options(options, given)
    check_options(options)
    device = resolve_device(options.device, local_rank if world_size > 1 else None)
    dims = base_config(options).dims
    slab = resolve_slab(options.slab, dims)
    train_files, _ = find_volumes([options.train_dir])
    val_files, _ = find_volumes([options.val_dir])
    if options.scan:
        for path in [*train_files, *val_files]:
            read_volume_info(path, check_values=True)
    train_set = MRIDataset(
        train_files,
        options.mask_spec,
        train=True,
        resolution=options.train_resolution,
        slab=slab,
        seed=options.seed,
        targets=not options.self_supervised,
    )
    first = train_set.volumes[0]
    check_batching(train_set.volumes, options)
    val_set = MRIDataset(val_files, options.val_mask_spec, train=False, challenge=first.challenge)
    check_validation(val_set.volumes, first.num_coils, need_targets=not options.self_supervised)
    check_loss_size(train_set.volumes, options.loss)
    config = preset(options.model, coils=first.num_coils, **options.model_overrides())
    model = build_seeded(config, options)
    resume = check_run_dir(options, config, [p.name for p in train_files], world_size)
    return options, Plan(train_set, val_set.volumes, config, model, device, slab, resume)


def resumed_options(options: TrainOptions, given: Collection[str] | None) -> TrainOptions:
    """``options`` with every field the user did not give taken from ``RUN_DIR/last.pt``."""
    if given is None:
        return options
    path = options.out / "last.pt"
    if not path.is_file():
        raise IreconError("--resume: no last.pt to resume from", options.out)
    saved = load_checkpoint(path).get("options")
    if not isinstance(saved, dict):
        raise IreconError("not a training checkpoint (no options); cannot resume", path)
    known = {f.name for f in fields(TrainOptions)}
    taken = {k: v for k, v in saved.items() if k in known and k not in given and k not in PER_LAUNCH}
    return replace(options, **taken)


def check_options(options: TrainOptions) -> None:
    """Ranges and combinations of the plain options."""
    for name in ("train_dir", "val_dir", "model"):
        if getattr(options, name) is None:
            raise IreconError(
                f"{'' if name == 'train_dir' else '--'}{flag(name)} is needed (or --resume an earlier run)"
            )
    for name in ("epochs", "batch_size", "lr_step", "checkpoint_every", "max_bad_steps"):
        if getattr(options, name) < 1:
            raise IreconError(f"--{flag(name)} must be at least 1, got {getattr(options, name)}")
    if not (math.isfinite(options.lr) and options.lr > 0):
        raise IreconError(f"--lr must be a positive number, got {options.lr}")
    if not 0 < options.lr_gamma <= 1:
        raise IreconError(f"--lr-gamma must be in (0, 1], got {options.lr_gamma}")
    if options.loss not in LOSSES:
        raise IreconError(f"unknown loss {options.loss!r}; choose one of {', '.join(LOSSES)}")
    if options.amp not in (None, "bf16"):
        raise IreconError(f"--amp must be bf16 (or left out), got {options.amp!r}")
    if options.threads is not None and options.threads < 1:
        raise IreconError(f"--threads must be at least 1, got {options.threads}")
    if not options.log_every > 0:
        raise IreconError(f"--log-every must be a positive number of seconds, got {options.log_every}")
    for name in ("num_workers", "seed"):
        if getattr(options, name) is not None and getattr(options, name) < 0:
            raise IreconError(f"--{flag(name)} must not be negative, got {getattr(options, name)}")
    if options.max_steps is not None and options.max_steps < 1:
        raise IreconError(f"--max-steps must be at least 1, got {options.max_steps}")
    if options.time_budget_s is not None and not (math.isfinite(options.time_budget_s) and options.time_budget_s > 0):
        raise IreconError(f"--time-budget must be a positive duration, got {options.time_budget_s}")
    if options.resume and options.overwrite:
        raise IreconError("--resume and --overwrite contradict each other; pass one of them")
    options.mask_spec.validate()
    if options.self_supervised:
        if not (math.isfinite(options.ssdu_seen_weight) and options.ssdu_seen_weight >= 0):
            raise IreconError(f"--ssdu-seen-weight must be a non-negative number, got {options.ssdu_seen_weight}")
        if options.ssdu_splits < 1:
            raise IreconError(f"--ssdu-splits must be at least 1, got {options.ssdu_splits}")
        try:
            SplitSpec(options.ssdu_rho, options.ssdu_selection).validate()
        except IreconError as err:
            raise IreconError(f"--ssdu-rho/--ssdu-selection: {err.problem}") from None


def base_config(options: TrainOptions) -> ModelConfig:
    """The preset with the overrides; refuses presets that have nothing to train."""
    if not preset(options.model).learned:
        raise IreconError("the zero-filled preset has no parameters to train; choose another --model")
    return preset(options.model, **options.model_overrides())


def resolve_slab(slab: int | None, dims: int) -> int:
    """Slices per training sample: 1 for 2-D models, ``slab`` (default 8, at least 2) for 3-D ones."""
    if dims == 2:
        if slab not in (None, 1):
            raise IreconError(f"--slab {slab} needs a 3-D preset (tiny-3d, paper-3d); 2-D models train on slices")
        return 1
    slab = DEFAULT_3D_SLAB if slab is None else slab
    if slab < 2:
        raise IreconError(f"--slab must be at least 2 for a 3-D preset, got {slab}")
    return slab


def check_batching(volumes: Sequence[VolumeInfo], options: TrainOptions) -> None:
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


def check_validation(volumes: Sequence[VolumeInfo], coils: int, need_targets: bool = True) -> None:
    """Every validation volume has the training data's coil count, and a target unless self-supervised."""
    for info in volumes:
        if need_targets and info.target_key is None:
            raise IreconError("validation file has no target to score against", info.path)
        if info.num_coils != coils:
            raise IreconError(
                f"validation file has {info.num_coils} coils but the training data has {coils}", info.path
            )


def check_loss_size(volumes: Sequence[VolumeInfo], loss: str) -> None:
    """The SSIM loss needs targets at least as large as its window."""
    if loss != "ssim":
        return
    for info in volumes:
        if info.target_shape is not None and min(info.target_shape) < SSIM_WINDOW:
            raise IreconError(
                f"target {info.target_shape} is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window; "
                "use --loss l1 or mse",
                info.path,
            )


def build_seeded(config: ModelConfig, options: TrainOptions) -> nn.Module:
    """The model with weights drawn from ``options.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return config.build(memory_free=options.memory_free)

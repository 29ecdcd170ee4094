"""Every check made before a training run writes anything, and the checked inputs it runs on.

:func:`prepare` checks the options, reads every input header, builds the model and applies the
run-folder rules of :mod:`irecon.training.state`; it raises :class:`IreconError` and leaves
the disk untouched when anything is wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irecon.data.datasets import MRIDataset
from irecon.data.volumes import VolumeInfo, find_volumes, read_volume_info
from irecon.device import resolve_device
from irecon.errors import IreconError, option
from irecon.losses import LOSSES, SSIM_LOSSES, SSIM_WINDOW
from irecon.models.checkpoint import load_checkpoint
from irecon.models.configs import ModelConfig, config_from_dict
from irecon.models.presets import preset
from irecon.planning.fit import MemoryFit
from irecon.planning.runs import fit_training
from irecon.training.folders import RUNS, latest_run_folder, new_run_folder
from irecon.training.initial import InitWeights, apply_init, check_init_coils, load_init
from irecon.training.options import DEFAULT_3D_SLAB, PER_LAUNCH, TrainOptions
from irecon.training.runtime import World
from irecon.training.state import check_run_dir, own_run_dir

FIT_FIELDS = {"steps": "steps", "batch": "batch_size", "slab": "slab"}  # --fit: the option the planner sets


@dataclass
class Plan:
    """The checked inputs of a run; ``resume`` is the payload of the ``last.pt`` to continue from.

    ``memory_fit`` is the planner's choice under ``--fit-memory`` (:class:`irecon.planning.fit.MemoryFit` as a dict).
    """

    train_set: MRIDataset
    val_infos: list[VolumeInfo]
    config: ModelConfig
    model: nn.Module
    device: torch.device
    slab: int
    resume: dict[str, Any] | None
    memory_fit: dict[str, Any] | None = None


def prepare(
    options: TrainOptions, world_size: int = 1, local_rank: int | None = None, given: Collection[str] | None = None
) -> tuple[TrainOptions, Plan]:
    """Check every option and read every header; raise IreconError before anything is written.

    Returns the options the run uses: with ``resume``, every option not in ``given`` (the names the
    user set; None means all) comes from the checkpoint.
    """
    if options.resume and options.overwrite:
        raise IreconError("«resume» and «overwrite» contradict each other; pass one of them")
    options, init, _ = with_defaults(options, world_size)
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
    train_set = training_set(train_files, options, slab)
    first = train_set.volumes[0]
    val_set = MRIDataset(val_files, options.val_mask_spec, train=False, virtual_coils=options.virtual_coils)
    check_validation(val_set.volumes, first, options.virtual_coils, need_targets=not options.self_supervised)
    if options.tensorboard and val_set.volumes[0].target_key is None:
        raise IreconError(
            "«tensorboard» shows the first validation volume beside its target; it has none", val_set.volumes[0].path
        )
    check_loss_size(train_set.volumes, options.loss)
    memory_fit = None
    if options.fit_memory is not None and not options.resume:
        check_run_dir(options, base_config(options), [p.name for p in train_files], world_size)  # before planning
        options, memory_fit = fit_to_memory(options, train_set, device, world_size)
        if options.slab is not None and options.slab != slab:
            slab = options.slab
            train_set = training_set(train_files, options, slab)
    coils = first.num_coils if options.virtual_coils is None else options.virtual_coils
    config = preset(options.model, coils=coils, **options.model_overrides())
    if init is not None:
        check_init_coils(init, coils)
        config = init.config
    elif options.init is not None:  # a resumed run that started from --init weights: their config
        config = config_from_dict(load_checkpoint(options.out / "last.pt")["model_config"])
    model = build_seeded(config, options)
    if init is not None:
        model.load_state_dict(init.weights)
    resume = check_run_dir(options, config, [p.name for p in train_files], world_size, [p.name for p in val_files])
    fit_record = memory_fit.to_dict() if memory_fit is not None else (resume or {}).get("memory_fit")
    return options, Plan(train_set, val_set.volumes, config, model, device, slab, resume, fit_record)


def with_defaults(options: TrainOptions, world_size: int = 1) -> tuple[TrainOptions, InitWeights | None, list[str]]:
    """``options`` with ``--init`` applied and the run folder chosen when ``--out`` is left out, and notes saying so.

    A new run goes to ``runs/<preset>-<N>``; ``--resume`` takes the latest run in ``runs/``. Under
    torchrun ``--out`` is needed (every process must name the same folder). Returns the loaded
    ``--init`` weights (None without them, and on a resume: the checkpoint has the run's own).
    """
    if options.resume and options.init is not None:
        raise IreconError("«init» starts a new run from weights; «resume» continues one: pass one of them")
    if not options.resume:
        check_options(options)  # what a new run lacks, all at once, before the data is read
    notes, init = [], None
    if options.init is not None and not options.resume:
        init = load_init(options)
        options = apply_init(options, init)
        notes.append(f"starting from the weights of {init.source} ({options.model}); the optimiser starts fresh")
    if options.out is not None:
        return options, init, notes
    if world_size > 1:
        raise IreconError("under torchrun pass «out»: every process must name the same run folder")
    if options.resume:
        folder = latest_run_folder()
        notes.append(f"no «out»: resuming the latest run in {RUNS}/ (the newest last.pt): {folder}")
    else:
        folder = new_run_folder(str(options.model))
        notes.append(f"no «out»: a new run folder {folder}")
    return replace(options, out=folder), init, notes


def training_set(files: Sequence[Path], options: TrainOptions, slab: int) -> MRIDataset:
    """The training samples: re-drawn masks, optional training resolution, slices or slabs of ``slab``."""
    return MRIDataset(
        files,
        options.mask_spec,
        train=True,
        resolution=options.train_resolution,
        slab=slab,
        seed=options.seed,
        virtual_coils=options.virtual_coils,
        targets=not options.self_supervised,
    )


def fit_to_memory(
    options: TrainOptions, train_set: MRIDataset, device: torch.device, world_size: int
) -> tuple[TrainOptions, MemoryFit]:
    """The options with ``--fit`` (T, the batch size or the slab) set to the largest that fits ``--fit-memory``."""
    if world_size > 1:
        raise IreconError("«fit_memory» plans one process; under torchrun pass the T or batch it chose on one GPU")
    field = FIT_FIELDS[options.fit]
    given = getattr(options, field)
    if given is not None and not (field == "batch_size" and given == 1):
        raise IreconError(f"«fit» {options.fit} chooses {option(field)}; leave {option(field)} out or «fit_memory» off")
    fit = fit_training(
        options.fit,
        options.fit_memory or "",
        options.model or "",
        options.model_overrides(),
        train_set.volumes,
        batch=options.batch_size,
        slab=train_set.slab,
        resolution=options.train_resolution,
        loss=options.loss,
        memory_free=options.memory_free,
        items=len(train_set),
        device=device,
    )
    return replace(options, **{field: fit.value}), fit


def resumed_options(options: TrainOptions, given: Collection[str] | None) -> TrainOptions:
    """``options`` with every field the user did not give taken from ``RUN_DIR/last.pt``."""
    if given is None:
        return options
    path = options.out / "last.pt"
    if not path.is_file():
        raise IreconError("«resume»: no last.pt to resume from", options.out)
    saved = load_checkpoint(path).get("options")
    if not isinstance(saved, dict):
        raise IreconError("not a training checkpoint (no options); cannot resume", path)
    known = {f.name for f in fields(TrainOptions)}
    taken = {k: v for k, v in saved.items() if k in known and k not in given and k not in PER_LAUNCH}
    return replace(options, **taken)


def check_options(options: TrainOptions) -> None:
    """The options' own checks, then the loss name (the losses live with torch)."""
    options.validate()
    if options.loss not in LOSSES:
        raise IreconError(f"unknown loss {options.loss!r}; choose one of {', '.join(LOSSES)}")


def base_config(options: TrainOptions) -> ModelConfig:
    """The preset with the overrides; refuses presets that have nothing to train."""
    if not preset(options.model).learned:
        raise IreconError("the zero-filled preset has no parameters to train; choose another «model»")
    return preset(options.model, **options.model_overrides())


def resolve_slab(slab: int | None, dims: int) -> int:
    """Slices per training sample: 1 for 2-D models, ``slab`` (default 8, at least 2) for 3-D ones."""
    if dims == 2:
        if slab not in (None, 1):
            raise IreconError(f"«slab» {slab} needs a 3-D preset (tiny-3d, paper-3d); 2-D models train on slices")
        return 1
    slab = DEFAULT_3D_SLAB if slab is None else slab
    if slab < 2:
        raise IreconError(f"«slab» must be at least 2 for a 3-D preset, got {slab}")
    return slab


def check_validation(
    volumes: Sequence[VolumeInfo], training: VolumeInfo, virtual_coils: int | None = None, need_targets: bool = True
) -> None:
    """Every validation volume has a target (unless not ``need_targets``: self-supervised), the training data's
    challenge and (unless coils are compressed to ``virtual_coils``) its coil count (``training``: the first
    training volume)."""
    for info in volumes:
        if need_targets and info.target_key is None:
            raise IreconError("validation file has no target to score against", info.path)
        if info.challenge != training.challenge:
            raise IreconError(
                f"validation file is {info.challenge} but the training data ({training.path.parent}) is "
                f"{training.challenge}; validate on files of the training data's challenge",
                info.path,
            )
        if virtual_coils is None and info.num_coils != training.num_coils:
            raise IreconError(
                f"validation file has {info.num_coils} coils but the training data ({training.path.parent}) has "
                f"{training.num_coils}",
                info.path,
            )


def check_loss_size(volumes: Sequence[VolumeInfo], loss: str) -> None:
    """The SSIM loss needs targets at least as large as its window."""
    if loss not in SSIM_LOSSES:
        return
    for info in volumes:
        if info.target_shape is not None and min(info.target_shape) < SSIM_WINDOW:
            raise IreconError(
                f"target {info.target_shape} is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window; "
                "use «loss» l1 or mse",
                info.path,
            )


def build_seeded(config: ModelConfig, options: TrainOptions) -> nn.Module:
    """The model with weights drawn from ``options.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return config.build(memory_free=options.memory_free)


@contextlib.contextmanager
def own_run_folder(options: TrainOptions, plan: Plan, world: World) -> Iterator[None]:
    """Rank 0 creates and owns ``RUN_DIR`` (its lock) for the block; every rank learns whether it could.

    Under the lock rank 0 re-reads ``last.pt`` for a resume: it may be newer than the plan's.
    """
    with contextlib.ExitStack() as stack:
        refused: IreconError | None = None
        if world.is_main:
            names = [v.path.name for v in plan.train_set.volumes], [v.path.name for v in plan.val_infos]
            try:
                plan.resume = stack.enter_context(own_run_dir(options, plan.config, names[0], world.size, names[1]))
            except IreconError as err:
                refused = err
        owned = torch.tensor([0 if refused else 1], device=plan.device)
        if not int(world.all_reduce(owned, torch.distributed.ReduceOp.MIN)):
            raise refused or IreconError("process 0 could not take the run folder (see its error)", options.out)
        yield

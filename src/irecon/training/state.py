"""A training run's checkpoint: the one dict ``last.pt``/``best.pt`` hold, and the rules for resuming it.

The payload is plain values and tensors (``torch.load(weights_only=True)`` reads it): the model
config and weights (what any command needs), the optimiser state (``torch.optim.Adam``'s format,
also when it was sharded), the scheduler and RNG states, the run's :class:`Progress` with every
rank's epoch loss so far, its options, the training and validation file names and the world size.
A resumed run must keep the options in :data:`RESUME_FIXED`, the model config, the training files
and the validation files (the zero-filled scores and ``best.pt`` were chosen on them); it may change
the world size at an epoch's end. One process at a time owns a run folder (:func:`own_run_dir`).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from irecon.errors import IreconError, option
from irecon.files import check_writable_folder, exclusive_lock, os_errors
from irecon.models.checkpoint import load_checkpoint
from irecon.models.configs import ModelConfig, config_from_dict
from irecon.training.options import TrainOptions

CHECKPOINTS = ("last.pt", "best.pt")
REPORTS = ("metrics.jsonl", "training_curve.png")
LOCK_FILE = ".irecon-train.lock"
BUSY = "is in use by another irecon train ({holder}); wait for it to end or choose another «out»"
# Options that decide the batches, masks and learning rates: a resumed run must keep them.
RESUME_FIXED = (
    "batch_size",
    "lr",
    "lr_step",
    "lr_gamma",
    "loss",
    "train_resolution",
    "accelerations",
    "center_fractions",
    "mask_type",
    "slab",
    "seed",
    "virtual_coils",
)


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0
    epoch_position: int = 0
    global_step: int = 0
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])
    best_ssim: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    zero_filled: dict[str, float] | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any], rank: int = 0, world_size: int = 1) -> "Progress":
        """Rank ``rank``'s progress: its own epoch loss when the world size is the checkpoint's, else
        rank 0 takes the whole epoch loss (at an epoch's end, where it is zero) and the others none."""
        ranks = payload.get("epoch_loss_ranks")
        if ranks is not None and len(ranks) == world_size:
            epoch_loss = list(ranks[rank])
        else:
            epoch_loss = list(payload["epoch_loss"]) if rank == 0 else [0.0, 0.0]
        return cls(
            epoch=payload["epoch"],
            epoch_position=payload["epoch_position"],
            global_step=payload["global_step"],
            epoch_loss=epoch_loss,
            best_ssim=payload["best_ssim"],
            best_epoch=payload["best_epoch"],
            history=list(payload["history"]),
            zero_filled=payload["zero_filled"],
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epoch_position": self.epoch_position,
            "global_step": self.global_step,
            "epoch_loss": list(self.epoch_loss),
            "best_ssim": self.best_ssim,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "zero_filled": self.zero_filled,
        }


def training_payload(
    options: TrainOptions,
    plan: Any,
    model: torch.nn.Module,
    optimizer_state: dict[str, Any],
    scheduler: Any,
    progress: Progress,
    epoch_loss_ranks: list[list[float]],
    wall_time_s: float,
) -> dict[str, Any]:
    """The checkpoint dict of a run (``plan``: its :class:`irecon.training.plan.Plan`); weights on the CPU.

    ``epoch_loss_ranks`` holds every rank's (loss sum, slices) of the epoch so far; ``epoch_loss``
    is their sum, and its length is the world size.
    """
    summed = [sum(pair[0] for pair in epoch_loss_ranks), sum(pair[1] for pair in epoch_loss_ranks)]
    return {
        "model_config": plan.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preset": options.model,
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        **progress.to_payload(),
        "epoch_loss": summed,
        "epoch_loss_ranks": epoch_loss_ranks,
        "rng": rng_state(plan.device),
        "options": options.to_dict(),
        "virtual_coils": options.virtual_coils,
        "train_files": [v.path.name for v in plan.train_set.volumes],
        "val_files": [v.path.name for v in plan.val_infos],
        "world_size": len(epoch_loss_ranks),
        "wall_time_s": wall_time_s,
        "time_budget_s": options.time_budget_s,
        **({"memory_fit": plan.memory_fit} if getattr(plan, "memory_fit", None) else {}),
    }


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """The torch (and CUDA) RNG states, so a resumed run draws what the stopped one would have."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def check_run_dir(
    options: TrainOptions,
    config: ModelConfig,
    train_files: list[str],
    world_size: int,
    val_files: list[str] | None = None,
) -> dict[str, Any] | None:
    """Refuse to clobber checkpoints; with --resume, load last.pt and check it fits this run."""
    out = options.out
    if out.exists() and not out.is_dir():
        raise IreconError("«out» exists and is not a folder", out)
    check_writable_folder(out, create=False)
    has_checkpoints = any((out / name).exists() for name in CHECKPOINTS)
    if options.resume:
        if not (out / "last.pt").is_file():
            raise IreconError("«resume»: no last.pt to resume from", out)
        payload = load_checkpoint(out / "last.pt")
        check_resumable(payload, options, config, train_files, world_size, val_files)
        return payload
    if has_checkpoints and not options.overwrite:
        raise IreconError(
            "holds checkpoints of an earlier run; pass «resume» to continue it or «overwrite» to start afresh",
            out,
        )
    return None


def check_resumable(
    payload: dict[str, Any],
    options: TrainOptions,
    config: ModelConfig,
    train_files: list[str],
    world_size: int,
    val_files: list[str] | None = None,
) -> None:
    """The checkpoint's model, fixed options, files and (mid-epoch) world size must match this run.

    Validation files are compared when both the checkpoint and the caller name them.
    """
    path = options.out / "last.pt"
    if "options" not in payload or "global_step" not in payload:
        raise IreconError("not a training checkpoint (no options/progress); cannot resume", path)
    saved_config = config_from_dict(payload["model_config"]).to_dict()
    model_diff = differences(saved_config, config.to_dict(), list(saved_config))
    if model_diff:
        raise IreconError(f"cannot resume with different model options: {model_diff}", path)
    option_diff = differences(payload["options"], options.to_dict(), list(RESUME_FIXED))
    if option_diff:
        raise IreconError(f"cannot resume with different training options: {option_diff}", path)
    if payload.get("train_files") != train_files:
        raise IreconError("cannot resume: the training files differ from the ones the run started with", path)
    saved_val = payload.get("val_files")
    if val_files is not None and saved_val is not None and saved_val != val_files:
        raise IreconError(
            f"cannot resume with other validation files ({_files_text(val_files)} now, "
            f"{_files_text(saved_val)} in the checkpoint): its zero-filled scores and best.pt were chosen on "
            "those; resume with the run's «val_dir», or start a new run in another «out»",
            path,
        )
    if payload.get("world_size", 1) != world_size and payload.get("epoch_position", 0):
        raise IreconError(
            f"cannot resume mid-epoch with {world_size} processes; the run used {payload.get('world_size')}", path
        )


def _files_text(names: Sequence[str]) -> str:
    """'a.h5, b.h5' or 'a.h5, b.h5, ... (7 files)' for a message."""
    shown = ", ".join(names[:2])
    return f"{shown}, ... ({len(names)} files)" if len(names) > 2 else shown


def differences(saved: dict[str, Any], now: dict[str, Any], keys: Sequence[str]) -> str:
    """'name: saved (checkpoint) vs now' for every key whose value changed, joined by '; '."""
    changed = [k for k in keys if saved.get(k) != now.get(k)]
    return "; ".join(f"{option(k)} {saved.get(k)} in the checkpoint vs {now.get(k)} now" for k in changed)


@contextlib.contextmanager
def own_run_dir(
    options: TrainOptions, config: ModelConfig, train_files: list[str], world_size: int, val_files: list[str]
) -> Iterator[dict[str, Any] | None]:
    """Create RUN_DIR and hold its lock (:data:`LOCK_FILE`) for the block; a second run is refused.

    Under the lock the folder is checked again (another run may have written it since the plan was
    made) and cleared for ``--overwrite``; yields the ``last.pt`` payload to resume from, or None.
    """
    with os_errors(options.out):
        options.out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(options.out / LOCK_FILE, BUSY):
        resume = check_run_dir(options, config, train_files, world_size, val_files)
        make_run_dir(options)
        yield resume


def make_run_dir(options: TrainOptions) -> None:
    """Create RUN_DIR; with --overwrite, remove the earlier run's checkpoints and reports first."""
    with os_errors(options.out):
        options.out.mkdir(parents=True, exist_ok=True)
        if options.overwrite:
            for name in CHECKPOINTS + REPORTS:
                (options.out / name).unlink(missing_ok=True)


class CheckpointNotWritten(IreconError):
    """A checkpoint or report could not be written (a full disk): the files already there stand."""


def not_written(err: IreconError, saved_step: int | None, command: str) -> CheckpointNotWritten:
    """``err`` (a failed write) with what is left on disk and how to go on once there is room."""
    if saved_step is None:
        kept = "no checkpoint was written yet: free some space, then start the run again"
    else:
        kept = f"last.pt still holds step {saved_step}: free some space, then resume with: {command}"
    return CheckpointNotWritten(f"{err.problem}; {kept}", err.path)


def resume_command(options: TrainOptions, world_size: int = 1) -> str:
    """The ``irecon train`` command line that continues this run: ``--resume`` reuses every option."""
    command = shlex.join(["irecon", "train", "--out", str(options.out), "--resume"])
    return f"torchrun --nproc-per-node {world_size} --no-python {command}" if world_size > 1 else command

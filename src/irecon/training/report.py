"""What a run tells its user: the outcome, the result, the epoch line and the progress displays."""

from __future__ import annotations

import enum
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    Progress,
    TextColumn,
)
from torch import nn

from irecon import text
from irecon.models.configs import ModelConfig
from irecon.planning.runs import StepWatch
from irecon.text import human_bytes, plural, say
from irecon.training.runtime import EXIT_CODES, peak_memory_bytes

# The model waited on the loader for more than this share of an epoch: the epoch line says so.
SLOW_LOADER_FRACTION = 0.1


class Outcome(enum.Enum):
    """Why a run ended."""

    COMPLETED = "completed"
    MAX_STEPS = "max_steps"
    TIME_BUDGET = "time_budget"
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"

    @property
    def exit_code(self) -> int:
        """0, or 130/143 after SIGINT/SIGTERM."""
        return EXIT_CODES[signal.Signals[self.value]] if self.value.startswith("SIG") else 0

    @classmethod
    def from_signal(cls, signum: int) -> "Outcome":
        return cls(signal.Signals(signum).name)


@dataclass
class TrainResult:
    """What a run did."""

    run_dir: Path
    model: nn.Module
    config: ModelConfig
    epochs_done: int
    global_step: int
    epoch_step: int
    history: list[dict[str, Any]]
    zero_filled: dict[str, float]
    best_epoch: int | None
    best_ssim: float | None
    stopped: Outcome
    wall_time_s: float
    total_wall_time_s: float
    is_main: bool
    resume_command: str

    @property
    def exit_code(self) -> int:
        return self.stopped.exit_code


def start_line(options: Any, plan: Any, epoch: int, world_size: int, workers: int, adam: str) -> str:
    """The line a run starts with: what trains on what, where, with which loader and optimiser state.

    ``options`` and ``plan`` are the run's :class:`~irecon.training.options.TrainOptions` and
    :class:`~irecon.training.plan.Plan`; ``epoch`` the one it starts at (0-based).
    """
    config = plan.config
    count = sum(p.numel() for p in plan.model.parameters())
    slices = sum(v.num_slices for v in plan.train_set.volumes)
    where = f"{plan.device}" + (f" x {world_size} processes" if world_size > 1 else "")
    memory_free = ", memory-free" if options.memory_free and config.invertible else ""
    return (
        f"{'resuming at' if plan.resume else 'starting'} epoch {epoch + 1}/{options.epochs}: {options.model} "
        f"({config.describe()}, {count:,} parameters{memory_free}) on "
        f"{plural(len(plan.train_set.volumes), 'volume')} / {plural(slices, 'slice')}, validating on "
        f"{plural(len(plan.val_infos), 'volume')}; device {where}, {plural(torch.get_num_threads(), 'thread')}, "
        f"{plural(workers, 'loader worker')}; {adam}; run dir {options.out}"
    )


def rate(value: float | None) -> str:
    """A slices/s figure; ``-`` for one that could not be measured."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """The one line printed after each epoch, with the loader's and the model's speeds."""
    skipped = record.get("skipped_steps") or 0
    waited = record.get("loader_wait_fraction")
    feed = (
        f" (loader {rate(record.get('loader_slices_per_s'))}, model {rate(record.get('model_slices_per_s'))}"
        f" slices/s; waited {waited:.0%} on data)"
        if waited is not None
        else ""
    )
    slow = (
        f"  the loader held the model up: raise «num_workers» (now {record.get('num_workers')})"
        if waited is not None and waited > SLOW_LOADER_FRACTION
        else ""
    )
    kspace_loss = record.get("val_kspace_loss")
    heldout = "" if kspace_loss is None else f"held-out k-space loss {kspace_loss:.4f}  "
    return (
        f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f}  "
        f"val NMSE {record['val_nmse']:.4f} PSNR {record['val_psnr']:.2f} SSIM {record['val_ssim']:.4f}  "
        f"(zero-filled SSIM {record.get('zero_filled_ssim', math.nan):.4f})  {heldout}lr {record['lr']:.2e}  "
        f"{rate(record['slices_per_s'])} slices/s{feed}{slow}"
        f"{f'  {skipped} skipped non-finite step(s)' if skipped else ''}{'  [best]' if record['best'] else ''}"
    )


def progress_bar(console: Console, visible: bool) -> Progress:
    """The transient training bar (shown on a terminal, on rank 0 only)."""
    return text.progress_bar(
        console,
        "epoch {task.fields[epoch]}",
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[speed]:.1f} slices/s"),
        TextColumn("{task.fields[memory]}"),
        visible=visible,
        transient=True,
    )


def loss_text(loss: float) -> str:
    """The bar's loss field: nothing until a step has given a finite loss (never 'loss nan')."""
    return f"loss {loss:.4f}" if math.isfinite(loss) else "loss -"


def volume_progress(console: Console, log_every: float, shown: bool, label: str) -> Callable[[int, int], None]:
    """A per-volume callback: a transient line on a terminal, plain lines every ``log_every`` s otherwise."""
    started = [time.perf_counter(), time.perf_counter()]

    def report(done: int, total: int) -> None:
        if not shown:
            return
        if console.is_terminal:
            console.print(f"{label}: {done}/{total} volumes", end="\r", markup=False, highlight=False)
        elif done == total or time.perf_counter() - started[1] >= log_every:
            started[1] = time.perf_counter()
            say(console, f"{label}: {done}/{total} volumes ({time.perf_counter() - started[0]:.0f} s)")

    return report


def fit_check_line(fit: dict[str, Any], watch: StepWatch) -> str:
    """The measured peak of the first steps against the plan (``--fit-memory``)."""
    peak = max(watch.peaks)
    verdict = "within" if peak <= fit["budget_bytes"] else "OVER"
    return (
        f"memory check: measured peak {human_bytes(peak)} over the first {len(watch.peaks)} steps "
        f"({watch.method}), {verdict} the budget {human_bytes(fit['budget_bytes'])}; "
        f"predicted {human_bytes(fit['predicted_bytes'])}"
    )


def fit_record(fit: dict[str, Any] | None, watch: StepWatch) -> dict[str, Any]:
    """The planner's choice and prediction, and the measured peak of the watched steps (``--fit-memory``)."""
    if fit is None:
        return {}
    return {
        "fit": fit["what"],
        "fit_value": fit["value"],
        "fit_budget_bytes": fit["budget_bytes"],
        "fit_predicted_peak_bytes": fit["predicted_bytes"],
        "fit_measured_peak_bytes": max(watch.peaks) if watch.peaks else None,
        "fit_measured_method": watch.method or None,
    }


def peak_memory_text(device: torch.device) -> str:
    """The bar's memory field: the CUDA peak, or the process's peak RSS on the CPU."""
    label = "peak" if device.type == "cuda" else "RSS"
    return f"{label} {human_bytes(peak_memory_bytes(device))}"

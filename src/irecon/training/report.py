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
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from irecon.models.presets import ModelConfig
from irecon.text import plural
from irecon.training.runtime import EXIT_CODES

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
        f"  the loader held the model up: raise --num-workers (now {record.get('num_workers')})"
        if waited is not None and waited > SLOW_LOADER_FRACTION
        else ""
    )
    return (
        f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f}  "
        f"val NMSE {record['val_nmse']:.4f} PSNR {record['val_psnr']:.2f} SSIM {record['val_ssim']:.4f}  "
        f"(zero-filled SSIM {record.get('zero_filled_ssim', math.nan):.4f})  "
        f"{'held-out k-space loss {:.4f}  '.format(record['val_kspace_loss']) if 'val_kspace_loss' in record else ''}"
        f"lr {record['lr']:.2e}  "
        f"{rate(record['slices_per_s'])} slices/s{feed}{slow}"
        f"{f'  {skipped} skipped non-finite step(s)' if skipped else ''}{'  [best]' if record['best'] else ''}"
    )


def progress_bar(console: Console, visible: bool) -> Progress:
    """The transient training bar (shown on a terminal, on rank 0 only)."""
    return Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[speed]:.1f} slices/s"),
        TextColumn("{task.fields[memory]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not visible,
    )


def say(console: Console, line: str) -> None:
    """One plain line: no rich markup (``[best]`` is text) and no hard wrapping in logs."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def volume_progress(console: Console, label: str, log_every: float, shown: bool) -> Callable[[int, int], None]:
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

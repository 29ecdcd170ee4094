"""The training loop: :func:`train` runs epochs of optimisation steps, validates, and writes the run.

The protocol: Adam at 1e-3 halved every 10 epochs, the SSIM loss of ``fastmri.losses.SSIMLoss``
(data range = the volume's max), masks re-drawn for every sample and epoch, and validation on whole
volumes with file-name-seeded masks, scored as ``fastmri.evaluate`` scores them. The RIM is trained
on the mean loss over its steps, the i-RIM and U-Net on their one output.

What a run guarantees:

* every option and every input file is checked before ``RUN_DIR`` is created or anything written;
* ``last.pt`` (every ``checkpoint_every`` steps and after each epoch) and ``best.pt`` (the epoch with
  the highest mean validation SSIM) are written atomically and load with ``weights_only=True``;
* ``--resume`` continues exactly where the run stopped (seeded sampler order, seeded masks, the
  optimiser, scheduler and position within the epoch from ``last.pt``);
* a step whose loss or gradients are not finite is skipped and counted, so no checkpoint ever holds
  poisoned weights; ``max_bad_steps`` consecutive ones stop the run with an error;
* SIGINT/SIGTERM finish the current step, write ``last.pt`` and stop with status 130/143;
* ``time_budget_s`` is checked after every step and before every epoch, so a launch stops within
  one step (or one validation, which always runs to its end) of its budget, writing ``last.pt``;
  the budget counts everything from the loop's start, validation included;
* under ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel; every rank
  validates its share of the volumes, the score sums are all-reduced, and only rank 0 writes;
  with ``shard_optimizer`` the Adam state is sharded (see :mod:`irecon.training.optim`).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from irecon.data.splits import SplitSpec
from irecon.data.volumes import VolumeInfo
from irecon.errors import IreconError
from irecon.figures import save_png
from irecon.files import write_jsonl
from irecon.inference import score_model
from irecon.losses import ImageLoss
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.physics import center_crop
from irecon.text import human_bytes
from irecon.training.curve import training_curve
from irecon.training.feeding import TrainFeed, resolve_workers, slice_count
from irecon.training.optim import adam_summary, build_optimizer, gather_state, is_sharded, load_state
from irecon.training.options import TrainOptions
from irecon.training.plan import Plan, prepare
from irecon.training.report import (
    Outcome,
    TrainResult,
    epoch_line,
    progress_bar,
    say,
    start_line,
    volume_progress,
)
from irecon.training.runtime import (
    StopSignals,
    World,
    peak_memory_bytes,
    peak_memory_kind,
    process_group,
    reset_peak_memory,
)
from irecon.training.selfsup import SelfSupervision
from irecon.training.state import Progress as RunProgress
from irecon.training.state import make_run_dir, resume_command, set_rng_state, training_payload

__all__ = ["Outcome", "TrainResult", "Trainer", "train"]

UNSCORED = {"nmse": math.nan, "psnr": math.nan, "ssim": math.nan}  # no validation volume has a target


def now() -> float:
    """The loop's clock (seconds, monotonic); one place, so budget tests can drive it."""
    return time.perf_counter()


def train(options: TrainOptions, console: Console | None = None, given: Collection[str] | None = None) -> TrainResult:
    """Train ``options.model`` on ``options.train_dir``, validating on ``options.val_dir`` each epoch.

    Raises IreconError for any bad option or input before ``options.out`` is created. Runs under
    DDP when launched by ``torchrun`` with ``WORLD_SIZE`` > 1. With ``resume``, the options not
    named in ``given`` (None: all are given) come from the checkpoint.
    """
    started = time.perf_counter()
    world = World.from_env()
    options, plan = prepare(options, world.size, world.local_rank, given)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    with process_group(world, plan.device):
        if world.is_main:
            make_run_dir(options)
        world.barrier()
        console = (console or Console()) if world.is_main else Console(quiet=True)
        trainer = Trainer(options, plan, world, console)
        try:
            with StopSignals() as signals:
                result = trainer.run(signals, started)
        finally:
            trainer.feed.close()
        world.barrier()  # every rank returns once rank 0 has written the last checkpoint
        return result


class Trainer:
    """One run: model, optimiser, scheduler, progress, and what the run writes."""

    def __init__(self, options: TrainOptions, plan: Plan, world: World, console: Console) -> None:
        self.options, self.plan, self.world, self.console = options, plan, world, console
        self.device = plan.device
        self.model = plan.model.to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), options.lr, options.shard_optimizer, world.size)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=options.lr_step, gamma=options.lr_gamma
        )
        self.loss_fn = ImageLoss(options.loss).to(self.device)
        self.selfsup = None
        if options.self_supervised:
            spec = SplitSpec(options.ssdu_rho, options.ssdu_selection)
            self.selfsup = SelfSupervision(spec, options.ssdu_splits, options.seed, options.ssdu_seen_weight)
        self.progress = RunProgress()
        workers = resolve_workers(options.num_workers, self.device)
        self.feed = TrainFeed(plan.train_set, options.batch_size, workers, world, options.seed, self.device)
        self.bad_steps = 0  # skipped non-finite steps in this process's current epoch
        self.bad_in_a_row = 0
        self.started = now()
        self.earlier_wall_time = 0.0  # wall time of the launches before a resume
        if plan.resume is not None:
            self._restore(plan.resume)
        self.network = self._wrap(self.model)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """DDP with the gradients as views into its all-reduce buckets: no second copy of them."""
        if self.world.size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)

    def run(self, signals: StopSignals, started: float) -> TrainResult:
        """Epochs until done, ``max_steps`` or a signal; the stop conditions read top to bottom."""
        self._announce()
        if self.progress.zero_filled is None:
            self.progress.zero_filled = self._zero_filled_scores()
        while True:
            if self.progress.epoch >= self.options.epochs:
                outcome = Outcome.COMPLETED
                break
            signum = signals.any_rank(self.world, self.device)
            if signum:
                outcome = Outcome.from_signal(signum)
                break
            if self._reached_max_steps():
                outcome = Outcome.MAX_STEPS
                break
            if self._over_budget():
                outcome = Outcome.TIME_BUDGET
                break
            try:
                stopped_early = self._train_epoch(signals)
            except IreconError:  # a bad slice met mid-epoch (maybe on this rank only): keep the work done so far
                self._save("last.pt", every_rank=False)
                raise
            if stopped_early is not None:
                outcome = stopped_early
                break
            self._finish_epoch()
        return self._result(outcome, started)

    def _announce(self) -> None:
        if self.progress.epoch >= self.options.epochs:
            self._say(f"{self.options.out} already holds all {self.options.epochs} epochs; raise --epochs to go on")
            return
        adam = adam_summary(
            self.model.parameters(), self.world.size, is_sharded(self.optimizer), self.options.shard_optimizer
        )
        self._say(start_line(self.options, self.plan, self.progress.epoch, self.world.size, self.feed.workers, adam))

    def _train_epoch(self, signals: StopSignals) -> Outcome | None:
        """Train the rest of the current epoch; None when it ran to its end (validate next)."""
        batches, total = self.feed.epoch(self.progress.epoch, self.progress.epoch_position)
        reset_peak_memory(self.device)
        tick, slices = time.perf_counter(), 0
        logged = tick
        stop: Outcome | None = None
        with progress_bar(self.console, self.world.is_main and self.console.is_terminal) as bar:
            task = bar.add_task(
                "train",
                total=total,
                completed=self.progress.epoch_position,
                epoch=self._epoch_label(),
                loss=math.nan,
                speed=0.0,
                memory="",
            )
            for batch in batches:
                loss, count = self._step(batch)
                slices += count
                self._account(loss, count)
                speed = slices / max(time.perf_counter() - tick, 1e-9)
                bar.update(task, advance=1, loss=self._epoch_loss(), memory=self._peak_memory(), speed=speed)
                if not self.console.is_terminal and time.perf_counter() - logged >= self.options.log_every:
                    logged = time.perf_counter()
                    self._say(
                        f"epoch {self._epoch_label()} step {self.progress.epoch_position}/{total}  "
                        f"loss {self._epoch_loss():.4f}  {speed:.1f} slices/s  {self._peak_memory()}"
                    )
                at_end = self.progress.epoch_position == total
                signum = signals.any_rank(self.world, self.device)
                if signum:
                    stop = Outcome.from_signal(signum)
                elif self._reached_max_steps() and not at_end:
                    stop = Outcome.MAX_STEPS
                elif self._over_budget() and not at_end:
                    stop = Outcome.TIME_BUDGET
                due = self.progress.global_step % self.options.checkpoint_every == 0
                if stop is not None or (due and not (at_end and self._reached_max_steps())):
                    self._save("last.pt")
                if stop is not None:
                    break
        self.feed.stats.finish()
        return stop

    def _step(self, batch: Any) -> tuple[float, int]:
        """One optimisation step; returns the batch's loss (NaN when skipped) and its number of slices.

        A non-finite loss or gradient on any rank skips the update on every rank, so the weights
        (and every checkpoint written from them) stay finite.
        """
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.amp == "bf16"):
            if self.selfsup is not None:
                loss, slices = self.selfsup.loss(self.network, batch, self.progress.epoch, self.device)
            else:
                loss, slices = self._supervised_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not self._finite_step(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self._count_bad_step()
            return math.nan, slices
        self.bad_in_a_row = 0
        self.optimizer.step()
        return float(loss.detach()), slices

    def _supervised_loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """The image loss against the batch's targets (mean over a RIM's steps), and its slice count."""
        kspace = batch.kspace.to(self.device, non_blocking=True)
        mask = batch.mask.to(self.device, non_blocking=True)
        target = batch.target.to(self.device, non_blocking=True)
        max_value = batch.max_value.to(self.device, torch.float32)
        estimates = self.network(kspace, mask)
        losses = [self.loss_fn(center_crop(e, tuple(target.shape[-2:])), target, max_value) for e in estimates]
        return torch.stack(losses).mean(), slice_count(target)

    def _finite_step(self, loss: torch.Tensor) -> bool:
        """Whether the loss and every gradient are finite on every rank."""
        checks = [torch.isfinite(loss.detach()).all()]
        checks += [torch.isfinite(p.grad).all() for p in self.model.parameters() if p.grad is not None]
        bad = (~torch.stack(checks).all()).to(torch.int32).view(1)
        return not int(self.world.all_reduce(bad, torch.distributed.ReduceOp.MAX))

    def _count_bad_step(self) -> None:
        self.bad_steps += 1
        self.bad_in_a_row += 1
        self._say(f"skipped step {self.progress.global_step + 1}: non-finite loss or gradient")
        if self.bad_in_a_row >= self.options.max_bad_steps:
            self._save("last.pt")
            raise IreconError(
                f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient; stopped (last.pt holds "
                "the last finite weights). Check the data with irecon check, lower --lr, or raise --max-bad-steps",
                self.options.out,
            )

    def _account(self, loss: float, slices: int) -> None:
        self.progress.global_step += 1
        self.progress.epoch_position += 1
        if math.isfinite(loss):
            self.progress.epoch_loss[0] += loss * slices
            self.progress.epoch_loss[1] += slices

    def _reached_max_steps(self) -> bool:
        return self.options.max_steps is not None and self.progress.global_step >= self.options.max_steps

    def _over_budget(self) -> bool:
        """Whether this launch has used its --time-budget (the same answer on every rank)."""
        if self.options.time_budget_s is None:
            return False
        over = torch.tensor([float(now() - self.started >= self.options.time_budget_s)])
        return bool(self.world.all_reduce(over.to(self.device), torch.distributed.ReduceOp.MAX))

    def _total_wall_time(self) -> float:
        return self.earlier_wall_time + now() - self.started

    def _finish_epoch(self) -> None:
        """Validate, record, step the scheduler, then write best.pt, last.pt and the reports."""
        lr = self.optimizer.param_groups[0]["lr"]
        volumes = self._my_volumes()
        progress = self._volume_progress(f"validating epoch {self._epoch_label()}")
        scores = score_model(self.model, self._scored(volumes), self.options.val_mask_spec, self.device, progress)
        val = self.world.mean_scores(scores, self.device) if self._scored(self.plan.val_infos) else dict(UNSCORED)
        if self.selfsup is not None:
            spec = self.options.val_mask_spec
            val["kspace_loss"] = self.selfsup.validate(self.model, volumes, spec, self.device, self.world)
        record = self._record(val, lr)
        self.progress.epoch += 1
        self.progress.epoch_position = 0
        self.progress.epoch_loss = [0.0, 0.0]
        self.bad_steps = 0
        with warnings.catch_warnings():
            # After a resume at an epoch's end, the optimiser stepped in the previous process only.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            self.scheduler.step()
        if record["best"]:
            self.progress.best_ssim, self.progress.best_epoch = record["val_ssim"], record["epoch"]
        self._save(*(("best.pt", "last.pt") if record["best"] else ("last.pt",)))
        self._write_reports()
        self._say(epoch_line(record, self.options.epochs))

    def _record(self, val: dict[str, float], lr: float) -> dict[str, Any]:
        zero = self.progress.zero_filled or {}
        best = self.progress.best_ssim
        bad = torch.tensor([self.bad_steps], dtype=torch.int64, device=self.device)
        record = {
            "epoch": self.progress.epoch + 1,
            "global_step": self.progress.global_step,
            "train_loss": self._epoch_loss_over_ranks(),
            **{f"val_{k}": v for k, v in val.items()},
            **{f"zero_filled_{k}": v for k, v in zero.items()},
            "lr": lr,
            **self.feed.stats.record(self.world, self.device),
            "skipped_steps": int(self.world.all_reduce(bad, torch.distributed.ReduceOp.MAX)),
            "wall_time_s": self._total_wall_time(),
            "time_budget_s": self.options.time_budget_s,
            "peak_memory_bytes": peak_memory_bytes(self.device),
            "peak_memory_kind": peak_memory_kind(self.device),
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

    @staticmethod
    def _scored(volumes: list[VolumeInfo]) -> list[VolumeInfo]:
        """The volumes with a target to score against (all of them, unless self-supervised)."""
        return [info for info in volumes if info.target_key is not None]

    def _zero_filled_scores(self) -> dict[str, float]:
        """Zero-filled scores under the validation masks, once per run (every rank takes part)."""
        if not self._scored(self.plan.val_infos):
            return {}
        zero = preset("zero-filled", coils=self.plan.config.coils).build().to(self.device)
        progress = self._volume_progress("scoring zero-filled")
        scores = score_model(zero, self._scored(self._my_volumes()), self.options.val_mask_spec, self.device, progress)
        return self.world.mean_scores(scores, self.device)

    def _save(self, *names: str, every_rank: bool = True) -> None:
        """Rank 0 writes each of ``names``; a sharded optimiser's state is gathered from every rank first, once.

        ``every_rank=False`` (a stop only this rank met) cannot gather a sharded state: the files
        already on disk are kept.
        """
        if is_sharded(self.optimizer) and not every_rank:
            self._say(
                f"{', '.join(names)} not rewritten: the sharded optimiser state needs every process; "
                "the last one stands"
            )
            return
        optimizer_state = gather_state(self.optimizer, self.world.rank)
        losses = self.world.gather(self.progress.epoch_loss, self.device) if every_rank else None
        if self.world.is_main:
            assert optimizer_state is not None
            losses = losses or [list(self.progress.epoch_loss)] + [[0.0, 0.0]] * (self.world.size - 1)
            payload = training_payload(
                self.options,
                self.plan,
                self.model,
                optimizer_state,
                self.scheduler,
                self.progress,
                losses,
                self._total_wall_time(),
            )
            for name in names:
                save_checkpoint(self.options.out / name, payload)

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        load_state(self.optimizer, payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload.get("rng", {}), self.device)
        self.progress = RunProgress.from_payload(payload, self.world.rank, self.world.size)
        self.earlier_wall_time = float(payload.get("wall_time_s") or 0.0)

    def _write_reports(self) -> None:
        if not self.world.is_main:
            return
        history, out = self.progress.history, self.options.out
        write_jsonl(out / "metrics.jsonl", history)
        title = f"{self.options.model} ({self.plan.config.describe()}), run {out}"
        loss = "SSDU k-space L1+L2" if self.selfsup is not None else self.options.loss
        save_png(training_curve(history, self.progress.zero_filled, loss, title), out / "training_curve.png")

    def _volume_progress(self, label: str) -> Any:
        return volume_progress(self.console, label, self.options.log_every, self.world.is_main)

    def _say(self, line: str) -> None:
        say(self.console, line)

    def _epoch_label(self) -> str:
        return f"{self.progress.epoch + 1}/{self.options.epochs}"

    def _peak_memory(self) -> str:
        label = "peak" if self.device.type == "cuda" else "RSS"
        return f"{label} {human_bytes(peak_memory_bytes(self.device))}"

    def _result(self, outcome: Outcome, started: float) -> TrainResult:
        progress = self.progress
        continued = replace(self.options, max_steps=None) if outcome is Outcome.MAX_STEPS else self.options
        return TrainResult(
            run_dir=self.options.out,
            model=self.model,
            config=self.plan.config,
            epochs_done=progress.epoch,
            global_step=progress.global_step,
            epoch_step=progress.epoch_position,
            history=list(progress.history),
            zero_filled=dict(progress.zero_filled or {}),
            best_epoch=progress.best_epoch,
            best_ssim=progress.best_ssim,
            stopped=outcome,
            wall_time_s=time.perf_counter() - started,
            total_wall_time_s=self._total_wall_time(),
            is_main=self.world.is_main,
            resume_command=resume_command(continued, self.world.size),
        )

"""The training loop: :func:`train` runs epochs of optimisation steps, validates, and writes the run.

Adam at 1e-3 halved every 10 epochs, the SSIM loss (data range = the volume's max), masks re-drawn
per sample and epoch, validation on whole volumes with file-name-seeded masks. What a run guarantees
(checks before writing, one owner per run folder, atomic checkpoints, exact resume, no poisoned
checkpoint, signals, time budget, torchrun) is listed in docs/architecture.md under training.
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

from irecon.data.datasets import load_volume
from irecon.data.volumes import VolumeInfo
from irecon.errors import IreconError
from irecon.figures import save_png
from irecon.files import write_jsonl
from irecon.inference import score_model
from irecon.losses import ImageLoss
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.physics import center_crop
from irecon.planning.fit import MemoryFit
from irecon.planning.runs import StepWatch
from irecon.text import say
from irecon.training.curve import training_curve
from irecon.training.feeding import TrainFeed, batch_slices, resolve_workers
from irecon.training.optim import adam_summary, build_optimizer, gather_state, is_sharded, load_state
from irecon.training.options import TrainOptions
from irecon.training.plan import Plan, own_run_folder, prepare
from irecon.training.report import (
    Outcome,
    TrainResult,
    epoch_line,
    fit_check_line,
    fit_record,
    loss_text,
    peak_memory_text,
    progress_bar,
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
from irecon.training.selfsup import UNSCORED, SelfSupervision, with_targets
from irecon.training.state import CheckpointNotWritten, not_written, resume_command, set_rng_state, training_payload
from irecon.training.state import Progress as RunProgress
from irecon.training.tracking import Tracker, require_tensorboard

__all__ = ["Outcome", "TrainResult", "Trainer", "train"]

FIT_WATCH_STEPS = 3  # --fit-memory: the first steps measured with the device's meter


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
    if options.tensorboard:
        require_tensorboard()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    with process_group(world, plan.device), own_run_folder(options, plan, world):
        console = (console or Console()) if world.is_main else Console(quiet=True)
        trainer = Trainer(options, plan, world, console)
        with StopSignals(announce=world.is_main) as signals:  # also while the loader shuts down
            signals.on_second = trainer.second_interrupt_line
            try:
                result = trainer.run(signals, started)
            finally:
                trainer.feed.close()
                if trainer.tracker is not None:
                    trainer.tracker.close()
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
        self.selfsup = SelfSupervision.of(options)  # None: supervised
        self.progress = RunProgress()
        workers = resolve_workers(options.num_workers, self.device)
        self.feed = TrainFeed(plan.train_set, options.batch_size, workers, world, options.seed, self.device)
        self.bad_steps = 0  # skipped non-finite steps in this process's current epoch
        self.bad_in_a_row = 0
        self.started = now()
        self.earlier_wall_time = 0.0  # wall time of the launches before a resume
        self.saved_step: int | None = None  # the global step last.pt holds
        self.in_step = False  # whether a step is under way (not yet counted in global_step)
        if plan.resume is not None:
            self._restore(plan.resume)
        self.network = self._wrap(self.model)
        self.tracker = self._tracker() if options.tensorboard and world.is_main else None
        self.watch = StepWatch(self.device, steps=0 if plan.memory_fit is None or plan.resume else FIT_WATCH_STEPS)

    def _tracker(self) -> Tracker:
        """TensorBoard logging from the next step on, showing the first validation volume."""
        volume = load_volume(self.plan.val_infos[0].path, self.options.val_mask_spec, self.plan.val_infos[0])
        return Tracker(self.options.out, self.progress.global_step + 1, self.options.to_dict(), volume)

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
            stop = self._stop_reason(signals)
            if stop is not None:
                outcome = stop
                break
            try:
                stopped_early = self._train_epoch(signals)
            except CheckpointNotWritten:
                raise
            except IreconError:  # a bad slice met mid-epoch (maybe on this rank only): keep the work done so far
                self._save("last.pt", every_rank=False)
                raise
            if stopped_early is not None:
                outcome = stopped_early
                break
            self._finish_epoch()
        return self._result(outcome, started)

    def second_interrupt_line(self) -> str:
        """What a second Ctrl-C leaves behind: whether the step in progress reached last.pt."""
        step, saved = self.progress.global_step + (1 if self.in_step else 0), self.saved_step
        if saved is None:
            kept = "no checkpoint was written (there is no last.pt yet)"
        elif saved == step:
            kept = f"last.pt holds step {step}"
        else:
            kept = f"no checkpoint was written for step {step}; last.pt holds step {saved}"
        command = resume_command(self.options, self.world.size)
        return f"interrupted again: stopped at once; {kept}" + ("" if saved is None else f"; resume with: {command}")

    def _announce(self) -> None:
        if self.progress.epoch >= self.options.epochs:
            say(
                self.console,
                f"{self.options.out} already holds all {self.options.epochs} epochs; raise «epochs» to go on",
            )
            return
        adam = adam_summary(
            self.model.parameters(), self.world.size, is_sharded(self.optimizer), self.options.shard_optimizer
        )
        if self.plan.memory_fit is not None and self.plan.resume is None:
            say(self.console, MemoryFit(**self.plan.memory_fit).line())
        say(
            self.console,
            start_line(self.options, self.plan, self.progress.epoch, self.world.size, self.feed.workers, adam),
        )

    def _stop_reason(self, signals: StopSignals, limits: bool = True) -> Outcome | None:
        """Why the run stops now, if it does: a stop signal on any rank, then (with ``limits``) max_steps,
        then the time budget. At an epoch's last step only a signal stops it: the limits wait for validation."""
        signum = signals.any_rank(self.world, self.device)
        if signum:
            return Outcome.from_signal(signum)
        if limits and self._reached_max_steps():
            return Outcome.MAX_STEPS
        if limits and self._over_budget():
            return Outcome.TIME_BUDGET
        return None

    def _train_epoch(self, signals: StopSignals) -> Outcome | None:
        """Train the rest of the current epoch; None when it ran to its end (validate next)."""
        batches, total = self.feed.epoch(self.progress.epoch, self.progress.epoch_position)
        reset_peak_memory(self.device)
        tick, slices = time.perf_counter(), 0
        logged = tick
        stop = None
        with progress_bar(self.console, self.world.is_main and self.console.is_terminal) as bar:
            task = bar.add_task(
                "train",
                total=total,
                completed=self.progress.epoch_position,
                epoch=self._epoch_label(),
                loss=loss_text(self._epoch_loss()),
                speed=0.0,
                memory="",
            )
            for batch in batches:
                self.in_step = True
                loss, count = self._step(batch)
                slices += count
                self._account(loss, count)
                self.in_step = False
                if self.tracker is not None:
                    lr = self.optimizer.param_groups[0]["lr"]
                    peak = peak_memory_bytes(self.device)
                    self.tracker.step(self.progress.global_step, loss, lr, self.bad_steps, self.feed.stats, peak)
                speed = slices / max(time.perf_counter() - tick, 1e-9)
                bar.update(
                    task,
                    advance=1,
                    loss=loss_text(self._epoch_loss()),
                    memory=peak_memory_text(self.device),
                    speed=speed,
                )
                if not self.console.is_terminal and time.perf_counter() - logged >= self.options.log_every:
                    logged = time.perf_counter()
                    say(
                        self.console,
                        f"epoch {self._epoch_label()} step {self.progress.epoch_position}/{total}  "
                        f"loss {self._epoch_loss():.4f}  {speed:.1f} slices/s  {peak_memory_text(self.device)}",
                    )
                at_end = self.progress.epoch_position == total
                stop = self._stop_reason(signals, limits=not at_end)
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
        kspace = batch.kspace.to(self.device, non_blocking=True)
        mask = batch.mask.to(self.device, non_blocking=True)
        target = batch.target.to(self.device, non_blocking=True)
        max_value = batch.max_value.to(self.device, torch.float32)
        with self.watch.step(self.model, self.optimizer, self.loss_fn, kspace, mask, target, max_value):
            loss, finite = self._forward_backward(batch, kspace, mask, target, max_value)
        if self.watch.done and self.watch.left == 0:
            self.watch.left = -1
            say(self.console, fit_check_line(self.plan.memory_fit or {}, self.watch))
        slices = batch_slices(kspace, target)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self._count_bad_step()
            return math.nan, slices
        self.bad_in_a_row = 0
        return float(loss.detach()), slices

    def _forward_backward(
        self, batch: Any, kspace: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, max_value: torch.Tensor
    ) -> tuple[torch.Tensor, bool]:
        """Forward, loss (SSDU's when self-supervised), backward and the Adam step if all is finite on every rank."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.amp == "bf16"):
            if self.selfsup is not None:
                loss = self.selfsup.loss(
                    self.network, kspace, mask, batch.fname, batch.slice_index, self.progress.epoch
                )
            else:
                estimates = self.network(kspace, mask)
                losses = [self.loss_fn(center_crop(e, tuple(target.shape[-2:])), target, max_value) for e in estimates]
                loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = self._finite_step(loss)
        if finite:
            self.optimizer.step()
        return loss, finite

    def _finite_step(self, loss: torch.Tensor) -> bool:
        """Whether the loss and every gradient are finite on every rank."""
        checks = [torch.isfinite(loss.detach()).all()]
        checks += [torch.isfinite(p.grad).all() for p in self.model.parameters() if p.grad is not None]
        bad = (~torch.stack(checks).all()).to(torch.int32).view(1)
        return not int(self.world.all_reduce(bad, torch.distributed.ReduceOp.MAX))

    def _count_bad_step(self) -> None:
        self.bad_steps += 1
        self.bad_in_a_row += 1
        say(self.console, f"skipped step {self.progress.global_step + 1}: non-finite loss or gradient")
        if self.bad_in_a_row >= self.options.max_bad_steps:
            self._save("last.pt")
            raise IreconError(
                f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient; stopped (last.pt holds "
                "the last finite weights). Check the data with irecon check, lower «lr», or raise «max_bad_steps»",
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
        val = self._scores(self.model, f"validating epoch {self._epoch_label()}") or dict(UNSCORED)
        if self.selfsup is not None:
            val["kspace_loss"] = self.selfsup.validate(self.model, self._my_volumes(), self.options, self.world)
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
        try:
            self._write_reports()
        except IreconError as err:
            raise not_written(err, self.saved_step, resume_command(self.options, self.world.size)) from None
        if self.tracker is not None:
            zero = preset("zero-filled", coils=self.plan.config.coils).build().to(self.device)
            self.tracker.epoch(record, self.model, zero, self.device)
        say(self.console, epoch_line(record, self.options.epochs))

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
            **fit_record(self.plan.memory_fit, self.watch),
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
        zero = preset("zero-filled", coils=self.plan.config.coils).build().to(self.device)
        return self._scores(zero, "scoring zero-filled")

    def _scores(self, model: nn.Module, label: str) -> dict[str, float]:
        """Mean scores over the validation volumes with a target, empty when none has one (every rank calls this)."""
        if not with_targets(self.plan.val_infos):
            return {}
        progress = volume_progress(self.console, self.options.log_every, self.world.is_main, label)
        volumes, spec = with_targets(self._my_volumes()), self.options.val_mask_spec
        scores = score_model(model, volumes, spec, self.device, progress, self.options.virtual_coils)
        return self.world.mean_scores(scores, self.device)

    def _save(self, *names: str, every_rank: bool = True) -> None:
        """Rank 0 writes each of ``names``; a sharded optimiser's state is gathered from every rank first, once.

        ``every_rank=False`` (a stop only this rank met) cannot gather a sharded state: the files
        already on disk are kept.
        """
        if is_sharded(self.optimizer) and not every_rank:
            say(
                self.console,
                f"{', '.join(names)} not rewritten: the sharded optimiser state needs every process; "
                "the last one stands",
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
            try:
                for name in names:
                    save_checkpoint(self.options.out / name, payload)
            except IreconError as err:
                raise not_written(err, self.saved_step, resume_command(self.options, self.world.size)) from None
        self.saved_step = self.progress.global_step

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        load_state(self.optimizer, payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload.get("rng", {}), self.device)
        self.progress = RunProgress.from_payload(payload, self.world.rank, self.world.size)
        self.saved_step = self.progress.global_step
        self.earlier_wall_time = float(payload.get("wall_time_s") or 0.0)

    def _write_reports(self) -> None:
        if not self.world.is_main:
            return
        history, out = self.progress.history, self.options.out
        write_jsonl(out / "metrics.jsonl", history)
        title = f"run {out.resolve().name}: {self.options.model} ({self.plan.config.describe()})"
        loss = "SSDU k-space L1+L2" if self.selfsup is not None else self.options.loss
        save_png(training_curve(history, self.progress.zero_filled, loss, title), out / "training_curve.png")

    def _epoch_label(self) -> str:
        return f"{self.progress.epoch + 1}/{self.options.epochs}"

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

"""TensorBoard logging of a training run (``irecon train --tensorboard``), rank 0 only.

Per step: the loss, learning rate, skipped steps of the epoch, throughput (overall, model and
loader slices/s) and peak memory. Per epoch: validation NMSE/PSNR/SSIM beside zero-filled's, and one
fixed validation slice (the first volume's middle slice) as zero-filled, reconstruction, target and
|error|, all on the target's scale. At the start: the run's options as text. Every value is logged
at the run's global step; a resumed run opens the same folder with ``purge_step`` = its next step,
so TensorBoard drops whatever an interrupted launch logged past the checkpoint and the curves go
on without duplicate steps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from irecon.data.datasets import Volume
from irecon.errors import IreconError
from irecon.inference import reconstruct_volume
from irecon.physics import common_crop

LOG_FOLDER = "tensorboard"
METRICS = ("nmse", "psnr", "ssim")


def require_tensorboard() -> None:
    """Refuse ``--tensorboard`` up front when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise IreconError("«tensorboard» needs the tensorboard package: pip install 'irecon[tensorboard]'") from None


class Tracker:
    """One run's TensorBoard writer in ``RUN_DIR/tensorboard``; the loop calls it at step and epoch ends."""

    def __init__(self, run_dir: Path, next_step: int, options: dict[str, Any], volume: Volume) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / LOG_FOLDER), purge_step=next_step if next_step > 1 else None)
        if volume.target is None:
            raise IreconError("the first validation volume has no target to show", volume.info.path)
        self.volume = volume
        if next_step <= 1:
            self.writer.add_text("options", options_table(options), 0)

    def step(self, global_step: int, loss: float, lr: float, skipped: int, stats: Any, peak_bytes: int) -> None:
        """The step's scalars; ``stats`` is the epoch's :class:`~irecon.training.feeding.FeedStats` so far."""
        add = self.writer.add_scalar
        if np.isfinite(loss):
            add("train/loss", loss, global_step)
        add("train/lr", lr, global_step)
        add("train/skipped_steps", skipped, global_step)
        elapsed = time.perf_counter() - stats.started
        if elapsed > 0 and stats.slices:
            add("throughput/slices_per_s", stats.slices / elapsed, global_step)
            if elapsed > stats.wait_s:
                add("throughput/model_slices_per_s", stats.slices / (elapsed - stats.wait_s), global_step)
        if stats.read_s > 0:
            add("throughput/loader_slices_per_s", stats.loader_slices_per_s, global_step)
        add("memory/peak_bytes", peak_bytes, global_step)

    def epoch(self, record: dict[str, Any], model: nn.Module, zero_filled: nn.Module, device: torch.device) -> None:
        """The epoch's validation scores against zero-filled's, and the fixed slice's four images."""
        step = record["global_step"]
        for name in METRICS:  # plain tags, not add_scalars: its extra writers would not purge on resume
            self.writer.add_scalar(f"val/{name}", record[f"val_{name}"], step)
            self.writer.add_scalar(f"val/zero_filled_{name}", record.get(f"zero_filled_{name}", float("nan")), step)
        self.writer.add_scalar("train/epoch_loss", record["train_loss"], step)
        self.writer.add_scalar("epoch", record["epoch"], step)
        for tag, image in slice_panels(self.volume, model, zero_filled, device).items():
            self.writer.add_image(f"val_slice/{tag}", image, step, dataformats="HW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def options_table(options: dict[str, Any]) -> str:
    """The options as a Markdown table (TensorBoard's text tab renders Markdown)."""
    rows = "\n".join(f"| {name} | {value} |" for name, value in options.items())
    return f"| option | value |\n|---|---|\n{rows}"


def slice_panels(volume: Volume, model: nn.Module, zero_filled: nn.Module, device: torch.device) -> dict[str, Tensor]:
    """zero-filled, reconstruction, target and |error| of the middle slice, each divided by the target's max."""
    assert volume.target is not None
    middle = volume.kspace.shape[0] // 2
    if getattr(model, "dims", 2) == 2:
        volume = volume._replace(kspace=volume.kspace[middle : middle + 1], target=volume.target[middle : middle + 1])
        middle = 0
    was_training = model.training
    model.eval()
    try:
        images = {
            "zero_filled": reconstruct_volume(zero_filled, volume, device=device)[middle],
            "reconstruction": reconstruct_volume(model, volume, device=device)[middle],
        }
    finally:
        model.train(was_training)
    target = volume.target[middle]
    cropped = {name: common_crop(image, target)[0] for name, image in images.items()}
    target = common_crop(images["reconstruction"], target)[1]
    scale = float(target.max()) or 1.0
    panels = {name: image / scale for name, image in cropped.items()}
    panels["target"] = target / scale
    panels["error"] = (cropped["reconstruction"] - target).abs() / scale
    return {name: panel.clamp(0, 1) for name, panel in panels.items()}

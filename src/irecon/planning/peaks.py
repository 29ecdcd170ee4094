"""Peak memory of one training step or one forward pass, planned from shapes or measured on a device.

The planned figure runs the real model, loss and Adam on meta tensors under ``StorageTracker("meta")``:
exact tensor bytes, no data, no device. The measured figure runs the same step on a real device under
that device's meter (CPU: allocator events, kernel scratch included; CUDA: ``max_memory_allocated``).
Both count everything alive during the step: weights, gradients, Adam state, the batch and the
activations. The training step is the loop's (:meth:`irecon.training.loop.Trainer._step`): forward,
loss on the centre crop, ``zero_grad(set_to_none=True)``, backward, Adam step.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from irecon.losses import ImageLoss
from irecon.memory.meters import PeakMemoryMeter, StorageTracker, peak_memory_meter
from irecon.models.configs import ModelConfig
from irecon.physics import center_crop

__all__ = ["InputShape", "measured_peaks", "planned_peak", "sample_inputs", "train_step"]

MODES = ("train", "inference")


@dataclass(frozen=True)
class InputShape:
    """One batch: ``batch`` samples of ``coils`` x [``slices`` x] ``height`` x ``width`` k-space, targets ``target``.

    ``slices`` is None for a 2-D model and the slab (or volume) depth for a 3-D one.
    """

    batch: int
    coils: int
    height: int
    width: int
    target: tuple[int, int]
    slices: int | None = None

    def describe(self) -> str:
        depth = "" if self.slices is None else f"{self.slices} x "
        return f"batch {self.batch} x {self.coils} coil(s) x {depth}{self.height}x{self.width}"


def sample_inputs(shape: InputShape, device: str | torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(masked k-space, mask, target, max value) of ``shape``; seeded values, or no values on meta."""
    spatial = (shape.height, shape.width) if shape.slices is None else (shape.slices, shape.height, shape.width)
    depth = () if shape.slices is None else (shape.slices,)
    mask_shape = (shape.batch, 1, *([1] * (len(spatial) - 1)), shape.width)
    if torch.device(device).type == "meta":
        with torch.device("meta"):
            return (
                torch.empty(shape.batch, shape.coils, *spatial, dtype=torch.complex64),
                torch.empty(mask_shape),
                torch.empty(shape.batch, *depth, *shape.target),
                torch.empty(shape.batch),
            )
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(mask_shape, generator=generator) < 0.25).float()
    kspace = torch.randn(shape.batch, shape.coils, *spatial, dtype=torch.complex64, generator=generator) * mask
    target = torch.rand(shape.batch, *depth, *shape.target, generator=generator)
    return kspace.to(device), mask.to(device), target.to(device), torch.ones(shape.batch, device=device)


def train_step(
    model: nn.Module, loss_fn: ImageLoss, optimizer: torch.optim.Optimizer, inputs: tuple[Tensor, ...]
) -> None:
    """One optimisation step as the training loop takes it (without its finite checks and autocast)."""
    kspace, mask, target, max_value = inputs
    estimates = model(kspace, mask)
    losses = [loss_fn(center_crop(e, tuple(target.shape[-2:])), target, max_value) for e in estimates]
    loss = torch.stack(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _prepared(
    config: ModelConfig, shape: InputShape, mode: str, loss: str, memory_free: bool, device: torch.device
) -> tuple[Callable[[], None], list[object]]:
    """The step to measure and the objects alive before it (model, optimiser, inputs), warmed up.

    Training: gradients and Adam state exist before the step, as from the loop's second step on
    (on meta, zeros stand for the warm-up's gradients, as :mod:`irecon.bench` does).
    """
    meta = device.type == "meta"
    with torch.random.fork_rng(devices=[]), torch.device("meta") if meta else contextlib.nullcontext():
        torch.manual_seed(0)
        model = config.build(memory_free=memory_free)
    model = model.to(device)
    inputs = sample_inputs(shape, device)
    if mode == "inference":
        model.eval()

        def forward() -> None:
            with torch.no_grad():
                model(inputs[0], inputs[1])

        return forward, [model, *inputs]
    loss_fn = ImageLoss(loss).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    model.train()
    if meta:
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    else:
        train_step(model, loss_fn, optimizer, inputs)
    return (lambda: train_step(model, loss_fn, optimizer, inputs)), [model, optimizer, loss_fn, *inputs]


def planned_peak(
    config: ModelConfig, shape: InputShape, mode: str = "train", loss: str = "ssim", memory_free: bool = True
) -> int:
    """Exact tensor bytes at the peak of one step (``train``) or forward pass (``inference``), shapes only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    step, alive = _prepared(config, shape, mode, loss, memory_free, torch.device("meta"))
    with StorageTracker("meta") as tracker:
        tracker.track(*alive)
        tracker.reset_peak_memory_stats()
        step()
        return tracker.max_memory_allocated()


def device_meter(device: torch.device, meter: str | None = None) -> PeakMemoryMeter:
    """The meter a device's real runs are measured with: CPU allocator events (or ``meter``), or CUDA's allocator."""
    return peak_memory_meter(device, meter or ("allocator" if device.type == "cpu" else "storages"))


def measured_peaks(
    config: ModelConfig,
    shape: InputShape,
    device: torch.device,
    mode: str = "train",
    loss: str = "ssim",
    memory_free: bool = True,
    repeats: int = 2,
    meter: str | None = None,
) -> list[int]:
    """The device meter's peak of each of ``repeats`` steps (after one warm-up), random seeded data.

    The meter is reset before each step and read after it (appendix C; the protocol reports the
    minimum). ``meter="storages"`` counts tensor storages on the CPU instead of allocator events.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step, alive = _prepared(config, shape, mode, loss, memory_free, device)
    peaks = []
    with device_meter(device, meter) as watching:
        watching.track(*alive)
        for _ in range(repeats):
            watching.reset_peak_memory_stats()
            step()
            peaks.append(watching.max_memory_allocated())
    return peaks

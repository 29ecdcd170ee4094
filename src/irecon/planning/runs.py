"""The planner setting a run: the deepest T, largest batch or slab a training run fits in, and the
slab or slice batch a reconstruction fits in; plus the peak watch that checks a run keeps the promise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from irecon.data.volumes import VolumeInfo
from irecon.errors import IreconError
from irecon.models.configs import ModelConfig
from irecon.models.presets import preset
from irecon.planning.fit import MemoryFit, find_fit, resolve_budget
from irecon.planning.peaks import InputShape, device_meter

__all__ = ["StepWatch", "fit_inference", "fit_training", "training_shape"]

MAX_FIT_STEPS = 100
MAX_FIT_BATCH = 256


def training_shape(
    volumes: Sequence[VolumeInfo], batch: int, slab: int, resolution: tuple[int, int] | None, dims: int
) -> InputShape:
    """The largest batch the volumes make: the largest k-space height and width (or ``resolution``) and target."""
    height = resolution[0] if resolution else max(v.kspace_shape[0] for v in volumes)
    width = resolution[1] if resolution else max(v.kspace_shape[1] for v in volumes)
    targets = [v.target_shape or v.crop_size for v in volumes]
    target = (max(t[0] for t in targets), max(t[1] for t in targets))
    slices = slab if dims == 3 else None
    return InputShape(batch, volumes[0].num_coils, height, width, target, slices)


def fit_training(
    what: str,
    budget_text: str,
    model: str,
    overrides: dict[str, Any],
    volumes: Sequence[VolumeInfo],
    *,
    batch: int,
    slab: int,
    resolution: tuple[int, int] | None,
    loss: str,
    memory_free: bool,
    items: int,
    device: torch.device,
) -> MemoryFit:
    """The deepest T (``what="steps"``), largest batch or largest 3-D slab whose training step fits the budget.

    ``items`` (the dataset's samples) bounds the batch; the thinnest volume bounds the slab.
    """
    coils = volumes[0].num_coils
    base = preset(model, coils=coils, **overrides)
    if what == "steps" and base.time_steps is None:
        raise IreconError(f"«fit» steps chooses the time steps T, and «model» {model} has none; use «fit» batch")
    if what == "slab" and base.dims != 3:
        raise IreconError(f"«fit» slab needs a 3-D preset (tiny-3d, paper-3d); {model} is {base.dims}-D")

    def config_at(value: int) -> ModelConfig:
        return preset(model, coils=coils, **{**overrides, "steps": value}) if what == "steps" else base

    def shape_at(value: int) -> InputShape:
        return training_shape(
            volumes,
            value if what == "batch" else batch,
            value if what == "slab" else slab,
            resolution,
            base.dims,
        )

    limit = {"steps": MAX_FIT_STEPS, "batch": min(items, MAX_FIT_BATCH), "slab": min(v.num_slices for v in volumes)}
    smallest = 2 if what == "slab" else 1
    budget = resolve_budget(budget_text, device)
    return find_fit(
        what, config_at, shape_at, budget, limit[what], device, loss=loss, memory_free=memory_free, smallest=smallest
    )


def fit_inference(
    config: ModelConfig, info: VolumeInfo, budget: tuple[int, str], largest: int, device: torch.device
) -> MemoryFit:
    """The largest slab (3-D model) or slice batch (2-D) up to ``largest`` whose forward pass fits the budget."""
    what = "slab" if config.dims == 3 else "batch"

    def shape_at(value: int) -> InputShape:
        if what == "slab":
            return InputShape(1, info.num_coils, *info.kspace_shape, info.crop_size, value)
        return InputShape(value, info.num_coils, *info.kspace_shape, info.crop_size)

    smallest = min(2, largest) if what == "slab" else 1
    return find_fit(what, lambda _: config, shape_at, budget, largest, device, mode="inference", smallest=smallest)


class StepWatch:
    """The device meter's peak over a run's first ``steps`` training steps (reset before each, read after)."""

    def __init__(self, device: torch.device, steps: int = 3) -> None:
        self.device, self.left = device, steps
        self.peaks: list[int] = []
        self.method = ""

    @contextlib.contextmanager
    def step(self, *alive: object) -> Iterator[None]:
        """Measure the step run inside, counting ``alive`` (model, optimiser, batch) as held before it."""
        if self.left <= 0:
            yield
            return
        self.left -= 1
        with device_meter(self.device) as meter:
            self.method = meter.method
            meter.track(*alive)
            meter.reset_peak_memory_stats()
            yield
            self.peaks.append(meter.max_memory_allocated())

    @property
    def done(self) -> bool:
        return self.left <= 0 and bool(self.peaks)

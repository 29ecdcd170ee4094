"""The largest setting (time steps T, batch, slab) whose step fits a memory budget on a real device.

A setting fits when the planner's exact tensor bytes plus a measured margin stay within the budget.
The margin is what the device's meter sees beyond the planner's tensor bytes at the smallest
setting (CPU: kernel scratch in the allocator events; CUDA: cuDNN/cuBLAS workspaces and rounding in
``max_memory_allocated``), from one real warm-up and two measured steps on random data. It stays
constant over T (activations do not grow with depth); for batch and slab it is measured at the two
smallest settings and extrapolated along their straight line, and the choice is then measured (and
lowered while it is over the budget).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from irecon.errors import IreconError
from irecon.memory.budget import deepest_fit
from irecon.models.configs import ModelConfig
from irecon.planning.peaks import InputShape, measured_peaks, planned_peak
from irecon.text import human_bytes
from irecon.values import parse_bytes

__all__ = ["FIT_KINDS", "MemoryFit", "available_memory", "find_fit", "resolve_budget"]

FIT_KINDS = ("steps", "batch", "slab")
AUTO_FRACTION = 0.9  # --fit-memory auto: this share of the free memory
LABELS = {"steps": "T", "batch": "batch", "slab": "slab"}


@dataclass
class MemoryFit:
    """The chosen setting and the figures behind it (bytes).

    ``next_bytes`` is the prediction at ``value + 1``; ``verified_bytes`` the device meter's peak at
    ``value`` (batch and slab only, where the margin is extrapolated: a value over budget is lowered).
    """

    what: str
    value: int
    budget_bytes: int
    budget_source: str
    planned_bytes: int
    margin_bytes: int
    margin_method: str
    predicted_bytes: int
    next_bytes: int | None
    verified_bytes: int | None
    limit: int
    shape: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        """One line: what was chosen, the predicted peak and why one more would not fit."""
        label = LABELS[self.what]
        beyond = (
            f"{label}={self.value + 1} would need {human_bytes(self.next_bytes)}"
            if self.next_bytes is not None
            else f"the search stopped at its limit {label}={self.limit}"
        )
        return (
            f"memory plan: {label}={self.value} fits {human_bytes(self.budget_bytes)} ({self.budget_source}): "
            f"predicted peak {human_bytes(self.predicted_bytes)} = planner {human_bytes(self.planned_bytes)} "
            f"+ margin {human_bytes(self.margin_bytes)} ({self.margin_method}); {beyond}; "
            f"{self.shape}, planned in {self.seconds:.1f} s"
            + ("" if self.verified_bytes is None else f"; measured {human_bytes(self.verified_bytes)}")
        )


def available_memory(device: torch.device) -> int:
    """Free memory: CUDA ``mem_get_info`` plus what the caching allocator holds unused; CPU ``MemAvailable``."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    with open("/proc/meminfo") as handle:
        fields_ = dict(line.split(":", 1) for line in handle)
    return int(fields_["MemAvailable"].split()[0]) * 1024


def resolve_budget(text: str, device: torch.device) -> tuple[int, str]:
    """(bytes, where they came from) for a size such as ``22GiB`` or ``auto`` (90% of the free memory)."""
    if text.strip().lower() != "auto":
        return parse_bytes(text), "given"
    free = available_memory(device)
    return int(free * AUTO_FRACTION), f"auto: {AUTO_FRACTION:.0%} of {human_bytes(free)} free on {device}"


def find_fit(
    what: str,
    config_at: Callable[[int], ModelConfig],
    shape_at: Callable[[int], InputShape],
    budget: tuple[int, str],
    limit: int,
    device: torch.device,
    *,
    mode: str = "train",
    loss: str = "ssim",
    memory_free: bool = True,
    smallest: int = 1,
) -> MemoryFit:
    """The largest value in ``smallest..limit`` of ``what`` whose predicted peak fits ``budget``.

    ``config_at(v)`` and ``shape_at(v)`` give the model and the batch at value ``v``. Raises
    IreconError when even ``smallest`` does not fit.
    """
    if what not in FIT_KINDS:
        raise IreconError(f"«fit» must be one of {', '.join(FIT_KINDS)}, got {what!r}")
    started = time.perf_counter()
    budget_bytes, source = budget
    offset = smallest - 1

    def planned(value: int) -> int:
        return planned_peak(config_at(value), shape_at(value), mode, loss, memory_free)

    gap, method = measured_margin(config_at(smallest), shape_at(smallest), device, mode, loss, memory_free)
    slope = 0
    if what != "steps" and limit > smallest:
        gap_next, _ = measured_margin(config_at(smallest + 1), shape_at(smallest + 1), device, mode, loss, memory_free)
        slope = max(0, gap_next - gap)
        method = method.replace(
            "at the smallest setting", f"at {LABELS[what]}={smallest} and {smallest + 1}, extrapolated"
        )

    def margin(value: int) -> int:
        return gap + slope * (value - smallest)

    plans: dict[int, int] = {}

    def predicted(index: int) -> int:
        value = index + offset
        plans[value] = planned(value)
        return plans[value] + margin(value)

    index, peaks = deepest_fit(predicted, budget_bytes, limit - offset)
    value = index + offset
    if index == 0:
        raise IreconError(
            f"even {LABELS[what]}={smallest} needs {human_bytes(peaks[1])} (planner {human_bytes(plans[smallest])} + "
            f"margin {human_bytes(margin(smallest))}), over the memory budget of {human_bytes(budget_bytes)}"
        )
    verified = None
    if what != "steps" and device.type != "meta":  # the margin's line is an estimate there: measure the choice
        while True:
            verified = max(measured_peaks(config_at(value), shape_at(value), device, mode, loss, memory_free))
            if verified <= budget_bytes or value == smallest:
                break
            value, index = value - 1, index - 1
        if verified > budget_bytes:
            raise IreconError(
                f"{LABELS[what]}={smallest} measured {human_bytes(verified)} on {device}, over the memory budget "
                f"of {human_bytes(budget_bytes)}"
            )
    if index not in peaks:
        peaks[index] = predicted(index)
    return MemoryFit(
        what=what,
        value=value,
        budget_bytes=budget_bytes,
        budget_source=source,
        planned_bytes=plans[value],
        margin_bytes=margin(value),
        margin_method=method,
        predicted_bytes=peaks[index],
        next_bytes=peaks.get(index + 1),
        verified_bytes=verified,
        limit=limit,
        shape=shape_at(value).describe(),
        seconds=time.perf_counter() - started,
    )


def measured_margin(
    config: ModelConfig, shape: InputShape, device: torch.device, mode: str, loss: str, memory_free: bool
) -> tuple[int, str]:
    """(device meter's largest peak - planner's peak, how) at one setting; 0 on meta."""
    if device.type == "meta":
        return 0, "none: planning on meta"
    measured = max(measured_peaks(config, shape, device, mode, loss, memory_free, repeats=3))
    planned = planned_peak(config, shape, mode, loss, memory_free)
    meter = "cpu allocator events" if device.type == "cpu" else "cuda max_memory_allocated"
    return max(0, measured - planned), f"{meter} - planner, measured at the smallest setting"

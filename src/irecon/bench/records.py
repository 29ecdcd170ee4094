"""What a bench-memory run produces: one :class:`Measurement` per setting, its JSON, and the ratios printed."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irecon.files import write_json as write_json_file
from irecon.models.configs import ModelConfig

MIB = 2**20


@dataclass
class Measurement:
    """One JSON record: a model at one depth, one mode, memory-free or plain (schema in docs/)."""

    model: str
    dims: int
    mode: str
    memory_free: bool
    steps: int | None
    layers_total: int | None
    input_shape: list[int]
    batches: int
    peak_bytes: int | None
    peak_bytes_all: list[int] = field(default_factory=list)
    param_bytes: int = 0
    grad_bytes: int = 0
    optimizer_bytes: int = 0
    input_bytes: int = 0
    activation_bytes: int | None = None
    step_seconds: float | None = None
    step_seconds_all: list[float] = field(default_factory=list)
    device: str = "cpu"
    method: str = ""
    storage_peak_bytes: int | None = None
    allocator_peak_bytes: int | None = None
    storage_method: str | None = None
    allocator_method: str | None = None
    planned_peak_bytes: int | None = None
    world_size: int = 1
    shard_optimizer: bool = False
    rank_optimizer_bytes: list[int] = field(default_factory=list)
    rank_peak_bytes: list[int] = field(default_factory=list)
    skipped: str | None = None

    @classmethod
    def of(cls, name: str, config: ModelConfig, mode: str, memory_free: bool, **values: Any) -> Measurement:
        """A record for ``config`` (its dims, time steps and depth: None for a model without them)."""
        return cls(
            model=name,
            dims=config.dims,
            mode=mode,
            memory_free=memory_free,
            steps=config.time_steps,
            layers_total=config.layers_total,
            **values,
        )

    @property
    def rank_weight_bytes(self) -> list[int]:
        """Per rank: parameters + gradients + the Adam state that rank holds."""
        return [self.param_bytes + self.grad_bytes + adam for adam in self.rank_optimizer_bytes]


def ratios(records: list[Measurement]) -> list[tuple[str, float]]:
    """Headline ratios, each with what it compares: depth growth, plain vs memory-free, step time."""
    out: list[tuple[str, float]] = []
    main = [m for m in records if m.model != "rim" and m.peak_bytes is not None]
    free_train = sorted((m for m in main if m.mode == "train" and m.memory_free), key=lambda m: m.layers_total)
    if len(free_train) >= 2:
        low, high = free_train[0], free_train[-1]
        span = f"{high.layers_total} / {low.layers_total} layers"
        out.append((f"memory-free training peak, {span}", high.peak_bytes / low.peak_bytes))
        out.append((f"memory-free training activations, {span}", high.activation_bytes / low.activation_bytes))
    pairs = [
        (f, p)
        for f in free_train
        for p in main
        if p.mode == "train" and not p.memory_free and p.layers_total == f.layers_total
    ]
    if pairs:
        f, p = max(pairs, key=lambda pair: pair[0].layers_total)
        out.append((f"plain / memory-free training peak at {f.layers_total} layers", p.peak_bytes / f.peak_bytes))
        if f.step_seconds is not None and p.step_seconds is not None:
            out.append((f"step time memory-free / plain at {f.layers_total} layers", f.step_seconds / p.step_seconds))
    return out


def write_json(path: str | Path, records: list[Measurement]) -> None:
    """All records as a JSON list (NaN/Inf as null), written atomically."""
    write_json_file(path, [asdict(m) for m in records])


def format_bytes(value: int | None) -> str:
    """Bytes as MiB with one decimal, "-" for None."""
    return "-" if value is None else f"{value / MIB:,.1f}"


def format_seconds(seconds: list[float]) -> str:
    """Median and range of batch times to two significant figures, e.g. ``0.12 (0.11-0.14)``; "-" for none."""
    if not seconds:
        return "-"
    median = two_figures(statistics.median(seconds))
    if len(seconds) == 1:
        return median
    return f"{median} ({two_figures(min(seconds))}-{two_figures(max(seconds))})"


def two_figures(value: float) -> str:
    """A positive number to two significant figures, e.g. ``0.012``, ``1.5``, ``110``."""
    if value <= 0:
        return "0"
    value = float(f"{value:.2g}")
    decimals = max(0, 1 - math.floor(math.log10(value)))
    return f"{value:,.{decimals}f}"

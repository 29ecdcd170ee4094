"""What ``irecon bench-memory`` takes: one dataclass whose defaults are the command line's, importable without torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BenchOptions:
    """What ``irecon bench-memory`` measures; every field has a command-line option.

    ``batches`` None means 10 (appendix C), or 1 on meta, where every mini-batch after the
    warm-up is the same shapes-only computation. ``meter`` None means the allocator meter on the
    CPU. ``budget`` (bytes) asks the planner for the deepest T up to ``max_steps`` that fits.
    ``world_size``/``shard_optimizer`` add each DDP rank's Adam bytes and peak to training records;
    ``threads`` sets torch's CPU threads (None keeps torch's default).
    """

    model: str = "paper-2d"
    steps: Sequence[int] = (1, 2, 4)
    layers: Sequence[int] | None = None
    size: tuple[int, int] = (320, 320)
    slices: int = 8
    coils: int | None = None
    batches: int | None = None
    device: str | None = None
    meter: str | None = None
    modes: Sequence[str] = ("train", "inference")
    compare_plain: bool = False
    with_rim: bool = False
    timing_batches: int = 3
    budget: int | None = None
    max_steps: int = 100
    world_size: int = 1
    shard_optimizer: bool = False
    threads: int | None = None
    memory_limit: int | None = None
    json_path: str | Path | None = None
    plot_path: str | Path | None = None
    log_scale: bool = False

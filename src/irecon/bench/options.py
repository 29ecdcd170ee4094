"""What ``irecon bench-memory`` takes: one frozen dataclass whose defaults are the command line's, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from irecon.errors import IreconError
from irecon.files import check_writable_file
from irecon.values import check_count, check_device_name, check_threads

DEFAULT_STEPS = (1, 2, 4)  # the depths swept when --steps is not given (models with time steps)
METERS = ("allocator", "storages")  # the CPU meters, as irecon.memory.meters names them
MODES = ("train", "inference")


@dataclass(frozen=True)
class BenchOptions:
    """What ``irecon bench-memory`` measures; every field has a command-line option.

    ``steps`` None means 1 2 4 for a model with time steps (a U-Net has none). ``batches`` None
    means 10 (appendix C), or 1 on meta. ``meter`` None means the allocator meter on the CPU.
    ``budget`` (bytes) asks the planner for the deepest T up to ``max_steps`` that fits.
    ``world_size``/``shard_optimizer`` add each DDP rank's Adam bytes and peak to training records;
    ``threads`` sets torch's CPU threads for the run (None keeps torch's default).
    """

    model: str = "paper-2d"
    steps: tuple[int, ...] | None = None
    layers: tuple[int, ...] | None = None
    size: tuple[int, int] = (320, 320)
    slices: int = 8
    coils: int | None = None
    batches: int | None = None
    device: str | None = None
    meter: str | None = None
    modes: tuple[str, ...] = MODES
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

    @property
    def sweep_steps(self) -> tuple[int, ...]:
        """The time steps swept: ``steps``, or 1 2 4 when not given."""
        return tuple(self.steps) if self.steps else DEFAULT_STEPS

    @property
    def meter_name(self) -> str:
        """The meter whose figure is the peak: cuda, storages (meta) or the chosen CPU meter."""
        if self.device == "meta":
            return "storages"
        if str(self.device).startswith("cuda"):
            return "cuda"
        return self.meter or "allocator"

    def validate(self) -> None:
        """Raise :class:`IreconError` for the first bad value; checks the output paths; changes nothing."""
        check_count("batches", self.batches)
        if self.steps is not None and (not self.steps or min(self.steps) < 1):
            raise IreconError("«steps» needs one or more values >= 1")
        if min(self.size) < 8:
            raise IreconError(f"«size» {self.size[0]} {self.size[1]} is too small (at least 8 x 8)")
        for name in ("slices", "world_size", "coils", "timing_batches", "max_steps"):
            check_count(name, getattr(self, name))
        check_threads(self.threads)
        check_device_name(self.device, meta=True)
        if self.layers is not None and (not self.layers or min(self.layers) < 1):
            raise IreconError("«layers» needs values >= 1")
        if self.meter is not None and self.meter not in METERS:
            raise IreconError(f"unknown meter '{self.meter}' (choose from {', '.join(METERS)})")
        if self.budget is not None:
            if self.budget < 1:
                raise IreconError(f"«budget» must be at least one byte, got {self.budget}")
            if self.device not in (None, "meta"):
                raise IreconError(f"«budget» plans on the meta device; use «device» meta, not {self.device}")
        if self.meter not in (None, "storages") and self.device == "meta":
            raise IreconError(f"«meter» {self.meter} is a CPU meter; on meta the planner counts storages")
        if self.meter is not None and str(self.device).startswith("cuda"):
            raise IreconError(f"«meter» {self.meter} is a CPU meter; on CUDA the caching allocator counts")
        for mode in self.modes:
            if mode not in MODES:
                raise IreconError(f"unknown mode '{mode}'")
        for path in (self.json_path, self.plot_path):
            if path is not None:
                check_writable_file(path)

    def resolved(self, device: str) -> BenchOptions:
        """A validated copy for the run on ``device`` (already resolved; meta under --budget), batches filled in."""
        device = "meta" if self.budget is not None else device
        batches = self.batches if self.batches is not None else 1 if device == "meta" else 10
        out = replace(self, device=device, batches=batches)
        out.validate()
        return out

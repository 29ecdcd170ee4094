"""Equal training memory for ``compare.py --memory-budget``: each preset grown to the same planned peak.

The planner (``irecon.bench``'s shapes-only run of the appendix-C training protocol on the meta
device) gives each setting's exact tensor bytes; :func:`irecon.memory.budget.deepest_fit` finds the
largest time-step count T that fits. The i-RIM trains memory-free, so its T grows far more than
the RIM's, which keeps every step's activations. The U-Net has no T: it grows in width (its
first-level channels, doubled at every pool) to the largest that fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from irecon.bench.options import BenchOptions
from irecon.bench.protocol import planned_peak
from irecon.data.volumes import find_volumes, read_volume_info
from irecon.errors import IreconError
from irecon.memory.budget import deepest_fit
from irecon.models.presets import count_parameters, preset

MAX_STEPS = 200
MAX_UNET_CHANS = 256


@dataclass(frozen=True)
class Sized:
    """One preset at the size that fits the budget: its T (None without time steps) or U-Net width, peak, parameters."""

    model: str
    steps: int | None
    unet_chans: int | None
    planned_peak_bytes: int
    parameters: int
    memory_free: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_shape(train: Path) -> tuple[tuple[int, int], int]:
    """(k-space H x W, coils) of the first training volume: the sizes the planner runs at."""
    paths, _ = find_volumes([train])
    if not paths:
        raise IreconError("holds no .h5 volumes", train)
    info = read_volume_info(paths[0])
    return info.kspace_shape, max(1, info.num_coils)


def size_models(models: list[str], budget: int, train: Path, max_steps: int = MAX_STEPS) -> list[Sized]:
    """Every preset grown in T to the largest that fits ``budget`` bytes of planned training peak (batch 1)."""
    size, coils = data_shape(train)
    options = BenchOptions(size=size, coils=coils, device="meta", batches=1, modes=("train",))
    sized = []
    for name in models:
        base = preset(name, coils=coils)
        memory_free = base.invertible

        def peak_at(steps: int, name: str = name, memory_free: bool = memory_free) -> int:
            config = preset(name, steps=steps, coils=coils)
            return planned_peak(config, name, "train", memory_free, options)

        if base.time_steps is None:
            chans, peak = _widest_unet(name, coils, budget, options)
            config = preset(name, coils=coils, unet_chans=chans)
            sized.append(Sized(name, None, chans, peak, count_parameters(config), memory_free))
            continue
        steps, peaks = deepest_fit(peak_at, budget, max_steps)
        if steps == 0:
            raise IreconError(f"{name} does not fit {budget:,} bytes even with one time step")
        config = preset(name, steps=steps, coils=coils)
        sized.append(Sized(name, steps, None, peaks[steps], count_parameters(config), memory_free))
    return sized


def _widest_unet(name: str, coils: int, budget: int, options: BenchOptions) -> tuple[int, int]:
    """(largest first-level channel count <= MAX_UNET_CHANS whose planned peak fits ``budget``, that peak)."""

    def peak_at(chans: int) -> int:
        return planned_peak(preset(name, coils=coils, unet_chans=chans), name, "train", False, options)

    chans, peaks = deepest_fit(peak_at, budget, MAX_UNET_CHANS)
    if chans == 0:
        raise IreconError(f"{name} does not fit {budget:,} bytes even with one channel")
    return chans, peaks[chans]

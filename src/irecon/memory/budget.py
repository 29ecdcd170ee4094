"""The memory planner: peak memory from shapes alone, and the deepest model that fits a budget.

A shapes-only run executes the real model, engine and optimiser on tensors of the meta device:
every op computes its output's shape and allocates no memory, so any preset at any size runs in
seconds on any machine. Counting the storages those ops create gives the exact tensor bytes of
the same run on a real device (``StorageTracker("meta")``, checked against the CPU tracker).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Fit", "deepest_fit"]


@dataclass
class Fit:
    """The deepest number of time steps T whose peak fits a budget, with the figures that show it.

    ``steps`` is 0 when even T=1 does not fit. ``next_peak_bytes`` is the peak at ``steps + 1``
    (None when the search stopped at ``max_steps``, ``limit_reached``). ``peaks`` holds every depth
    measured, as {T: bytes}.
    """

    model: str
    mode: str
    memory_free: bool
    budget_bytes: int
    max_steps: int
    steps: int
    peak_bytes: int | None
    next_peak_bytes: int | None
    limit_reached: bool
    method: str
    peaks: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0


def deepest_fit(peak_at: Callable[[int], int], budget: int, max_steps: int) -> tuple[int, dict[int, int]]:
    """(largest T <= max_steps with peak_at(T) <= budget, every peak measured), 0 if none fits.

    Peaks grow with T. The peaks at T = 1 and 2 give a straight-line guess; the guess is then
    checked by measuring T and T + 1 and, if it was wrong, the answer is found by bisection between
    measured depths. Every depth in the answer was measured.
    """
    peaks: dict[int, int] = {}

    def peak(steps: int) -> int:
        if steps not in peaks:
            peaks[steps] = peak_at(steps)
        return peaks[steps]

    if peak(1) > budget:
        return 0, peaks
    if max_steps > 1:
        slope = peak(2) - peak(1)
        guess = max_steps if slope <= 0 else 1 + (budget - peak(1)) // slope
        guess = max(1, min(max_steps, guess))
        peak(guess)
        if guess < max_steps and peaks[guess] <= budget:
            peak(guess + 1)
    while True:
        low = max(t for t, p in peaks.items() if p <= budget)
        high = min((t for t, p in peaks.items() if p > budget), default=max_steps + 1)
        if high - low <= 1 or low == max_steps:
            return low, peaks
        peak((low + high) // 2)


def timed_fit(
    model: str,
    mode: str,
    memory_free: bool,
    budget: int,
    max_steps: int,
    method: str,
    peak_at: Callable[[int], int],
) -> Fit:
    """:func:`deepest_fit` as a :class:`Fit` record, with the wall time it took."""
    started = time.perf_counter()
    steps, peaks = deepest_fit(peak_at, budget, max_steps)
    return Fit(
        model=model,
        mode=mode,
        memory_free=memory_free,
        budget_bytes=budget,
        max_steps=max_steps,
        steps=steps,
        peak_bytes=peaks.get(steps),
        next_peak_bytes=peaks.get(steps + 1),
        limit_reached=steps == max_steps,
        method=method,
        peaks=dict(sorted(peaks.items())),
        seconds=time.perf_counter() - started,
    )

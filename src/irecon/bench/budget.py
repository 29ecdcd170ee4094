"""``irecon bench-memory --budget``: the deepest T that fits, from shapes-only runs of the protocol.

The search itself is :func:`irecon.memory.budget.deepest_fit`; this module gives it the planner's peaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from irecon.bench.options import BenchOptions
from irecon.bench.protocol import planned_peak, prepare
from irecon.errors import IreconError
from irecon.files import write_json
from irecon.memory.budget import Fit, timed_fit
from irecon.memory.meters import META_METHOD
from irecon.models.presets import preset


@dataclass(frozen=True)
class Depth:
    """One depth the search measured: its planned peak, whether it fits, and how long it took."""

    model: str
    mode: str
    memory_free: bool
    steps: int
    peak_bytes: int
    fits: bool
    seconds: float


def run_budget(
    options: BenchOptions,
    report: Callable[[Fit], None] = lambda f: None,
    tried: Callable[[Depth], None] = lambda d: None,
) -> list[Fit]:
    """The deepest T (up to ``max_steps``) whose planned peak fits ``budget``, memory-free and plain.

    One :class:`Fit` per mode and engine setting (plain only for the RIM), each from exact
    shapes-only runs of the appendix-C protocol; ``tried`` hears of every depth as it is measured,
    ``report`` of every answer. Written to ``json_path`` when given.
    """
    if options.budget is None:
        raise IreconError("run_budget needs a budget")
    options = prepare(options)
    if options.layers is not None and len(options.layers) > 1:
        raise IreconError("«budget» searches over T for one layer count: give at most one «layers»")
    layers = options.layers[0] if options.layers else None
    base = preset(options.model)
    if base.time_steps is None:
        raise IreconError(f"«budget» searches over time steps T, and «model» {options.model} has none")
    budget = options.budget
    fits: list[Fit] = []
    for mode in options.modes:
        for memory_free in (True, False) if base.invertible else (False,):

            def peak_at(steps: int, mode: str = mode, memory_free: bool = memory_free) -> int:
                started = time.perf_counter()
                config = preset(options.model, steps=steps, layers=layers, coils=options.coils)
                peak = planned_peak(config, options.model, mode, memory_free, options)
                seconds = time.perf_counter() - started
                tried(Depth(options.model, mode, memory_free, steps, peak, peak <= budget, seconds))
                return peak

            fit = timed_fit(options.model, mode, memory_free, budget, options.max_steps, META_METHOD, peak_at)
            fits.append(fit)
            report(fit)
    if options.json_path is not None:
        write_json(options.json_path, [asdict(f) for f in fits])
    return fits

"""``irecon bench-memory``'s sweep: every depth, mode and engine setting asked for, then --json and --plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from irecon.bench.options import BenchOptions
from irecon.bench.plot import memory_sweep
from irecon.bench.protocol import measure, method_of, planned_peak, prepare
from irecon.bench.records import MIB, Measurement, write_json
from irecon.figures import save_png
from irecon.models.configs import ModelConfig
from irecon.models.presets import preset

__all__ = ["available_bytes", "run_bench"]

FIT_FRACTION = 0.8  # a plain run is skipped when the planner's peak exceeds this share of free memory


def available_bytes(device: str, limit: int | None = None) -> int:
    """Memory a new run can use: ``limit`` if given; on CUDA the driver's free memory plus what the
    caching allocator holds unused (reserved - allocated); on the CPU ``MemAvailable``."""
    if limit is not None:
        return limit
    if device.startswith("cuda"):
        free = torch.cuda.mem_get_info(device)[0]
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    with open("/proc/meminfo") as handle:
        fields_ = dict(line.split(":", 1) for line in handle)
    return int(fields_["MemAvailable"].split()[0]) * 1024


def _configs(options: BenchOptions) -> list[tuple[str, ModelConfig]]:
    if preset(options.model).time_steps is None:  # no time steps: one model
        configs = [(options.model, preset(options.model, coils=options.coils))]
    else:
        layer_counts: tuple[int | None, ...] = options.layers or (None,)
        configs = [
            (options.model, preset(options.model, steps=steps, layers=layers, coils=options.coils))
            for steps in options.sweep_steps
            for layers in layer_counts
        ]
    if options.with_rim:
        configs += [("rim", preset("rim", steps=steps, dims=2, coils=options.coils)) for steps in options.sweep_steps]
    return configs


def run_bench(
    options: BenchOptions,
    report: Callable[[Measurement], None] = lambda m: None,
    starting: Callable[[str, str, bool, int | None], None] | None = None,
) -> list[Measurement]:
    """Measure every depth, mode and engine setting the options ask for; then write --json and --plot.

    The options and output files are checked before the first measurement, so a bad value fails at
    once. ``starting(model, mode, memory_free, steps)`` is called before each measurement (steps
    None for a U-Net), ``report`` after it.
    """
    options = prepare(options)
    device = str(options.device)
    records: list[Measurement] = []
    for name, config in _configs(options):
        settings = [False] if not config.invertible else ([True, False] if options.compare_plain else [True])
        for mode in options.modes:
            for memory_free in settings:
                planned = None
                if not memory_free and device != "meta":
                    planned = planned_peak(config, name, mode, memory_free, options)
                    available = available_bytes(device, options.memory_limit)
                if planned is not None and planned > FIT_FRACTION * available:
                    record = _skipped(config, name, mode, memory_free, options, planned, available)
                else:
                    if starting is not None:
                        starting(name, mode, memory_free, config.time_steps)
                    record = _measure_or_oom(config, name, mode, memory_free, options)
                records.append(replace(record, planned_peak_bytes=planned))
                report(records[-1])
    if options.json_path is not None:
        write_json(options.json_path, records)
    if options.plot_path is not None:
        save_png(memory_sweep(records, options.log_scale), options.plot_path, dpi=110)
    return records


def _measure_or_oom(config: ModelConfig, name: str, mode: str, memory_free: bool, options: BenchOptions) -> Measurement:
    try:
        return measure(config, name, mode, memory_free, options)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return _skipped(config, name, mode, memory_free, options, None, None)


def _skipped(
    config: ModelConfig,
    name: str,
    mode: str,
    memory_free: bool,
    options: BenchOptions,
    predicted: float | None,
    available: int | None,
) -> Measurement:
    reason = "out of memory"
    if predicted is not None and available is not None:
        reason = f"would need {predicted / MIB:,.0f} MiB (planner), {available / MIB:,.0f} MiB available"
    return Measurement.of(
        name,
        config,
        mode,
        memory_free,
        input_shape=[],
        batches=options.batches or 1,
        peak_bytes=None,
        device=str(options.device),
        method=method_of(options),
        skipped=reason,
    )

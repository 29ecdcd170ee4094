"""``irecon bench-memory``: peak memory of training and inference as the i-RIM paper measured it.

Protocol (appendix C): one device, mini-batch size 1. Training: run N mini-batches (10); the peak
is reset before each and read after its back-propagation step; report the MINIMUM over the N.
Inference: the same with the model in eval mode and no back-propagation. On CUDA the figures are
``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats``; on the CPU they
come from the exact storage tracker. Parameters, gradients and optimiser state are reported apart
from the activation part (peak minus everything allocated before the mini-batch).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.files import check_writable_file
from irecon.files import write_json as write_json_file
from irecon.losses import mean_mse
from irecon.memory import PeakMemoryMeter, peak_memory_meter, tensor_bytes
from irecon.models.presets import ModelConfig, build_model, preset
from irecon.plots import memory_sweep, save_png

MIB = 2**20


@dataclass
class Measurement:
    """One JSON record: a model at one depth, one mode, memory-free or plain (schema in docs/)."""

    model: str
    dims: int
    mode: str
    memory_free: bool
    steps: int
    layers_total: int
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
    device: str = "cpu"
    method: str = ""
    skipped: str | None = None


@dataclass
class BenchOptions:
    """What ``irecon bench-memory`` measures; every field has a command-line option."""

    model: str = "paper-2d"
    steps: Sequence[int] = (1, 2, 4)
    layers: Sequence[int] | None = None
    size: tuple[int, int] = (320, 320)
    slices: int = 8
    batches: int = 10
    device: str | None = None
    modes: Sequence[str] = ("train", "inference")
    compare_plain: bool = False
    with_rim: bool = False
    timing_batches: int = 3
    memory_limit: int | None = None
    json_path: str | Path | None = None
    plot_path: str | Path | None = None


def measure_peaks(meter: PeakMemoryMeter, batch: Callable[[], None], batches: int) -> tuple[list[int], int]:
    """(peak of each mini-batch, bytes allocated before the last one): reset, run, read, N times."""
    peaks = []
    before = 0
    for _ in range(batches):
        before = meter.memory_allocated()
        meter.reset_peak_memory_stats()
        batch()
        peaks.append(meter.max_memory_allocated())
    return peaks, before


def synthetic_inputs(config: ModelConfig, size: tuple[int, int], slices: int, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Masked k-space (1, coils, [S,] H, W), a 4x column mask and a target (1, [S,] H, W); seeded."""
    generator = torch.Generator().manual_seed(0)
    spatial = (slices, *size) if config.dims == 3 else size
    mask = (torch.rand(size[1], generator=generator) < 0.25).float()
    centre = max(1, round(0.08 * size[1]))
    mask[(size[1] - centre + 1) // 2 : (size[1] - centre + 1) // 2 + centre] = 1
    mask = mask.view(1, 1, *([1] * (len(spatial) - 1)), size[1])
    kspace = torch.randn(1, config.coils, *spatial, dtype=torch.complex64, generator=generator) * mask
    target = torch.rand(1, *spatial, generator=generator)
    return kspace.to(device), mask.to(device), target.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _median_seconds(batch: Callable[[], None], repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        batch()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _available_bytes(device: str, limit: int | None) -> int:
    if limit is not None:
        return limit
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as handle:
        fields_ = dict(line.split(":", 1) for line in handle)
    return int(fields_["MemAvailable"].split()[0]) * 1024


def measure(
    config: ModelConfig, name: str, mode: str, memory_free: bool, options: BenchOptions,
) -> Measurement:
    """Run the appendix-C protocol for one model, mode and engine setting."""
    device = options.device
    model = build_model(config, memory_free=memory_free).to(device)
    kspace, mask, target = synthetic_inputs(config, options.size, options.slices, device)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4) if params and mode == "train" else None

    def train_batch() -> None:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=False)
        mean_mse(model(kspace, mask), target).backward()

    def inference_batch() -> None:
        with torch.no_grad():
            model(kspace, mask)

    if mode == "train":
        model.train()
        batch = train_batch
        if optimizer is not None:  # gradients and Adam state exist before the protocol starts
            train_batch()
            optimizer.step()
    else:
        model.eval()
        batch = inference_batch

    record = Measurement(
        model=name, dims=config.dims, mode=mode, memory_free=memory_free, steps=config.steps,
        layers_total=config.steps * config.layers if config.kind == "irim" else config.steps,
        input_shape=list(kspace.shape), batches=options.batches, peak_bytes=None,
        param_bytes=tensor_bytes(*params),
        grad_bytes=tensor_bytes(*[p.grad for p in params if p.grad is not None]),
        optimizer_bytes=tensor_bytes(optimizer) if optimizer is not None else 0,
        input_bytes=tensor_bytes(kspace, mask, target), device=device,
    )
    meter = peak_memory_meter(device)
    record.method = meter.method
    with meter:
        meter.track(*(o for o in (model, optimizer, kspace, mask, target) if o is not None))
        peaks, before = measure_peaks(meter, batch, options.batches)
    record.peak_bytes_all = peaks
    record.peak_bytes = min(peaks)
    record.activation_bytes = record.peak_bytes - before
    record.step_seconds = _median_seconds(batch, options.timing_batches, device)
    return record


def _configs(options: BenchOptions) -> list[tuple[str, ModelConfig]]:
    layer_counts: Sequence[int | None] = options.layers or [None]
    configs = [
        (options.model, preset(options.model, steps=steps, layers=layers))
        for steps in options.steps
        for layers in layer_counts
    ]
    if options.with_rim:
        configs += [("rim", preset("rim", steps=steps, dims=2)) for steps in options.steps]
    return configs


def _predicted_plain_bytes(done: list[Measurement], config: ModelConfig) -> float | None:
    """Linear extrapolation of plain-autograd peaks in depth (they grow linearly)."""
    points = sorted({(m.layers_total, m.peak_bytes) for m in done if m.peak_bytes is not None})
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = points[-2], points[-1]
    depth = config.steps * config.layers if config.kind == "irim" else config.steps
    return y1 + (y1 - y0) / max(1, x1 - x0) * (depth - x1)


def run_bench(options: BenchOptions, report: Callable[[Measurement], None] = lambda m: None) -> list[Measurement]:
    """Measure every depth, mode and engine setting the options ask for; then write --json and --plot.

    The output files are checked before the first measurement, so a bad path fails at once.
    """
    _validate(options)
    records: list[Measurement] = []
    for name, config in _configs(options):
        settings = [False] if config.kind != "irim" else ([True, False] if options.compare_plain else [True])
        for mode in options.modes:
            for memory_free in settings:
                same = [m for m in records if m.model == name and m.mode == mode and m.memory_free == memory_free]
                predicted = None if memory_free else _predicted_plain_bytes(same, config)
                available = _available_bytes(options.device, options.memory_limit)
                if predicted is not None and predicted > 0.8 * available:
                    record = _skipped(config, name, mode, memory_free, options, predicted, available)
                else:
                    record = _measure_or_oom(config, name, mode, memory_free, options)
                records.append(record)
                report(record)
    if options.json_path is not None:
        write_json(options.json_path, records)
    if options.plot_path is not None:
        save_png(memory_sweep(records), options.plot_path, dpi=110)
    return records


def _measure_or_oom(config: ModelConfig, name: str, mode: str, memory_free: bool, options: BenchOptions) -> Measurement:
    try:
        return measure(config, name, mode, memory_free, options)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return _skipped(config, name, mode, memory_free, options, None, None)


def _skipped(
    config: ModelConfig, name: str, mode: str, memory_free: bool, options: BenchOptions,
    predicted: float | None, available: int | None,
) -> Measurement:
    reason = "out of memory"
    if predicted is not None and available is not None:
        reason = f"would need ~{predicted / MIB:,.0f} MiB, {available / MIB:,.0f} MiB available"
    return Measurement(
        model=name, dims=config.dims, mode=mode, memory_free=memory_free, steps=config.steps,
        layers_total=config.steps * config.layers if config.kind == "irim" else config.steps,
        input_shape=[], batches=options.batches, peak_bytes=None, device=options.device,
        method=peak_memory_meter(options.device).method, skipped=reason,
    )


def _validate(options: BenchOptions) -> None:
    if options.batches < 1:
        raise IreconError(f"--batches must be at least 1, got {options.batches}")
    if not options.steps or min(options.steps) < 1:
        raise IreconError("--steps needs one or more values >= 1")
    if min(options.size) < 8:
        raise IreconError(f"--size {options.size[0]} {options.size[1]} is too small (at least 8 x 8)")
    if options.timing_batches < 1:
        raise IreconError(f"--timing-batches must be at least 1, got {options.timing_batches}")
    if options.layers is not None and min(options.layers) < 1:
        raise IreconError("--layers needs values >= 1")
    options.device = str(resolve_device(options.device))
    for path in (options.json_path, options.plot_path):
        if path is not None:
            check_writable_file(path)
    if preset(options.model).kind == "zero-filled":
        raise IreconError("zero-filled has no memory to measure: choose an i-RIM, RIM or U-Net preset")
    for mode in options.modes:
        if mode not in ("train", "inference"):
            raise IreconError(f"unknown mode '{mode}'")


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
        (f, p) for f in free_train for p in main
        if p.mode == "train" and not p.memory_free and p.layers_total == f.layers_total
    ]
    if pairs:
        f, p = max(pairs, key=lambda pair: pair[0].layers_total)
        out.append((f"plain / memory-free training peak at {f.layers_total} layers", p.peak_bytes / f.peak_bytes))
        out.append((f"step time memory-free / plain at {f.layers_total} layers", f.step_seconds / p.step_seconds))
    return out


def write_json(path: str | Path, records: list[Measurement]) -> None:
    """All records as a JSON list (NaN/Inf as null), written atomically."""
    write_json_file(path, [asdict(m) for m in records])


def format_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


"""``irecon bench-memory``: peak memory of training and inference as the i-RIM paper measured it.

Protocol (appendix C): one device, mini-batch size 1. Training: run N mini-batches (10); the peak
is reset before each and read after its back-propagation step; report the MINIMUM over the N.
Inference: the same with the model in eval mode and no back-propagation. On CUDA the figures are
``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats``. On the CPU two
meters watch the same mini-batches: the exact storage tracker and the allocator events; ``meter``
picks the one reported as the peak, and both are recorded. On the meta device the run is
shapes-only and the storage tracker gives the planner's figure. Parameters, gradients and
optimiser state are reported apart from the activation part (peak minus everything allocated
before the mini-batch).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import torch
from torch import Tensor

from irecon.bench.options import BenchOptions
from irecon.bench.plot import memory_sweep
from irecon.bench.records import MIB, Measurement, write_json
from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.figures import save_png
from irecon.files import check_writable_file
from irecon.files import write_json as write_json_file
from irecon.losses import mean_mse
from irecon.memory.adam import adam_shards
from irecon.memory.budget import Fit, timed_fit
from irecon.memory.meters import (
    ALLOCATOR_METHOD,
    CUDA_METHOD,
    META_METHOD,
    METERS,
    STORAGE_METHOD,
    CpuAllocatorMeter,
    PeakMemoryMeter,
    StorageTracker,
    peak_memory_meter,
    tensor_bytes,
)
from irecon.models.configs import ModelConfig
from irecon.models.presets import preset

FIT_FRACTION = 0.8  # a plain run is skipped when the planner's peak exceeds this share of free memory


def measure_peaks(
    meters: Sequence[PeakMemoryMeter], batch: Callable[[], None], batches: int
) -> list[tuple[list[int], int]]:
    """Per meter, (peak of each mini-batch, bytes allocated before the last one): reset, run, read, N times.

    All meters watch the same mini-batches.
    """
    peaks: list[list[int]] = [[] for _ in meters]
    before = [0] * len(meters)
    for _ in range(batches):
        for i, meter in enumerate(meters):
            before[i] = meter.memory_allocated()
            meter.reset_peak_memory_stats()
        batch()
        for i, meter in enumerate(meters):
            peaks[i].append(meter.max_memory_allocated())
    return list(zip(peaks, before))


def synthetic_inputs(
    config: ModelConfig, size: tuple[int, int], slices: int, device: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Masked k-space (1, coils, [S,] H, W), a 4x column mask and a target (1, [S,] H, W); seeded.

    On meta the three tensors have the same shapes and dtypes and no values.
    """
    spatial = (slices, *size) if config.dims == 3 else size
    mask_shape = (1, 1, *([1] * (len(spatial) - 1)), size[1])
    if device == "meta":
        return (
            torch.empty(1, config.coils, *spatial, dtype=torch.complex64, device=device),
            torch.empty(mask_shape, device=device),
            torch.empty(1, *spatial, device=device),
        )
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(size[1], generator=generator) < 0.25).float()
    centre = max(1, round(0.08 * size[1]))
    mask[(size[1] - centre + 1) // 2 : (size[1] - centre + 1) // 2 + centre] = 1
    mask = mask.view(mask_shape)
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


def _meter_name(options: BenchOptions) -> str:
    """The meter whose figure is ``peak_bytes``: cuda, storages (meta) or the chosen CPU meter."""
    if options.device == "meta":
        return "storages"
    if str(options.device).startswith("cuda"):
        return "cuda"
    return options.meter or "allocator"


def _method(options: BenchOptions) -> str:
    if options.device == "meta":
        return META_METHOD
    return {"cuda": CUDA_METHOD, "allocator": ALLOCATOR_METHOD, "storages": STORAGE_METHOD}[_meter_name(options)]


def _meters(device: str) -> dict[str, PeakMemoryMeter]:
    """Every meter that watches a run on ``device``, by name."""
    if device == "cpu":
        return {"storages": StorageTracker(device), "allocator": CpuAllocatorMeter()}
    if device == "meta":
        return {"storages": peak_memory_meter(device)}
    return {"cuda": peak_memory_meter(device)}


def _build(config: ModelConfig, memory_free: bool, device: str) -> torch.nn.Module:
    if device == "meta":
        with torch.device("meta"):
            return config.build(memory_free=memory_free)
    return config.build(memory_free=memory_free).to(device)


def measure(
    config: ModelConfig,
    name: str,
    mode: str,
    memory_free: bool,
    options: BenchOptions,
) -> Measurement:
    """Run the appendix-C protocol for one model, mode and engine setting (shapes only on meta)."""
    device = options.device
    batches = options.batches or 1
    model = _build(config, memory_free, device)
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
            _warm_up(train_batch, optimizer, params, device)
    else:
        model.eval()
        batch = inference_batch

    record = Measurement(
        model=name,
        dims=config.dims,
        mode=mode,
        memory_free=memory_free,
        steps=config.time_steps,
        layers_total=config.layers_total,
        input_shape=list(kspace.shape),
        batches=batches,
        peak_bytes=None,
        param_bytes=tensor_bytes(*params),
        grad_bytes=tensor_bytes(*[p.grad for p in params if p.grad is not None]),
        optimizer_bytes=tensor_bytes(optimizer) if optimizer is not None else 0,
        input_bytes=tensor_bytes(kspace, mask, target),
        device=device,
    )
    meters = _meters(device)
    if device != "meta":
        gc.collect()  # earlier runs' cyclic garbage is freed now, not inside the window
    with contextlib.ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
            meter.track(*(o for o in (model, optimizer, kspace, mask, target) if o is not None))
        results = dict(zip(meters, measure_peaks(list(meters.values()), batch, batches)))
    chosen = _meter_name(options)
    peaks, before = results[chosen]
    record.method = meters[chosen].method
    record.peak_bytes_all = peaks
    record.peak_bytes = min(peaks)
    record.activation_bytes = record.peak_bytes - before
    if "storages" in results:
        record.storage_peak_bytes = min(results["storages"][0])
        record.storage_method = meters["storages"].method
    if "allocator" in results:
        record.allocator_peak_bytes = min(results["allocator"][0])
        record.allocator_method = meters["allocator"].method
    if device != "meta":
        record.step_seconds = _median_seconds(batch, options.timing_batches, device)
    if optimizer is not None:
        _per_rank(record, params, options)
    return record


def _per_rank(record: Measurement, params: list[Tensor], options: BenchOptions) -> None:
    """Each rank's Adam bytes and peak under DDP over ``world_size`` ranks (sharded or not).

    Every rank holds the whole parameters and gradients (DDP's gradients are views of its buckets)
    and runs the same step on its own batch, so a rank's peak is the one-process peak with its own
    share of the Adam state in place of the whole state.
    """
    record.world_size, record.shard_optimizer = options.world_size, options.shard_optimizer
    shards = adam_shards(params, options.world_size, options.shard_optimizer)
    whole = record.optimizer_bytes
    record.rank_optimizer_bytes = [s.total_bytes for s in shards]
    if record.peak_bytes is not None:
        record.rank_peak_bytes = [record.peak_bytes - whole + s.total_bytes for s in shards]


def _warm_up(
    train_batch: Callable[[], None], optimizer: torch.optim.Optimizer, params: list[Tensor], device: str
) -> None:
    """One mini-batch and optimiser step, so gradients and Adam state exist before the protocol.

    On meta only the tensors it leaves matter: every gradient it produces is dense and shaped like
    its parameter, so zeros of that shape stand for it and the shapes-only backward is skipped.
    """
    if device == "meta":
        for p in params:
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
    else:
        train_batch()
    optimizer.step()


def planned_peak(config: ModelConfig, name: str, mode: str, memory_free: bool, options: BenchOptions) -> int:
    """The planner's peak for one setting: the same protocol, shapes only, one mini-batch."""
    plan = replace(options, device="meta", batches=1, meter=None)
    peak = measure(config, name, mode, memory_free, plan).peak_bytes
    assert peak is not None
    return peak


def _configs(options: BenchOptions) -> list[tuple[str, ModelConfig]]:
    if preset(options.model).time_steps is None:  # no time steps: one model
        configs = [(options.model, preset(options.model, coils=options.coils))]
    else:
        layer_counts: Sequence[int | None] = options.layers or [None]
        configs = [
            (options.model, preset(options.model, steps=steps, layers=layers, coils=options.coils))
            for steps in options.steps
            for layers in layer_counts
        ]
    if options.with_rim:
        configs += [("rim", preset("rim", steps=steps, dims=2, coils=options.coils)) for steps in options.steps]
    return configs


def run_bench(
    options: BenchOptions,
    report: Callable[[Measurement], None] = lambda m: None,
    starting: Callable[[str, str, bool, int], None] | None = None,
) -> list[Measurement]:
    """Measure every depth, mode and engine setting the options ask for; then write --json and --plot.

    The output files are checked before the first measurement, so a bad path fails at once.
    ``starting(model, mode, memory_free, steps)`` is called before each measurement, ``report``
    after it.
    """
    _validate(options)
    records: list[Measurement] = []
    for name, config in _configs(options):
        settings = [False] if not config.invertible else ([True, False] if options.compare_plain else [True])
        for mode in options.modes:
            for memory_free in settings:
                planned = None
                if not memory_free and options.device != "meta":
                    planned = planned_peak(config, name, mode, memory_free, options)
                    available = available_bytes(options.device, options.memory_limit)
                if planned is not None and planned > FIT_FRACTION * available:
                    record = _skipped(config, name, mode, memory_free, options, planned, available)
                else:
                    if starting is not None:
                        starting(name, mode, memory_free, config.time_steps)
                    record = _measure_or_oom(config, name, mode, memory_free, options)
                record.planned_peak_bytes = planned
                records.append(record)
                report(record)
    if options.json_path is not None:
        write_json(options.json_path, records)
    if options.plot_path is not None:
        save_png(memory_sweep(records, options.log_scale), options.plot_path, dpi=110)
    return records


def run_budget(options: BenchOptions, report: Callable[[Fit], None] = lambda f: None) -> list[Fit]:
    """The deepest T (up to ``max_steps``) whose planned peak fits ``budget``, memory-free and plain.

    One :class:`Fit` per mode and engine setting (plain only for the RIM and the U-Net), each from
    exact shapes-only runs of the appendix-C protocol; written to ``json_path`` when given.
    """
    if options.budget is None:
        raise IreconError("run_budget needs a budget")
    _validate(options)
    if options.layers is not None and len(options.layers) > 1:
        raise IreconError("«budget» searches over T for one layer count: give at most one «layers»")
    layers = options.layers[0] if options.layers else None
    base = preset(options.model)
    if base.time_steps is None:
        raise IreconError(f"«budget» searches over time steps T, and «model» {options.model} has none")
    fits: list[Fit] = []
    for mode in options.modes:
        for memory_free in (True, False) if base.invertible else (False,):

            def peak_at(steps: int, mode: str = mode, memory_free: bool = memory_free) -> int:
                config = preset(options.model, steps=steps, layers=layers, coils=options.coils)
                return planned_peak(config, options.model, mode, memory_free, options)

            fit = timed_fit(options.model, mode, memory_free, options.budget, options.max_steps, META_METHOD, peak_at)
            fits.append(fit)
            report(fit)
    if options.json_path is not None:
        write_json_file(options.json_path, [asdict(f) for f in fits])
    return fits


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
    return Measurement(
        model=name,
        dims=config.dims,
        mode=mode,
        memory_free=memory_free,
        steps=config.time_steps,
        layers_total=config.layers_total,
        input_shape=[],
        batches=options.batches or 1,
        peak_bytes=None,
        device=options.device,
        method=_method(options),
        skipped=reason,
    )


def _validate(options: BenchOptions) -> None:
    if options.batches is not None and options.batches < 1:
        raise IreconError(f"«batches» must be at least 1, got {options.batches}")
    if not options.steps or min(options.steps) < 1:
        raise IreconError("«steps» needs one or more values >= 1")
    if min(options.size) < 8:
        raise IreconError(f"«size» {options.size[0]} {options.size[1]} is too small (at least 8 x 8)")
    if options.slices < 1:
        raise IreconError(f"«slices» must be at least 1, got {options.slices}")
    if options.world_size < 1:
        raise IreconError(f"«world_size» must be at least 1, got {options.world_size}")
    if options.threads is not None:
        if options.threads < 1:
            raise IreconError(f"«threads» must be at least 1, got {options.threads}")
        torch.set_num_threads(options.threads)
    if options.coils is not None and options.coils < 1:
        raise IreconError(f"«coils» must be at least 1, got {options.coils}")
    if options.timing_batches < 1:
        raise IreconError(f"«timing_batches» must be at least 1, got {options.timing_batches}")
    if options.layers is not None and min(options.layers) < 1:
        raise IreconError("«layers» needs values >= 1")
    if options.max_steps < 1:
        raise IreconError(f"«max_steps» must be at least 1, got {options.max_steps}")
    if options.meter is not None and options.meter not in METERS:
        raise IreconError(f"unknown meter '{options.meter}' (choose from {', '.join(METERS)})")
    if options.budget is not None:
        if options.budget < 1:
            raise IreconError(f"«budget» must be at least one byte, got {options.budget}")
        if options.device not in (None, "meta"):
            raise IreconError(f"«budget» plans on the meta device; use «device» meta, not {options.device}")
        options.device = "meta"
    options.device = "meta" if options.device == "meta" else str(resolve_device(options.device))
    if options.meter not in (None, "storages") and options.device == "meta":
        raise IreconError(f"«meter» {options.meter} is a CPU meter; on meta the planner counts storages")
    if options.meter is not None and options.device.startswith("cuda"):
        raise IreconError(f"«meter» {options.meter} is a CPU meter; on CUDA the caching allocator counts")
    if options.batches is None:
        options.batches = 1 if options.device == "meta" else 10
    for path in (options.json_path, options.plot_path):
        if path is not None:
            check_writable_file(path)
    if not preset(options.model).learned:
        raise IreconError("zero-filled has no memory to measure: choose an i-RIM, RIM or U-Net preset")
    for mode in options.modes:
        if mode not in ("train", "inference"):
            raise IreconError(f"unknown mode '{mode}'")

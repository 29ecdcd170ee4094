"""The appendix-C measurement protocol behind ``irecon bench-memory``: one model, mode and engine setting.

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
from dataclasses import replace

import torch
from torch import Tensor

from irecon.bench.options import BenchOptions
from irecon.bench.records import Measurement
from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.losses import mean_mse
from irecon.memory.adam import adam_shards
from irecon.memory.meters import (
    ALLOCATOR_METHOD,
    CUDA_METHOD,
    META_METHOD,
    STORAGE_METHOD,
    CpuAllocatorMeter,
    PeakMemoryMeter,
    StorageTracker,
    peak_memory_meter,
    tensor_bytes,
)
from irecon.models.configs import ModelConfig
from irecon.models.presets import preset


def prepare(options: BenchOptions) -> BenchOptions:
    """The options a run uses: validated, device resolved, batches filled in, model checked; sets torch's threads."""
    options.validate()
    meta = options.device == "meta" or options.budget is not None
    run = options.resolved("meta" if meta else str(resolve_device(options.device)))
    base = preset(options.model)
    if not base.learned:
        raise IreconError("zero-filled has no memory to measure: choose an i-RIM, RIM or U-Net preset")
    if base.time_steps is None and options.steps is not None and not options.with_rim:
        raise IreconError(f"«model» {options.model} is a {base.kind} without time steps: leave out «steps»")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    return run


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


def batch_seconds(batch: Callable[[], None], repeats: int, device: str) -> list[float]:
    """Wall time of each of ``repeats`` mini-batches, outside any meter (CUDA synchronised)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        batch()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def method_of(options: BenchOptions) -> str:
    """How the peak of a run with these (resolved) options is measured."""
    if options.device == "meta":
        return META_METHOD
    return {"cuda": CUDA_METHOD, "allocator": ALLOCATOR_METHOD, "storages": STORAGE_METHOD}[options.meter_name]


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
    """Run the appendix-C protocol for one model, mode and engine setting (shapes only on meta).

    ``options`` come resolved (:func:`prepare`): a concrete device and batch count.
    """
    device = str(options.device)
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

    record = Measurement.of(
        name,
        config,
        mode,
        memory_free,
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
    chosen = options.meter_name
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
        record.step_seconds_all = batch_seconds(batch, options.timing_batches, device)
        record.step_seconds = statistics.median(record.step_seconds_all)
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

"""The appendix-C protocol: resets, modes, the meta planner against the CPU tracker, timing."""

import statistics

import pytest
import torch

import irecon.bench.protocol as protocol
from irecon.bench.options import BenchOptions
from irecon.bench.protocol import measure, measure_peaks, prepare
from irecon.bench.sweep import run_bench
from irecon.memory.meters import META_METHOD, CpuAllocatorMeter, StorageTracker
from irecon.models.presets import preset

TINY = dict(model="tiny-2d", size=(16, 16), batches=2, timing_batches=1)
SAME = (
    "peak_bytes",
    "activation_bytes",
    "param_bytes",
    "grad_bytes",
    "optimizer_bytes",
    "input_bytes",
    "input_shape",
    "layers_total",
)


def test_protocol_resets_before_each_batch_and_reports_every_peak() -> None:
    sizes = iter([400, 100, 300])
    kept = torch.empty(50)

    def batch() -> None:
        scratch = torch.empty(next(sizes))
        del scratch

    with StorageTracker(device="cpu") as tracker, CpuAllocatorMeter() as allocator:
        for meter in (tracker, allocator):
            meter.track(kept)
        results = measure_peaks([tracker, allocator], batch, 3)
    for peaks, before in results:  # both meters watch the same mini-batches
        assert before == 200
        assert peaks == [200 + 1600, 200 + 400, 200 + 1200]  # a missing reset would give 1800 three times


def test_inference_runs_in_eval_mode_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, bool]] = []
    build = protocol._build

    def recording_build(config, memory_free, device):
        model = build(config, memory_free, device)
        model.register_forward_pre_hook(lambda m, args: seen.append((m.training, torch.is_grad_enabled())))
        return model

    monkeypatch.setattr(protocol, "_build", recording_build)
    run_bench(BenchOptions(steps=(1,), modes=("inference",), device="cpu", **TINY))
    assert seen and all(state == (False, False) for state in seen)
    seen.clear()
    run_bench(BenchOptions(steps=(1,), modes=("train",), device="cpu", **TINY))
    assert seen and all(state == (True, True) for state in seen)


@pytest.mark.parametrize(
    ("model", "size", "slices"),
    [
        ("tiny-2d", (16, 16), 1),
        ("tiny-2d", (17, 15), 1),
        ("tiny-3d", (16, 16), 3),
        ("tiny-3d", (15, 16), 2),
    ],
)
@pytest.mark.parametrize("mode", ["train", "inference"])
def test_meta_planner_equals_the_cpu_tracker_to_the_byte(
    model: str, size: tuple[int, int], slices: int, mode: str, one_thread: None
) -> None:
    common = dict(
        model=model, size=size, slices=slices, steps=(2,), modes=(mode,), compare_plain=True, timing_batches=1
    )
    cpu = run_bench(BenchOptions(device="cpu", meter="storages", batches=2, **common))
    meta = run_bench(BenchOptions(device="meta", **common))
    assert [(r.steps, r.memory_free) for r in cpu] == [(r.steps, r.memory_free) for r in meta]
    assert {r.memory_free for r in meta} == {True, False}
    for c, m in zip(cpu, meta):
        assert m.method == META_METHOD and m.device == "meta" and m.step_seconds is None
        assert m.allocator_peak_bytes is None and m.batches == 1
        for key in SAME:
            assert getattr(c, key) == getattr(m, key), (key, c.steps, c.memory_free)
        if not c.memory_free:
            assert c.planned_peak_bytes == c.storage_peak_bytes


def test_meta_planner_equals_the_cpu_tracker_for_the_baselines(one_thread: None) -> None:
    for model, steps in (("tiny-rim", (1,)), ("tiny-unet", None)):
        common = dict(model=model, size=(16, 16), steps=steps, timing_batches=1)
        cpu = run_bench(BenchOptions(device="cpu", meter="storages", batches=1, **common))
        meta = run_bench(BenchOptions(device="meta", **common))
        for c, m in zip(cpu, meta):
            assert [getattr(c, k) for k in SAME] == [getattr(m, k) for k in SAME], (model, c.mode)


def test_multicoil_planner_at_a_coil_count(one_thread: None) -> None:
    options = BenchOptions(device="meta", model="tiny-2d", coils=3, size=(16, 16), steps=(1,), modes=("train",))
    record = run_bench(options)[0]
    assert record.input_shape == [1, 3, 16, 16]
    assert (
        record.peak_bytes
        > run_bench(BenchOptions(device="meta", model="tiny-2d", size=(16, 16), steps=(1,), modes=("train",)))[
            0
        ].peak_bytes
    )


def test_each_timing_batch_is_recorded_and_the_median_reported(one_thread: None) -> None:
    options = prepare(BenchOptions(steps=(1,), modes=("inference",), device="cpu", **{**TINY, "timing_batches": 3}))
    record = measure(preset("tiny-2d", steps=1), "tiny-2d", "inference", True, options)
    assert len(record.step_seconds_all) == 3 and all(s > 0 for s in record.step_seconds_all)
    assert record.step_seconds == statistics.median(record.step_seconds_all)
    planned = measure(preset("tiny-2d", steps=1), "tiny-2d", "inference", True, prepare(BenchOptions(device="meta")))
    assert planned.step_seconds is None and planned.step_seconds_all == []


def test_prepare_sets_torch_threads_and_leaves_the_options_alone(one_thread: None) -> None:
    options = BenchOptions(model="tiny-2d", threads=2)
    run = prepare(options)
    assert torch.get_num_threads() == 2
    assert options.device is None and options.batches is None
    assert run.device == "cpu" and run.batches == 10
    assert prepare(BenchOptions(model="tiny-2d", device="meta")).batches == 1
    assert prepare(BenchOptions(model="tiny-2d", budget=2**30)).device == "meta"


def test_the_option_meters_are_the_library_s() -> None:
    from irecon.bench.options import METERS as OPTION_METERS
    from irecon.memory.meters import METERS

    assert OPTION_METERS == METERS

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import irecon.bench.sweep as bench
from irecon.bench.records import write_json
from irecon.bench.sweep import BenchOptions, available_bytes, measure_peaks, planned_peak, run_bench
from irecon.cli import main
from irecon.errors import IreconError
from irecon.memory.meters import (
    ALLOCATOR_METHOD,
    CUDA_METHOD,
    META_METHOD,
    STORAGE_METHOD,
    CpuAllocatorMeter,
    StorageTracker,
)
from irecon.models.presets import preset

TINY = dict(model="tiny-2d", size=(16, 16), batches=2, timing_batches=1)
KEYS = {
    "model",
    "dims",
    "mode",
    "memory_free",
    "steps",
    "layers_total",
    "input_shape",
    "batches",
    "peak_bytes",
    "peak_bytes_all",
    "param_bytes",
    "step_seconds",
    "device",
    "method",
    "storage_peak_bytes",
    "allocator_peak_bytes",
    "storage_method",
    "allocator_method",
    "planned_peak_bytes",
}
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
    build = bench._build

    def recording_build(config, memory_free, device):
        model = build(config, memory_free, device)
        model.register_forward_pre_hook(lambda m, args: seen.append((m.training, torch.is_grad_enabled())))
        return model

    monkeypatch.setattr(bench, "_build", recording_build)
    run_bench(BenchOptions(steps=(1,), modes=("inference",), device="cpu", **TINY))
    assert seen and all(state == (False, False) for state in seen)
    seen.clear()
    run_bench(BenchOptions(steps=(1,), modes=("train",), device="cpu", **TINY))
    assert seen and all(state == (True, True) for state in seen)


def test_sweep_memory_free_activations_constant_plain_grows(tmp_path: Path) -> None:
    records = run_bench(
        BenchOptions(steps=(1, 3), modes=("train",), compare_plain=True, device="cpu", meter="storages", **TINY)
    )
    free = [r for r in records if r.memory_free]
    plain = [r for r in records if not r.memory_free]
    assert free[0].activation_bytes == free[1].activation_bytes
    assert plain[1].activation_bytes > 2 * plain[0].activation_bytes
    assert free[1].param_bytes > 2 * free[0].param_bytes
    assert all(r.peak_bytes == min(r.peak_bytes_all) and len(r.peak_bytes_all) == 2 for r in records)
    path = tmp_path / "bench.json"
    write_json(path, records)
    loaded = json.loads(path.read_text())
    assert len(loaded) == len(records)
    for record in loaded:
        assert KEYS <= set(record)
        assert record["mode"] in ("train", "inference") and isinstance(record["memory_free"], bool)
        assert record["method"] == record["storage_method"] == STORAGE_METHOD
        assert record["allocator_method"] == ALLOCATOR_METHOD
        assert record["layers_total"] == record["steps"] * 4


def test_cpu_records_both_meters_and_the_allocator_sees_at_least_the_storages() -> None:
    records = run_bench(BenchOptions(steps=(1, 2), compare_plain=True, device="cpu", **TINY))
    assert len(records) == 8
    for r in records:
        assert r.method == r.allocator_method == ALLOCATOR_METHOD and r.storage_method == STORAGE_METHOD
        assert r.peak_bytes == r.allocator_peak_bytes
        assert r.allocator_peak_bytes >= r.storage_peak_bytes > r.param_bytes
    chosen = run_bench(BenchOptions(steps=(1,), modes=("train",), device="cpu", meter="storages", **TINY))[0]
    assert chosen.peak_bytes == chosen.storage_peak_bytes and chosen.method == STORAGE_METHOD


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
    for model in ("tiny-rim", "tiny-unet"):
        common = dict(model=model, size=(16, 16), steps=(1,), timing_batches=1)
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


def test_plain_that_would_not_fit_is_reported_not_run() -> None:
    limit = 5 * 2**20
    config = preset("tiny-2d", steps=6)
    options = BenchOptions(
        steps=(1, 2, 6), modes=("train",), compare_plain=True, memory_limit=limit, device="cpu", **TINY
    )
    expected = planned_peak(config, "tiny-2d", "train", False, BenchOptions(size=(16, 16), device="cpu"))
    assert expected > 0.8 * limit
    records = run_bench(options)
    deepest_plain = [r for r in records if not r.memory_free and r.steps == 6][0]
    assert deepest_plain.peak_bytes is None and deepest_plain.planned_peak_bytes == expected
    assert "would need" in deepest_plain.skipped and "planner" in deepest_plain.skipped
    assert [r for r in records if r.memory_free and r.steps == 6][0].peak_bytes is not None
    ran = [r for r in records if not r.memory_free and r.peak_bytes is not None]
    assert ran and all(r.planned_peak_bytes == r.storage_peak_bytes for r in ran)


def test_budget_gives_the_deepest_fitting_depth_measured_on_both_sides(tmp_path: Path) -> None:
    probe = BenchOptions(model="tiny-2d", size=(16, 16), device="meta")
    peak = {t: planned_peak(preset("tiny-2d", steps=t), "tiny-2d", "train", True, probe) for t in (3, 4)}
    budget = (peak[3] + peak[4]) // 2
    path = tmp_path / "fits.json"
    fits = bench.run_budget(
        BenchOptions(model="tiny-2d", size=(16, 16), modes=("train",), budget=budget, max_steps=20, json_path=path)
    )
    free, plain = fits
    assert free.memory_free and not plain.memory_free
    assert (free.steps, free.peak_bytes, free.next_peak_bytes) == (3, peak[3], peak[4])
    assert free.peaks[3] <= budget < free.peaks[4] and not free.limit_reached
    assert 0 < plain.steps < free.steps and plain.peaks[plain.steps] <= budget < plain.peaks[plain.steps + 1]
    assert [f["steps"] for f in json.loads(path.read_text())] == [3, plain.steps]
    tight = bench.run_budget(BenchOptions(model="tiny-2d", size=(16, 16), modes=("train",), budget=1000))
    assert [f.steps for f in tight] == [0, 0]
    roomy = bench.run_budget(
        BenchOptions(model="tiny-2d", size=(16, 16), modes=("inference",), budget=2**30, max_steps=3)
    )
    assert all(f.steps == 3 and f.limit_reached and f.next_peak_bytes is None for f in roomy)


def test_rim_reference_and_three_d() -> None:
    records = run_bench(
        BenchOptions(
            model="tiny-3d",
            steps=(1,),
            slices=3,
            size=(16, 16),
            batches=1,
            timing_batches=1,
            modes=("train",),
            with_rim=True,
            device="cpu",
        )
    )
    assert {r.model for r in records} == {"tiny-3d", "rim"}
    three_d = [r for r in records if r.model == "tiny-3d"][0]
    assert three_d.dims == 3 and three_d.input_shape == [1, 1, 3, 16, 16]


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(IreconError, match="--batches"):
        run_bench(BenchOptions(model="tiny-2d", batches=0))
    with pytest.raises(IreconError, match="zero-filled"):
        run_bench(BenchOptions(model="zero-filled"))
    with pytest.raises(IreconError, match="unknown model preset"):
        run_bench(BenchOptions(model="nope"))
    with pytest.raises(IreconError, match="CPU meter"):
        run_bench(BenchOptions(model="tiny-2d", device="meta", meter="allocator"))
    with pytest.raises(IreconError, match="--budget plans on the meta device"):
        run_bench(BenchOptions(model="tiny-2d", device="cpu", budget=2**30))
    with pytest.raises(IreconError, match="--coils"):
        run_bench(BenchOptions(model="tiny-2d", coils=0))


def test_command_writes_json_and_plot(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "bench-memory",
            "--model",
            "tiny-2d",
            "--steps",
            "1",
            "--steps",
            "2",
            "--size",
            "16",
            "16",
            "--batches",
            "2",
            "--timing-batches",
            "1",
            "--device",
            "cpu",
            "--compare-plain",
            "--json",
            str(tmp_path / "b.json"),
            "--plot",
            str(tmp_path / "b.png"),
        ],
        terminal_width=160,
    )
    assert result.exit_code == 0, result.output
    assert f"peak: {ALLOCATOR_METHOD}" in result.output
    assert f"storages: {STORAGE_METHOD}" in result.output
    first = next(line for line in result.output.splitlines() if line.startswith("measured "))
    assert "storage tracker" in first and "allocator" in first
    assert "plain / memory-free training peak" in result.output
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "b.json").read_text())) == 8


def test_command_plans_on_meta_and_answers_a_budget(tmp_path: Path) -> None:
    planned = CliRunner().invoke(
        main,
        [
            "bench-memory",
            "--model",
            "tiny-3d",
            "--steps",
            "1",
            "--size",
            "16",
            "16",
            "--slices",
            "2",
            "--device",
            "meta",
            "--compare-plain",
        ],
    )
    assert planned.exit_code == 0, planned.output
    assert f"[{META_METHOD}]" in planned.output and "min over 1 mini-batch " in planned.output
    fitted = CliRunner().invoke(
        main, ["bench-memory", "--model", "tiny-2d", "--size", "16", "16", "--budget", "1.5MiB", "--max-steps", "8"]
    )
    assert fitted.exit_code == 0, fitted.output
    lines = [line for line in fitted.output.splitlines() if line.startswith("planned tiny-2d train")]
    assert len(lines) == 2 and all("deepest T=" in line and "(1,572,864 B)" in line for line in lines)
    assert "planner answered in" in fitted.output
    bad = CliRunner().invoke(main, ["bench-memory", "--model", "tiny-2d", "--budget", "24 parsecs"])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "24 parsecs" in bad.output


def test_cpu_command_keeps_stderr_free_of_profiler_chatter() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "irecon.cli",
            "bench-memory",
            "--model",
            "tiny-2d",
            "--steps",
            "1",
            "--size",
            "16",
            "16",
            "--batches",
            "2",
            "--timing-batches",
            "1",
            "--device",
            "cpu",
            "--mode",
            "train",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and ALLOCATOR_METHOD in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bench_counts_cached_memory_as_available_and_plans_plain_runs() -> None:
    device = "cuda"
    torch.cuda.empty_cache()
    before = available_bytes(device)
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    del block  # now cached by the allocator: reserved, not allocated
    assert torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device) >= 256 * 2**20
    assert abs(available_bytes(device) - before) < 64 * 2**20
    records = run_bench(BenchOptions(steps=(1,), modes=("train",), compare_plain=True, device=device, **TINY))
    assert all(r.method == CUDA_METHOD and r.peak_bytes for r in records)
    plain = [r for r in records if not r.memory_free][0]
    assert plain.planned_peak_bytes and plain.storage_peak_bytes is None and plain.allocator_peak_bytes is None

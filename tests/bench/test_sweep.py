"""The sweep: every depth, mode and engine setting; JSON, plot, skipped plain runs and the command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from irecon.bench.options import BenchOptions
from irecon.bench.protocol import planned_peak
from irecon.bench.records import format_seconds, write_json
from irecon.bench.sweep import available_bytes, run_bench
from irecon.cli import main
from irecon.errors import IreconError
from irecon.memory.meters import (
    ALLOCATOR_METHOD,
    CUDA_METHOD,
    META_METHOD,
    STORAGE_METHOD,
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
    "step_seconds_all",
    "device",
    "method",
    "storage_peak_bytes",
    "allocator_peak_bytes",
    "storage_method",
    "allocator_method",
    "planned_peak_bytes",
}


@pytest.mark.slow
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


@pytest.mark.slow
def test_cpu_records_both_meters_and_the_allocator_sees_at_least_the_storages() -> None:
    records = run_bench(BenchOptions(steps=(1, 2), compare_plain=True, device="cpu", **TINY))
    assert len(records) == 8
    for r in records:
        assert r.method == r.allocator_method == ALLOCATOR_METHOD and r.storage_method == STORAGE_METHOD
        assert r.peak_bytes == r.allocator_peak_bytes
        assert r.allocator_peak_bytes >= r.storage_peak_bytes > r.param_bytes
    chosen = run_bench(BenchOptions(steps=(1,), modes=("train",), device="cpu", meter="storages", **TINY))[0]
    assert chosen.peak_bytes == chosen.storage_peak_bytes and chosen.method == STORAGE_METHOD


@pytest.mark.slow
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
    with pytest.raises(IreconError, match="tiny-unet is a unet without time steps: leave out --steps"):
        run_bench(BenchOptions(model="tiny-unet", steps=(1, 2)))


@pytest.mark.slow
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
    assert f"storages column: {STORAGE_METHOD}" in result.output
    measured = [line for line in result.output.splitlines() if line.startswith("measured ")]
    assert len(measured) == 8 and all("(storages " in line and ", allocator " in line for line in measured)
    assert result.output.count(ALLOCATOR_METHOD) == 1  # the meter is named once, not on every line
    assert "s/batch: median (min-max) of 1 timed mini-batch, unmetered" in result.output
    assert "plain / memory-free training peak" in result.output
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "b.json").read_text())) == 8


def test_command_plans_on_meta() -> None:
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
    assert planned.output.count(META_METHOD) == 1 and "min over 1 mini-batch " in planned.output


def test_timings_print_two_figures_with_their_spread() -> None:
    assert format_seconds([0.01234, 0.0111, 0.0156]) == "0.012 (0.011-0.016)"
    assert format_seconds([0.9996]) == "1.0"
    assert format_seconds([123.4, 99.1]) == "110 (99-120)"
    assert format_seconds([]) == "-"


@pytest.mark.slow
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

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import irecon.bench as bench
from irecon.bench import BenchOptions, measure_peaks, run_bench, write_json
from irecon.cli import main
from irecon.errors import IreconError
from irecon.memory import StorageTracker

TINY = dict(model="tiny-2d", size=(16, 16), batches=2, timing_batches=1)
KEYS = {"model", "dims", "mode", "memory_free", "steps", "layers_total", "input_shape", "batches",
        "peak_bytes", "peak_bytes_all", "param_bytes", "step_seconds", "device", "method"}


def test_protocol_resets_before_each_batch_and_reports_every_peak() -> None:
    sizes = iter([400, 100, 300])
    kept = torch.empty(50)

    def batch() -> None:
        scratch = torch.empty(next(sizes))
        del scratch

    with StorageTracker(device="cpu") as tracker:
        tracker.track(kept)
        peaks, before = measure_peaks(tracker, batch, 3)
    assert before == 200
    assert peaks == [200 + 1600, 200 + 400, 200 + 1200]  # a missing reset would give 1800 three times
    assert min(peaks) == 600


def test_inference_runs_in_eval_mode_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, bool]] = []
    build = bench.build_model

    def recording_build(config, memory_free=True):
        model = build(config, memory_free)
        model.register_forward_pre_hook(lambda m, args: seen.append((m.training, torch.is_grad_enabled())))
        return model

    monkeypatch.setattr(bench, "build_model", recording_build)
    run_bench(BenchOptions(steps=(1,), modes=("inference",), **TINY))
    assert seen and all(state == (False, False) for state in seen)
    seen.clear()
    run_bench(BenchOptions(steps=(1,), modes=("train",), **TINY))
    assert seen and all(state == (True, True) for state in seen)


def test_sweep_memory_free_activations_constant_plain_grows(tmp_path: Path) -> None:
    records = run_bench(BenchOptions(steps=(1, 3), modes=("train",), compare_plain=True, **TINY))
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
        assert record["method"] == "cpu storage tracker, exact tensor bytes"
        assert record["layers_total"] == record["steps"] * 4


def test_plain_that_would_not_fit_is_reported_not_run() -> None:
    # plain needs ~1.0 MB at T=1 and ~1.8 MB at T=2, so ~5 MB is extrapolated for T=6 (> 0.8 x 5 MiB)
    records = run_bench(BenchOptions(steps=(1, 2, 6), modes=("train",), compare_plain=True,
                                     memory_limit=5 * 2**20, **TINY))
    deepest_plain = [r for r in records if not r.memory_free and r.steps == 6]
    assert deepest_plain[0].peak_bytes is None
    assert "would need" in deepest_plain[0].skipped
    assert [r for r in records if r.memory_free and r.steps == 6][0].peak_bytes is not None


def test_rim_reference_and_three_d() -> None:
    records = run_bench(BenchOptions(model="tiny-3d", steps=(1,), slices=3, size=(16, 16), batches=1,
                                     timing_batches=1, modes=("train",), with_rim=True))
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


def test_command_writes_json_and_plot(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "bench-memory", "--model", "tiny-2d", "--steps", "1", "--steps", "2", "--size", "16", "16",
        "--batches", "2", "--timing-batches", "1", "--device", "cpu", "--compare-plain",
        "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png"),
    ], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "cpu storage tracker, exact tensor bytes" in result.output
    assert "plain / memory-free training peak" in result.output
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "b.json").read_text())) == 8

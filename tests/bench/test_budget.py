"""The --budget search: the deepest T that fits, measured on both sides, with its progress."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import irecon.bench.budget as bench
from irecon.bench.budget import Depth
from irecon.bench.options import BenchOptions
from irecon.bench.protocol import planned_peak
from irecon.cli import main
from irecon.models.presets import preset


@pytest.mark.slow
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


@pytest.mark.slow
def test_every_depth_tried_is_reported_as_it_is_measured() -> None:
    seen: list[Depth] = []
    budget = 2 * 2**20
    fits = bench.run_budget(
        BenchOptions(model="tiny-2d", size=(16, 16), modes=("inference",), budget=budget, max_steps=20),
        tried=seen.append,
    )
    for fit in fits:
        assert {d.steps: d.peak_bytes for d in seen if d.memory_free == fit.memory_free} == fit.peaks
    assert all(d.fits == (d.peak_bytes <= budget) and d.seconds >= 0 and d.mode == "inference" for d in seen)


@pytest.mark.slow
def test_command_answers_a_budget_with_its_progress() -> None:
    fitted = CliRunner().invoke(
        main, ["bench-memory", "--model", "tiny-2d", "--size", "16", "16", "--budget", "1.5MiB", "--max-steps", "8"]
    )
    assert fitted.exit_code == 0, fitted.output
    lines = [line for line in fitted.output.splitlines() if line.startswith("planned tiny-2d train")]
    assert len(lines) == 2 and all("deepest T=" in line and "(1,572,864 B)" in line for line in lines)
    tried = [line for line in fitted.output.splitlines() if line.startswith("  tried tiny-2d train ")]
    assert any("memory-free T=1: " in line for line in tried) and any("plain T=1: " in line for line in tried)
    assert any(line.endswith(" s)") and ", fits (" in line for line in tried)
    assert "planner answered in" in fitted.output
    bad = CliRunner().invoke(main, ["bench-memory", "--model", "tiny-2d", "--budget", "24 parsecs"])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "24 parsecs" in bad.output
    unet = CliRunner().invoke(main, ["bench-memory", "--model", "tiny-unet", "--budget", "1GiB"])
    assert unet.exit_code == 1 and "has none" in unet.output and unet.output.count("\n") == 1

"""``irecon train --fit-memory``: the planner picks T, the run measures its first steps against the budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from irecon.cli import main
from tests.helpers.training import load, write_checkpoint_dir

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

BUDGET = "960KiB"  # between tiny-2d's (2 layers per step) predicted peaks at T=1 and T=2 on this data


def train_cli(data: Path, out: Path, *extra: str):
    args = [str(data / "train"), "--val", str(data / "val"), "--model", "tiny-2d", "--layers", "2"]
    args += ["--out", str(out), "--device", "cpu", "--threads", "1", "--epochs", "1", *extra]
    return CliRunner().invoke(main, ["train", *args])


def test_fit_memory_picks_t_and_the_measured_steps_stay_within_it(data: Path, tmp_path: Path) -> None:
    result = train_cli(data, tmp_path / "run", "--fit-memory", BUDGET)
    assert result.exit_code == 0, result.output
    plan_line = next(line for line in result.output.splitlines() if line.startswith("memory plan:"))
    check_line = next(line for line in result.output.splitlines() if line.startswith("memory check:"))
    assert "fits 960.00 KiB (given)" in plan_line and "cpu allocator events - planner" in plan_line
    assert "within the budget 960.00 KiB" in check_line
    payload = load(tmp_path / "run" / "last.pt")
    fit = payload["memory_fit"]
    assert payload["model_config"]["steps"] == fit["value"] >= 1
    assert fit["predicted_bytes"] <= fit["budget_bytes"] < fit["next_bytes"]
    assert payload["options"]["fit_memory"] == BUDGET and payload["options"]["steps"] == fit["value"]
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["fit_value"] == fit["value"] and record["fit_predicted_peak_bytes"] == fit["predicted_bytes"]
    assert record["fit_measured_peak_bytes"] <= record["fit_budget_bytes"] == 960 * 1024


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (("--fit-memory", "lots"), "error: cannot read 'lots' as a memory size"),
        (("--fit-memory", "1KiB"), "error: even T=1 needs"),
        (("--fit-memory", "1GiB", "--steps", "2"), "error: --fit steps chooses --steps"),
        (("--fit-memory", "1GiB", "--fit", "slab"), "error: --fit slab needs a 3-D preset"),
    ],
)
def test_fit_memory_mistakes_are_one_line_and_write_nothing(data: Path, tmp_path: Path, extra, problem) -> None:
    result = train_cli(data, tmp_path / "run", *extra)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(problem), result.output
    assert not (tmp_path / "run").exists()


def test_an_earlier_run_is_refused_before_the_planner_runs(data: Path, tmp_path: Path) -> None:
    out = write_checkpoint_dir(tmp_path)
    result = train_cli(data, out, "--fit-memory", "1GiB")
    assert result.exit_code == 1
    assert "holds checkpoints of an earlier run" in result.output and "memory plan" not in result.output

"""benchmarks/compare.py end to end on tiny data over two seeds, and its one-line errors for bad arguments.

"Improved" means the run's last epoch beats its first on the mean training loss (1 - SSIM).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.compare import main

from irecon.data.synth import synthesize
from irecon.models.presets import preset
from tests.helpers.training import SIZES

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = ("tiny-2d", "tiny-rim", "tiny-unet")
STEPS = 6  # 2 epochs of 6 slices in batches of 2
BUDGET_S = 1.0
SEEDS = ("0", "1")
COLUMNS = (
    5 + 7 * 2
)  # model, parameters, seeds, steps, wall time; untrained SSIM, last and best NMSE/PSNR/SSIM per acceleration


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    synthesize(root / "train", split="train", volumes=2, seed=1, **SIZES)
    synthesize(root / "val", split="val", volumes=1, seed=2, **SIZES)
    synthesize(root / "select", split="val", volumes=1, seed=3, **SIZES)
    return root


def run(folders: Path, out: Path, *extra: str) -> int:
    args = [str(folders / "train"), str(folders / "val"), "--select", str(folders / "select"), "--out", str(out)]
    return main([*args, "--device", "cpu", *extra])


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in ``text`` as rows of cells (header and separator included)."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
        previous = line
    return tables


@pytest.mark.slow
def test_compare_trains_scores_and_writes_tables_json_and_plot(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run(folders, out, "--steps", str(STEPS), "--time-budget", f"{BUDGET_S}s", "--seeds", *SEEDS) == 0
    printed = capsys.readouterr().out
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert markdown_tables((out / "compare.md").read_text()) == markdown_tables(printed)
    tables = markdown_tables(printed)
    assert len(tables) == 2
    for table in tables:
        assert len(table) == 2 + len(MODELS) + 1
        assert all(len(row) == COLUMNS for row in table)
        assert table[0][:5] == ["model", "parameters", "seeds", "steps", "wall time"]
        assert table[0][-1] == "8x best SSIM"
        assert [row[0] for row in table[2:]] == [*MODELS, "zero-filled"]
        assert all(row[2] == str(len(SEEDS)) and " ± " in row[7] for row in table[2:-1])
    assert all(row[3] == str(STEPS) for row in tables[0][2:-1])

    report = json.loads((out / "compare.json").read_text())
    assert [t["name"] for t in report["tables"]] == ["steps", "time"]
    assert set(report["zero_filled"]) == {"4", "8"}
    steps, timed = report["tables"]
    assert [(r["model"], r["seed"]) for r in steps["runs"]] == [(m, int(s)) for m in MODELS for s in SEEDS]
    for entry in steps["runs"]:
        first, last = entry["history"][0], entry["history"][-1]
        assert (entry["steps"], len(entry["history"])) == (STEPS, 2)
        assert last["train_loss"] < first["train_loss"], entry["model"]
        assert set(entry["scores"]) == {"untrained", "last", "best"}
        assert all(set(by) == {"4", "8"} for by in entry["scores"].values())
    for entry in timed["runs"]:
        assert entry["wall_time_s"] >= BUDGET_S and entry["steps"] >= 1
        assert (out / "time" / entry["model"] / f"seed{entry['seed']}" / "last.pt").is_file()
    # The residual i-RIM starts at zero-filled; the seeds start apart.
    zero = report["zero_filled"]["4"]["ssim"]
    untrained = [r["scores"]["untrained"]["4"]["ssim"] for r in steps["runs"] if r["model"] == "tiny-2d"]
    assert all(abs(u - zero) < 0.01 for u in untrained) and untrained[0] != untrained[1]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--models", "nope"], "unknown model preset 'nope'"),
        (["--models", "zero-filled"], "zero-filled is always scored"),
        (["--time-budget", "5x"], "is not a duration"),
        (["--accelerations", "6"], "no default centre fraction for [6]x"),
        (["--accelerations", "4", "8", "--center-fractions", "0.08"], "one value per acceleration"),
        (["--seeds", "1", "1"], "--seeds must not repeat a value"),
        (["--select", "VAL"], "--select must not be the scored folder"),
        (["--tables", "memory"], "--tables memory needs --memory-budget"),
        (["--max-depth", "0"], "--max-depth must be at least 1"),
    ],
)
def test_bad_arguments_are_one_error_line(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    extra = [str(folders / "val") if e == "VAL" else e for e in extra]
    assert run(folders, tmp_path / "out", *extra) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0]
    assert not (tmp_path / "out").exists()


def test_missing_training_folder_fails_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [str(tmp_path / "none"), str(tmp_path / "none"), "--select", str(tmp_path / "other")]
    assert main([*missing, "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    assert "no such file or folder" in lines[-1]
    assert not (tmp_path / "out").exists()


def test_earlier_runs_are_kept_without_overwrite(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "out" / "steps" / "tiny-rim" / "seed0"
    earlier.mkdir(parents=True)
    (earlier / "last.pt").write_bytes(b"earlier run")
    assert run(folders, tmp_path / "out") == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        f"error: {tmp_path / 'out'}: holds runs of an earlier comparison; pass --overwrite to replace them"
    ]
    assert (earlier / "last.pt").read_bytes() == b"earlier run"
    assert not (tmp_path / "out" / "steps" / "tiny-2d").exists()


@pytest.mark.slow  # about a dozen shapes-only planner runs
def test_equal_memory_grows_the_memory_free_irim_far_deeper_than_the_rim(folders: Path) -> None:
    from compare_memory import size_models

    budget = 8 * 2**20
    sized = {s.model: s for s in size_models(["tiny-2d", "tiny-rim", "tiny-unet"], budget, folders / "train", 32)}
    irim, rim, unet = sized["tiny-2d"], sized["tiny-rim"], sized["tiny-unet"]
    assert irim.memory_free and not rim.memory_free and unet.steps is None
    assert rim.steps is not None and irim.steps is not None and irim.steps >= 5 * rim.steps >= 5
    assert max(irim.planned_peak_bytes, rim.planned_peak_bytes, unet.planned_peak_bytes) <= budget
    assert unet.unet_chans is not None and unet.unet_chans > preset("tiny-unet").unet_chans  # grown to the budget

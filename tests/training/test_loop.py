"""Training runs: files written, exact resume, signals, best checkpoint, DDP, RIM, bf16 and bad steps."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

import irecon.training.loop as loop
from irecon.data.masks import MaskSpec
from irecon.data.volumes import read_volume_info
from irecon.errors import IreconError
from irecon.inference import score_model
from irecon.losses import ImageLoss
from irecon.metrics import Scores, mean_scores
from irecon.models.baselines import ZeroFilled
from irecon.models.checkpoint import model_from_checkpoint
from irecon.models.presets import preset
from irecon.training.loop import Outcome, train
from irecon.training.plan import build_seeded
from tests.helpers.training import ROOT, assert_same_weights, load, make_options, subprocess_env, write_checkpoint_dir

CHECKPOINT_KEYS = {
    "model_config",
    "model",
    "preset",
    "optimizer",
    "scheduler",
    "epoch",
    "epoch_position",
    "global_step",
    "epoch_loss",
    "epoch_loss_ranks",
    "rng",
    "options",
    "best_ssim",
    "best_epoch",
    "history",
    "zero_filled",
    "train_files",
    "val_files",
    "world_size",
    "irecon_version",
    "torch_version",
    "wall_time_s",
    "time_budget_s",
    "virtual_coils",
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_epoch_writes_checkpoints_and_reports(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shown = io.StringIO()
    result = train(make_options(data, out), console=Console(file=shown, width=100))
    assert result.exit_code == 0 and result.stopped is Outcome.COMPLETED
    epoch_line = next(x for x in shown.getvalue().splitlines() if x.startswith("epoch 1/1"))
    assert "val NMSE" in epoch_line and "zero-filled SSIM" in epoch_line and epoch_line.endswith("[best]")
    assert re.search(r"slices/s \(loader [0-9.]+, model [0-9.]+ slices/s; waited \d+% on data\)", epoch_line)
    assert result.epochs_done == 1 and result.global_step == 3  # 6 slices in batches of 2
    assert {p.name for p in out.iterdir()} == {
        "last.pt",
        "best.pt",
        "metrics.jsonl",
        "training_curve.png",
        ".irecon-train.lock",
    }
    payload = load(out / "last.pt")
    assert set(payload) == CHECKPOINT_KEYS
    assert payload["epoch"] == 1 and payload["epoch_position"] == 0 and payload["best_epoch"] == 1
    assert payload["options"]["model"] == "tiny-2d" and payload["preset"] == "tiny-2d"
    assert payload["model_config"]["coils"] == 1 and payload["model_config"]["steps"] == 1
    model, config, _ = model_from_checkpoint(out / "best.pt")
    assert config == result.config
    assert_same_weights(model.state_dict(), result.model.state_dict())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = result.history[0]
    for key in (
        "train_loss",
        "val_nmse",
        "val_psnr",
        "val_ssim",
        "zero_filled_ssim",
        "lr",
        "peak_memory_bytes",
        "slices_per_s",
        "model_slices_per_s",
        "loader_slices_per_s",
        "loader_wait_fraction",
    ):
        assert record[key] is not None
    assert record["peak_memory_kind"] == "process_peak_rss"
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def whole_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """last.pt of an uninterrupted 2-epoch run (3 steps per epoch)."""
    out = tmp_path_factory.mktemp("whole") / "run"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    train(make_options(data, out, epochs=2, checkpoint_every=2))
    torch.set_num_threads(previous)
    return load(out / "last.pt")


def assert_same_run(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["global_step"] == b["global_step"] == 6
    assert_same_weights(a["model"], b["model"])
    assert a["scheduler"] == b["scheduler"]
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_weights(state_a, state_b)
    for key in ("train_loss", "val_ssim", "lr"):
        assert [r[key] for r in a["history"]] == [r[key] for r in b["history"]]


@pytest.mark.parametrize(("max_steps", "where"), [(4, (1, 1)), (3, (1, 0))])
def test_resume_after_max_steps_reproduces_the_uninterrupted_run_exactly(
    data: Path, tmp_path: Path, whole_run: dict[str, Any], max_steps: int, where: tuple[int, int]
) -> None:
    out = tmp_path / "split"
    first = train(make_options(data, out, epochs=2, checkpoint_every=2, max_steps=max_steps))
    assert first.stopped is Outcome.MAX_STEPS and first.exit_code == 0
    stopped = load(out / "last.pt")
    assert (stopped["epoch"], stopped["epoch_position"], stopped["global_step"]) == (*where, max_steps)
    assert len(stopped["history"]) == 1  # a stop at an epoch's last step still validates that epoch
    train(make_options(data, out, epochs=2, checkpoint_every=2, resume=True))
    assert_same_run(whole_run, load(out / "last.pt"))
    assert (out / "metrics.jsonl").read_text().count("\n") == 2

    with pytest.raises(IreconError, match="different model options: --steps 1 in the checkpoint vs 2 now"):
        train(make_options(data, out, epochs=3, steps=2, resume=True))
    with pytest.raises(IreconError, match="different training options: --lr"):
        train(make_options(data, out, epochs=3, lr=1e-2, resume=True))


def test_loader_workers_that_persist_across_epochs_give_the_same_run_and_resume_exactly(
    data: Path, tmp_path: Path, whole_run: dict[str, Any]
) -> None:
    out = tmp_path / "workers"
    train(make_options(data, out, epochs=2, checkpoint_every=2, max_steps=4, num_workers=2))
    train(make_options(data, out, epochs=2, checkpoint_every=2, resume=True, num_workers=1))
    assert_same_run(whole_run, load(out / "last.pt"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["num_workers"] for r in records] == [2, 1]
    for record in records:
        assert record["loader_slices_per_s"] > 0 and record["model_slices_per_s"] > 0
        assert 0 <= record["loader_wait_fraction"] <= 1


def test_resume_after_a_signal_at_the_end_of_an_epoch_is_exact(
    data: Path, tmp_path: Path, whole_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    step = loop.Trainer._step
    calls = []

    def step_then_signal(self: Any, batch: Any) -> tuple[float, int]:
        result = step(self, batch)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(loop.Trainer, "_step", step_then_signal)
    out = tmp_path / "run"
    stopped = train(make_options(data, out, epochs=2, checkpoint_every=2))
    assert (stopped.stopped, stopped.exit_code, stopped.history) == (Outcome.SIGTERM, 143, [])
    payload = load(out / "last.pt")
    assert (payload["epoch"], payload["epoch_position"], payload["global_step"]) == (0, 3, 3)
    monkeypatch.undo()
    train(make_options(data, out, epochs=2, checkpoint_every=2, resume=True))
    assert_same_run(whole_run, load(out / "last.pt"))


def test_lr_halves_every_lr_step_epochs(data: Path, tmp_path: Path) -> None:
    result = train(make_options(data, tmp_path / "run", epochs=3, batch_size=3, lr=0.01, lr_step=1))
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.005, 0.0025])


def test_best_checkpoint_is_the_epoch_with_the_highest_ssim(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The official code's "best" is always the last epoch; here epoch 2 must win.
    ssims = iter([0.5, 0.9, 0.7])
    real = loop.score_model

    def fake_scores(model: Any, *args: Any) -> list[Scores]:
        return real(model, *args) if isinstance(model, ZeroFilled) else [Scores(0.1, 20.0, next(ssims))]

    monkeypatch.setattr(loop, "score_model", fake_scores)
    out = tmp_path / "run"
    result = train(make_options(data, out, epochs=3, batch_size=3))
    assert (result.best_epoch, result.best_ssim) == (2, 0.9)
    best, last = load(out / "best.pt"), load(out / "last.pt")
    assert (best["epoch"], best["best_epoch"], best["best_ssim"]) == (2, 2, 0.9)
    assert (last["epoch"], last["best_epoch"]) == (3, 2)
    assert [r["best"] for r in result.history] == [True, True, False]
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


@pytest.fixture(scope="module")
def ddp_runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs of tests/helpers/train_ddp_worker.py: one 2-process gloo launch, after a 1-process run to resume."""
    root = tmp_path_factory.mktemp("ddp")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    train(make_options(data, root / "single", batch_size=1, seed=3, epochs=1))
    torch.set_num_threads(previous)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "tests" / "helpers" / "train_ddp_worker.py"),
        str(data / "train"),
        str(data / "val"),
        str(root),
    ]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(data: Path, ddp_runs: Path) -> None:
    rank0, rank1 = load(ddp_runs / "plain_rank0.pt"), load(ddp_runs / "plain_rank1.pt")
    assert_same_weights(rank0, rank1)
    payload = load(ddp_runs / "plain" / "last.pt")
    assert_same_weights(payload["model"], rank0)
    assert payload["world_size"] == 2 and payload["global_step"] == 6  # 6 slices over 2 ranks, batch 1, 2 epochs
    # Each rank validated one of the two volumes; the all-reduced mean is the mean over both.
    zero = preset("zero-filled", coils=1).build()
    infos = [read_volume_info(p) for p in sorted((data / "val").glob("*.h5"))]
    expected = mean_scores(score_model(zero, infos, MaskSpec("random", (0.08,), (4,)), torch.device("cpu")))
    assert payload["zero_filled"] == pytest.approx(expected.as_dict())


@pytest.mark.slow
def test_sharded_optimizer_trains_as_plain_adam_and_saves_adam_format(ddp_runs: Path) -> None:
    plain, sharded = load(ddp_runs / "plain" / "last.pt"), load(ddp_runs / "sharded" / "last.pt")
    assert_same_weights(load(ddp_runs / "sharded_rank0.pt"), load(ddp_runs / "sharded_rank1.pt"))
    assert_same_weights(sharded["model"], load(ddp_runs / "sharded_rank0.pt"))
    for key, weight in plain["model"].items():
        assert (sharded["model"][key] - weight).abs().max() <= 1e-6, key
    assert sharded["optimizer"]["param_groups"] == plain["optimizer"]["param_groups"]
    assert list(sharded["optimizer"]["state"]) == list(plain["optimizer"]["state"])
    for index, state in plain["optimizer"]["state"].items():
        assert state.keys() == sharded["optimizer"]["state"][index].keys()
        for name, value in state.items():
            assert value.dtype == sharded["optimizer"]["state"][index][name].dtype
            assert torch.allclose(value, sharded["optimizer"]["state"][index][name], rtol=0, atol=1e-6)
    assert sharded["scheduler"] == plain["scheduler"] and sharded["options"]["shard_optimizer"] is True


@pytest.mark.slow
def test_adam_shards_are_the_bytes_each_rank_really_holds(ddp_runs: Path) -> None:
    reports = [json.loads((ddp_runs / f"bytes_rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["actual"] == report["predicted"] > 0
        assert report["parameters"] == len(report["held"])
        assert report["grad_storages"] < report["grads"]  # gradients are views into DDP's buckets
    assert not set(reports[0]["held"]) & set(reports[1]["held"])
    plain = load(ddp_runs / "plain" / "last.pt")["optimizer"]["state"]
    assert sorted(reports[0]["held"] + reports[1]["held"]) == sorted(plain)
    assert reports[0]["actual"] + reports[1]["actual"] == sum(
        t.untyped_storage().nbytes() for state in plain.values() for t in state.values()
    )


@pytest.mark.slow
def test_sharded_resume_on_the_same_processes_is_exact(ddp_runs: Path) -> None:
    split, whole = load(ddp_runs / "split" / "last.pt"), load(ddp_runs / "sharded" / "last.pt")
    assert_same_run(whole, split)
    assert_same_weights(load(ddp_runs / "split_rank1.pt"), whole["model"])


@pytest.mark.slow
def test_sharded_checkpoints_resume_on_another_number_of_processes(data: Path, ddp_runs: Path) -> None:
    boundary = ddp_runs / "boundary"
    stopped = load(boundary / "last.pt")
    assert (stopped["epoch"], stopped["epoch_position"], stopped["global_step"], stopped["world_size"]) == (1, 0, 3, 2)
    result = train(make_options(data, boundary, batch_size=1, seed=3, epochs=2, shard_optimizer=True, resume=True))
    assert result.global_step == 3 + 6 and result.epochs_done == 2  # epoch 2 on one process: 6 steps
    resumed = load(boundary / "last.pt")
    assert resumed["world_size"] == 1 and resumed["optimizer"]["state"].keys() == stopped["optimizer"]["state"].keys()
    assert all(torch.isfinite(w).all() for w in resumed["model"].values())
    assert not all(torch.equal(resumed["model"][k], v) for k, v in stopped["model"].items())
    single = load(ddp_runs / "single" / "last.pt")  # 1 process for epoch 1, then 2 sharded for epoch 2
    assert (single["epoch"], single["global_step"], single["world_size"]) == (2, 6 + 3, 2)
    assert all(torch.isfinite(w).all() for w in single["model"].values())


def test_shard_optimizer_on_one_process_is_plain_adam(data: Path, tmp_path: Path) -> None:
    shown = io.StringIO()
    train(
        make_options(data, tmp_path / "run", max_steps=2, shard_optimizer=True), console=Console(file=shown, width=300)
    )
    assert "(--shard-optimizer needs several processes)" in shown.getvalue()
    plain = train(make_options(data, tmp_path / "plain", max_steps=2))
    sharded = load(tmp_path / "run" / "last.pt")
    assert_same_weights(sharded["model"], plain.model.state_dict())
    assert sharded["optimizer"]["param_groups"] == load(tmp_path / "plain" / "last.pt")["optimizer"]["param_groups"]


def test_overwrite_starts_afresh(data: Path, tmp_path: Path) -> None:
    out = write_checkpoint_dir(tmp_path)
    result = train(make_options(data, out, overwrite=True, max_steps=1))
    assert result.global_step == 1
    assert load(out / "last.pt")["global_step"] == 1
    assert not (out / "best.pt").exists()


def test_rim_loss_is_the_mean_over_its_steps(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    losses: list[float] = []
    forward = ImageLoss.forward

    def spy(self: Any, estimate: torch.Tensor, target: torch.Tensor, max_value: torch.Tensor) -> torch.Tensor:
        value = forward(self, estimate, target, max_value)
        losses.append(float(value.detach()))
        return value

    monkeypatch.setattr(ImageLoss, "forward", spy)
    out = tmp_path / "run"
    result = train(make_options(data, out, model="rim", steps=3, layers=None, max_steps=1))
    assert result.global_step == 1 and len(losses) == 3
    total, count = load(out / "last.pt")["epoch_loss"]
    assert total / count == pytest.approx(sum(losses) / 3)


def test_bf16_autocast_runs_a_step_on_cpu(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(make_options(data, out, amp="bf16", max_steps=1, loss="l1"))
    assert result.global_step == 1
    weights = load(out / "last.pt")["model"]
    assert all(w.dtype != torch.bfloat16 and torch.isfinite(w).all() for w in weights.values())
    initial = build_seeded(result.config, make_options(data, out))
    assert not all(torch.equal(weights[k], v) for k, v in initial.state_dict().items())


def test_3d_preset_trains_on_slabs_and_validates_whole_volumes(data: Path, tmp_path: Path) -> None:
    result = train(make_options(data, tmp_path / "run", model="tiny-3d", slab=2))
    assert result.global_step == 1  # one 2-slice slab per 3-slice volume, batch 2
    assert result.config.dims == 3 and 0 < result.history[0]["val_ssim"] <= 1


def test_time_budget_stops_within_one_step_and_resumes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    step = loop.Trainer._step

    def ten_second_step(self: Any, batch: Any) -> tuple[float, int]:
        clock[0] += 10.0
        return step(self, batch)

    monkeypatch.setattr(loop, "now", lambda: clock[0])
    monkeypatch.setattr(loop.Trainer, "_step", ten_second_step)
    out = tmp_path / "run"
    first = train(make_options(data, out, epochs=3, time_budget_s=15.0))
    assert first.stopped is Outcome.TIME_BUDGET and first.exit_code == 0
    assert first.global_step == 2  # 20 s >= 15 s after the second step: stopped within one step
    payload = load(out / "last.pt")
    assert payload["global_step"] == 2 and payload["time_budget_s"] == 15.0 and payload["wall_time_s"] == 20.0
    assert first.resume_command.endswith("--resume")
    second = train(make_options(data, out, epochs=3, time_budget_s=15.0, resume=True))
    assert second.stopped is Outcome.TIME_BUDGET and second.global_step == 4
    assert second.total_wall_time_s == 40.0  # the total survives the resume
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["time_budget_s"]) for r in records] == [(1, 15.0)]
    assert records[0]["wall_time_s"] == 30.0


def test_non_finite_steps_are_skipped_counted_and_never_checkpointed(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward = ImageLoss.forward
    calls = []

    def poisoned(self: Any, estimate: torch.Tensor, target: torch.Tensor, max_value: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        value = forward(self, estimate, target, max_value)
        return value * float("nan") if len(calls) == 2 else value

    monkeypatch.setattr(ImageLoss, "forward", poisoned)
    out = tmp_path / "run"
    result = train(make_options(data, out, checkpoint_every=1))
    assert result.history[0]["skipped_steps"] == 1 and result.global_step == 3
    weights = load(out / "last.pt")["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert json.loads((out / "metrics.jsonl").read_text())["skipped_steps"] == 1


def test_too_many_non_finite_steps_in_a_row_stop_with_one_error(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward = ImageLoss.forward
    monkeypatch.setattr(ImageLoss, "forward", lambda self, *args: forward(self, *args) * float("inf"))
    out = tmp_path / "run"
    with pytest.raises(IreconError, match="2 steps in a row had a non-finite loss or gradient"):
        train(make_options(data, out, max_bad_steps=2))
    payload = load(out / "last.pt")
    assert payload["global_step"] == 1  # the first skipped batch is consumed; the second raised
    assert all(torch.isfinite(w).all() for w in payload["model"].values())


def test_plain_progress_lines_when_the_output_is_not_a_terminal(data: Path, tmp_path: Path) -> None:
    shown = io.StringIO()
    train(make_options(data, tmp_path / "run", log_every=1e-9), console=Console(file=shown, width=100))
    lines = shown.getvalue().splitlines()
    assert any(line.startswith("epoch 1/1 step 1/3  loss ") and "slices/s" in line for line in lines)
    assert "scoring zero-filled: 2/2 volumes" in shown.getvalue()
    assert any(line.startswith("validating epoch 1/1: 1/2 volumes") for line in lines)
    assert not any(line.strip() == "" for line in lines)

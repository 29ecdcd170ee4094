"""``irecon train`` through the real ``main`` group: signals, one-line errors, list options."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import irecon.training.loop as loop
from irecon.cli import main
from irecon.data.synth import synthesize
from irecon.errors import IreconError
from irecon.models.pretrained.registry import ENV_FOLDER, SINGLECOIL
from irecon.training.options import TrainOptions
from irecon.training.state import resume_command
from tests.helpers.pretrained import make_registry
from tests.helpers.tmpfs import fill, small_tmpfs
from tests.helpers.training import SIZES, cli_args, load, subprocess_env, write_checkpoint_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def train_cli(args: list[str]):
    return CliRunner().invoke(main, ["train", *args])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "group"),
    [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)],
)
def test_signal_writes_last_checkpoint_exits_and_resumes(
    data: Path, tmp_path: Path, signum: int, status: int, group: bool
) -> None:
    # group: the signal goes to the whole process group (a batch scheduler's stop), loader workers included.
    out = tmp_path / "run"
    args = cli_args(data, out, "--epochs", "200", "--checkpoint-every", "1", *(["--num-workers", "1"] if group else []))
    process = subprocess.Popen(
        [sys.executable, "-m", "irecon.cli", "train", *args],
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
    assert (
        f"{signal.Signals(signum).name}: finishing the step under way, then writing last.pt; {again} stops at once\n"
        in stderr
    )
    line = next(x for x in stdout.splitlines() if x.startswith("interrupted at epoch"))
    payload = load(out / "last.pt")
    assert f"step {payload['epoch_position']} (step {payload['global_step']} in all);" in line
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["irecon", "train"] and command[-1] == "--resume"

    resumed = train_cli([*command[2:], "--max-steps", str(payload["global_step"] + 1)])
    assert resumed.exit_code == 0, resumed.output
    after = load(out / "last.pt")
    assert after["global_step"] == payload["global_step"] + 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing train dir", "no such file or folder"),
        ("val without h5", "folder has no .h5 files"),
        ("zero-filled", "no parameters to train"),
        ("slab with 2-D", "needs a 3-D preset"),
        ("impossible mask", "center fraction 0.3 with acceleration 4"),
        ("mask pairs", "2 center fractions 0.08,0.04 but 1 acceleration 4"),
        ("existing run dir", "pass --resume to continue it or --overwrite"),
        ("resume without run", "no last.pt to resume from"),
        ("resume and overwrite", "contradict"),
        ("bad epochs", "--epochs must be at least 1"),
        ("zero steps", "--steps must be at least 1, got 0"),
        ("negative multiplicity", "--multiplicity must be at least 1, got -1"),
        ("layers for a rim", "--layers does not apply to --model tiny-rim (a rim model)"),
        ("steps for a unet", "--steps does not apply to --model tiny-unet (a unet model)"),
        ("output head for a unet", "--output-head does not apply to --model tiny-unet (a unet model)"),
        ("negative seed", "--seed must not be negative, got -1"),
        ("bad time budget", "Invalid value for '--time-budget'"),
        ("zero acceleration", "error: acceleration 0 is invalid: it must be at least 1"),
        ("val of another challenge", "validation file is multicoil but the training data ("),
        ("3-D slab too thick", "volume has 3 slices, fewer than the slab of 8; --slab 3 fits every volume"),
    ],
)
def test_bad_input_is_one_line_error_and_writes_nothing(data: Path, tmp_path: Path, case: str, message: str) -> None:
    out = tmp_path / "run"
    args = cli_args(data, out)
    if case == "missing train dir":
        args[0] = str(tmp_path / "nowhere")
    elif case == "val without h5":
        (tmp_path / "empty").mkdir()
        args[2] = str(tmp_path / "empty")
    elif case == "zero-filled":
        args[4] = "zero-filled"
    elif case == "slab with 2-D":
        args += ["--slab", "4"]
    elif case == "impossible mask":
        args += ["--center-fractions", "0.3", "--accelerations", "4"]
    elif case == "mask pairs":
        args += ["--accelerations", "4"]
    elif case == "existing run dir":
        out = write_checkpoint_dir(tmp_path)
        args[6] = str(out)
    elif case == "resume without run":
        args += ["--resume"]
    elif case == "resume and overwrite":
        args += ["--resume", "--overwrite"]
    elif case == "bad epochs":
        args += ["--epochs", "0"]
    elif case == "zero steps":
        args[args.index("--steps") + 1] = "0"
    elif case == "negative multiplicity":
        args += ["--multiplicity", "-1"]
    elif case == "layers for a rim":
        args[4] = "tiny-rim"
        args.remove("--steps"), args.remove("1")
    elif case == "steps for a unet":
        args[4] = "tiny-unet"
        args.remove("--layers"), args.remove("2")
    elif case == "output head for a unet":
        args[4] = "tiny-unet"
        args.remove("--layers"), args.remove("2"), args.remove("--steps"), args.remove("1")
        args += ["--output-head", "official"]
    elif case == "negative seed":
        args += ["--seed", "-1"]
    elif case == "bad time budget":
        args += ["--time-budget", "soon"]
    elif case == "zero acceleration":
        args += ["--accelerations", "0"]
    elif case == "val of another challenge":
        synthesize(tmp_path / "multi", challenge="multicoil", split="val", volumes=1, coils=2, **SIZES)
        args[2] = str(tmp_path / "multi")
        message += f"{data / 'train'}) is singlecoil; validate on files of the training data's challenge"
    elif case == "3-D slab too thick":
        args[4] = "tiny-3d"
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    result = train_cli(args)
    assert result.exit_code == (2 if case == "bad time budget" else 1), result.output
    if case != "bad time budget":  # click's own usage errors take a usage line too
        assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if before is None:
        assert not out.exists()
    else:
        assert sorted(p.name for p in out.iterdir()) == before
        assert (out / "last.pt").read_bytes() == b"earlier run"


def test_cli_takes_several_accelerations_and_resolution(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    seen: list[TrainOptions] = []

    def fake_train(options: TrainOptions, console: object = None, given: object = None) -> None:
        seen.append(options)
        raise IreconError("stop here")

    monkeypatch.setattr(loop, "train", fake_train)
    args = [
        *cli_args(data, data / "run"),
        "--accelerations",
        "4",
        "8",
        "--center-fractions",
        "0.08",
        "0.04",
        "--train-resolution",
        "32",
        "24",
        "--amp",
        "bf16",
        "--no-memory-free",
        "--shared-weights",
    ]
    result = train_cli(args)
    assert result.exit_code == 1 and "stop here" in result.output
    options = seen[0]
    assert options.accelerations == (4, 8) and options.center_fractions == (0.08, 0.04)
    assert options.train_resolution == (32, 24) and options.amp == "bf16"
    assert options.memory_free is False and options.shared_weights is True
    assert resume_command(options) == f"irecon train --out {options.out} --resume"


def test_out_under_a_regular_file_is_one_line_and_nothing_is_trained(data: Path, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    result = train_cli(cli_args(data, tmp_path / "file.txt" / "run"))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and "not a folder" in result.output


def test_a_full_disk_while_checkpointing_is_one_line(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import torch

    def full_disk(obj: object, path: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    result = train_cli(cli_args(data, out, "--max-steps", "1"))
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "no space left on device" in error[0] and "Traceback" not in result.output
    assert not list(out.glob("*.pt")) and not list(out.glob(".*.tmp"))


def test_resume_reuses_the_checkpoint_options_and_refuses_only_a_conflicting_one(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train_cli(cli_args(data, out, "--max-steps", "1", "--lr", "0.002", "--epochs", "2"))
    assert first.exit_code == 0, first.output
    assert f"continue with: irecon train --out {out} --resume" in first.output
    again = train_cli(["--out", str(out), "--resume", "--max-steps", "2"])
    assert again.exit_code == 0, again.output
    payload = load(out / "last.pt")
    assert payload["global_step"] == 2 and payload["options"]["lr"] == 0.002 and payload["options"]["epochs"] == 2
    conflict = train_cli(["--out", str(out), "--resume", "--lr", "0.1"])
    assert conflict.exit_code == 1 and conflict.output.count("\n") == 1
    assert "different training options: --lr 0.002 in the checkpoint vs 0.1 now" in conflict.output
    more = train_cli(["--out", str(out), "--resume", "--epochs", "3", "--max-steps", "3"])
    assert more.exit_code == 0, more.output
    assert load(out / "last.pt")["options"]["epochs"] == 3


def test_a_nan_slice_is_found_before_the_first_step_with_checks_message(data: Path, tmp_path: Path) -> None:
    import shutil

    import h5py

    train_dir = tmp_path / "train"
    shutil.copytree(data / "train", train_dir)
    bad = sorted(train_dir.glob("*.h5"))[1]
    with h5py.File(bad, "r+") as hf:
        hf["kspace"][2, 0, 0] = np.nan
    args = cli_args(data, tmp_path / "run")
    args[0] = str(train_dir)
    result = train_cli(args)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    checked = CliRunner().invoke(main, ["check", str(bad)])
    message = next(line for line in checked.output.splitlines() if line.startswith("error: "))
    assert result.output.strip() == message
    assert not (tmp_path / "run").exists()
    for workers in ("0", "1"):  # read in the training process, or in a DataLoader worker
        unscanned = train_cli(
            [*args, "--no-scan", "--checkpoint-every", "1000", "--num-workers", workers, "--overwrite"]
        )
        assert unscanned.exit_code == 1 and unscanned.output.strip().splitlines()[-1] == message, unscanned.output
        assert "Traceback" not in unscanned.output
        written = load(tmp_path / "run" / "last.pt")  # the folder did not exist before: written before the error
    assert all(torch.isfinite(w).all() for w in written["model"].values())


def test_threads_are_set_and_shown_in_the_start_line(data: Path, tmp_path: Path) -> None:
    result = train_cli(cli_args(data, tmp_path / "run", "--threads", "1", "--max-steps", "1"))
    assert result.exit_code == 0, result.output
    assert "1 thread, " in result.output and "loader worker" in result.output
    bad = train_cli(cli_args(data, tmp_path / "run2", "--threads", "0"))
    assert bad.exit_code == 1 and "--threads must be at least 1, got 0" in bad.output


@pytest.mark.slow
def test_a_run_folder_in_use_is_refused_naming_its_holder_and_freed_by_kill_9(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "irecon.cli",
            "train",
            *cli_args(data, out, "--epochs", "200", "--checkpoint-every", "1"),
        ],
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
        for extra in (["--resume"], ["--overwrite"]):
            second = train_cli([*cli_args(data, out, "--max-steps", "1"), *extra])
            assert second.exit_code == 1, second.output
            assert second.output.startswith(f"error: {out}: is in use by another irecon train (pid {process.pid} on ")
            assert second.output.endswith("UTC); wait for it to end or choose another --out\n")
            assert second.output.count("\n") == 1, second.output
    finally:
        process.kill()  # kill -9: the lock goes with the process
        process.communicate(timeout=60)
    step = load(out / "last.pt")["global_step"]
    resumed = train_cli(["--out", str(out), "--resume", "--max-steps", str(step + 1)])
    assert resumed.exit_code == 0, resumed.output
    assert load(out / "last.pt")["global_step"] == step + 1


def test_resume_with_other_validation_files_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_cli(cli_args(data, out, "--max-steps", "1")).exit_code == 0
    other = tmp_path / "other_val"
    synthesize(other, split="val", volumes=1, seed=9, **SIZES)
    before = (out / "last.pt").read_bytes()
    result = train_cli(["--out", str(out), "--resume", "--val", str(other)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    names = ", ".join(sorted(p.name for p in (data / "val").glob("*.h5")))
    now = next(other.glob("*.h5")).name
    assert result.output == (
        f"error: {out / 'last.pt'}: cannot resume with other validation files ({now} now, {names} in the "
        "checkpoint): its zero-filled scores and best.pt were chosen on those; resume with the run's --val, "
        "or start a new run in another --out\n"
    )
    assert (out / "last.pt").read_bytes() == before
    same = train_cli(["--out", str(out), "--resume", "--val", str(data / "val"), "--max-steps", "2"])
    assert same.exit_code == 0, same.output


def test_a_real_full_disk_while_checkpointing_is_one_line_and_keeps_last_checkpoint(data: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        out = disk / "run"
        first = train_cli(cli_args(data, out, "--max-steps", "1"))
        assert first.exit_code == 0, first.output
        before = (out / "last.pt").read_bytes()
        filler = fill(disk, len(before) // 2)
        result = train_cli(["--out", str(out), "--resume", "--max-steps", "2"])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert errors == [
            f"error: {out / 'last.pt'}: no space left on device; last.pt still holds step 1: free some space, "
            f"then resume with: irecon train --out {out} --resume"
        ], result.output
        assert (out / "last.pt").read_bytes() == before
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        filler.unlink()
        again = train_cli(["--out", str(out), "--resume", "--max-steps", "2"])
        assert again.exit_code == 0, again.output
        assert load(out / "last.pt")["global_step"] == 2


@pytest.mark.slow
def test_a_second_stop_signal_stops_at_once_with_one_line_saying_what_last_pt_holds(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = cli_args(data, out, "--epochs", "200", "--checkpoint-every", "1")
    process = subprocess.Popen(
        [sys.executable, "-m", "irecon.cli", "train", *args],
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    # Both signals wait while the process is stopped; on resume Python runs their handlers in
    # signal-number order, SIGINT (first: finish the step) then SIGTERM (second: stop at once). Two
    # SIGINTs would be one pending signal, and two sent apart race the end of the step.
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    heard, line = stderr.splitlines()[-2:]
    assert heard == "SIGINT: finishing the step under way, then writing last.pt; Ctrl-C again stops at once"
    match = re.fullmatch(
        r"interrupted again: stopped at once; (no checkpoint was written for step (\d+); )?last\.pt holds step (\d+); "
        rf"resume with: irecon train --out {re.escape(str(out))} --resume",
        line,
    )
    assert match, line
    assert load(out / "last.pt")["global_step"] == int(match.group(3))


def test_train_without_out_numbers_its_run_folders_and_resume_takes_the_latest(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--init CKPT: the first step starts from its weights (lr 1e-9 leaves them all but unchanged)."""
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "pretrained")))
    monkeypatch.chdir(tmp_path)
    init = str(tmp_path / "pretrained" / f"{SINGLECOIL}.pt")
    args = [str(data / "train"), "--val", str(data / "val"), "--device", "cpu", "--batch-size", "2", "--lr", "1e-9"]
    first = train_cli([*args, "--init", init, "--max-steps", "1"])
    assert first.exit_code == 0, first.output
    assert (
        first.output.startswith("starting from the weights of ")
        and "no --out: a new run folder runs/tiny-2d-1\n" in first.output
    )
    saved, start = load(tmp_path / "runs/tiny-2d-1/last.pt"), load(Path(init))
    assert saved["options"]["init"] == init and saved["global_step"] == 1
    assert saved["model"].keys() == start["model"].keys()
    for key, value in start["model"].items():
        torch.testing.assert_close(saved["model"][key], value, rtol=0, atol=1e-7)

    second = train_cli([*args, "--model", "tiny-2d", "--steps", "1", "--layers", "2", "--max-steps", "1"])
    assert second.exit_code == 0 and "no --out: a new run folder runs/tiny-2d-2\n" in second.output
    os.utime(tmp_path / "runs/tiny-2d-1/last.pt")  # the newest checkpoint decides, not the highest number
    resumed = train_cli(["--resume", "--max-steps", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the latest run in runs/ (the newest last.pt): runs/tiny-2d-1" in resumed.output
    assert load(tmp_path / "runs/tiny-2d-1/last.pt")["global_step"] == 2
    refused = train_cli(["--resume", "--init", "default"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and "--init" in refused.output

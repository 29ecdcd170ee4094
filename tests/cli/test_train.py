"""``irecon train`` through the real ``main`` group: signals, one-line errors, list options."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import irecon.training.loop as loop
from irecon.cli import main
from irecon.data.synth import synthesize
from irecon.errors import IreconError
from irecon.training.checkpoints import resume_command
from irecon.training.options import TrainOptions
from tests.train_helpers import SIZES, cli_args, load, subprocess_env, write_checkpoint_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def train_cli(args: list[str]):
    return CliRunner().invoke(main, ["train", *args])


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_writes_last_checkpoint_exits_and_resumes(data: Path, tmp_path: Path, signum: int, status: int) -> None:
    out = tmp_path / "run"
    args = cli_args(data, out, "--epochs", "200", "--checkpoint-every", "1")
    process = subprocess.Popen(
        [sys.executable, "-m", "irecon.cli", "train", *args], env=subprocess_env(), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    line = next(x for x in stdout.splitlines() if x.startswith("interrupted at epoch"))
    payload = load(out / "last.pt")
    assert f"step {payload['global_step']};" in line
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
        ("mask pairs", "2 center fractions 0.08,0.04 but 1 accelerations 4"),
        ("sizes differ", "needs --train-resolution H W"),
        ("existing run dir", "pass --resume to continue it or --overwrite"),
        ("resume without run", "no last.pt to resume from"),
        ("resume and overwrite", "contradict"),
        ("bad epochs", "--epochs must be at least 1"),
        ("zero steps", "--steps must be a whole number of at least 1, got 0"),
        ("negative multiplicity", "--multiplicity must be a whole number of at least 1, got -1"),
        ("layers for a rim", "--layers does not apply to --model tiny-rim (a rim model)"),
        ("steps for a unet", "--steps does not apply to --model tiny-unet (a unet model)"),
        ("negative seed", "--seed must not be negative, got -1"),
        ("bad time budget", "Invalid value for '--time-budget'"),
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
    elif case == "sizes differ":
        mixed = tmp_path / "mixed"
        synthesize(mixed, split="train", volumes=1, seed=5, **SIZES)
        synthesize(mixed, split="train", volumes=1, seed=6, slices=3, kspace_size=(40, 24), recon_size=(16, 16))
        args[0] = str(mixed)
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
    elif case == "negative seed":
        args += ["--seed", "-1"]
    elif case == "bad time budget":
        args += ["--time-budget", "soon"]
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

    def fake_train(options: TrainOptions, console: object = None) -> None:
        seen.append(options)
        raise IreconError("stop here")

    monkeypatch.setattr(loop, "train", fake_train)
    args = [*cli_args(data, data / "run"), "--accelerations", "4", "8", "--center-fractions", "0.08", "0.04",
            "--train-resolution", "32", "24", "--amp", "bf16", "--no-memory-free", "--shared-weights"]
    result = train_cli(args)
    assert result.exit_code == 1 and "stop here" in result.output
    options = seen[0]
    assert options.accelerations == (4, 8) and options.center_fractions == (0.08, 0.04)
    assert options.train_resolution == (32, 24) and options.amp == "bf16"
    assert options.memory_free is False and options.shared_weights is True
    command = resume_command(options)
    assert "--train-resolution 32 24 --device cpu --amp bf16 --no-memory-free" in command
    assert "--accelerations" not in command and command.endswith("--shared-weights --resume")




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

"""The ``main`` group: version, one-line errors, and defaults that agree with the options dataclasses."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from irecon import __version__
from irecon.bench.options import BenchOptions
from irecon.cli import main
from irecon.export import ExportOptions
from irecon.reconstruct.options import ReconstructOptions
from irecon.training.options import TrainOptions

OPTIONS = {
    "train": TrainOptions,
    "reconstruct": ReconstructOptions,
    "bench-memory": BenchOptions,
    "export": ExportOptions,
}


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.slow
def test_python_dash_m_runs_the_same_group() -> None:
    done = subprocess.run([sys.executable, "-m", "irecon.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and __version__ in done.stdout


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_option_default_is_the_dataclass_default(command: str) -> None:
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(OPTIONS[command])}
    checked = 0
    cli_command = main.get_command(click.Context(main), command)
    ctx = click.Context(cli_command)
    for param in cli_command.params:
        if not isinstance(param, click.Option) or param.name not in fields or param.is_flag:
            continue
        field = fields[param.name]
        expected = field.default if field.default is not dataclasses.MISSING else None
        default = param.get_default(ctx)
        if repr(default) == "Sentinel.UNSET":  # click's "no default": the option is None when left out
            default = None
        if expected is None and default in (None, ()):
            checked += 1
            continue
        default = tuple(default) if isinstance(default, (list, tuple)) else default
        expected = tuple(expected) if isinstance(expected, (list, tuple)) else expected
        assert default == expected, f"{command} --{param.name}: click {default!r} vs dataclass {expected!r}"
        checked += 1
    assert checked >= 3


def test_no_module_outside_cli_imports_click() -> None:
    from pathlib import Path

    import irecon

    root = Path(irecon.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "cli" not in path.relative_to(root).parts[:1] and "import click" in path.read_text()
    ]
    assert offenders == []


def test_the_command_list_shows_each_commands_own_first_help_line() -> None:
    from irecon.cli import COMMANDS

    ctx = click.Context(main)
    for name, (_, _, listed) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
        assert listed == command.get_short_help_str(limit=200), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["train", "--help"],
        ["reconstruct", "--help"],
        ["export", "--help"],
        ["synth", "--help"],
        ["check", "--help"],
        ["models", "--help"],
        ["bench-memory", "--help"],
    ],
)
def test_help_and_version_do_not_load_torch(args: list[str]) -> None:
    code = (
        f"import sys\nfrom irecon.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout


HOLD_FOR_WRITING = """
import sys, time, h5py
handle = h5py.File(sys.argv[1], "a")
print("open", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_file_another_process_writes_is_reported_locked_by_check_train_and_reconstruct(tmp_path) -> None:
    from tests.helpers.training import make_data

    data = make_data(tmp_path / "data")
    busy = sorted((data / "train").glob("*.h5"))[0]
    writer = subprocess.Popen([sys.executable, "-c", HOLD_FOR_WRITING, str(busy)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        expected = f"error: {busy}: file is locked by another process (being written?)"
        runs = {
            "check": ["check", str(busy)],
            "train": [
                "train",
                str(data / "train"),
                "--val",
                str(data / "val"),
                "--model",
                "tiny-2d",
                "--out",
                str(tmp_path / "run"),
                "--device",
                "cpu",
            ],
            "reconstruct": ["reconstruct", str(busy), "--model", "zero-filled", "--out", str(tmp_path / "recon")],
        }
        for command, args in runs.items():
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 1, (command, result.output)
            assert expected in result.output.splitlines(), (command, result.output)
            assert "corrupt" not in result.output, (command, result.output)
    finally:
        writer.kill()
        writer.wait()
    assert CliRunner().invoke(main, ["check", str(busy)]).exit_code == 0


def test_every_option_of_every_command_has_a_help_line() -> None:
    context = click.Context(main)
    missing = [
        f"{name} {param.opts[0]}"
        for name in main.list_commands(context)
        for param in main.get_command(context, name).params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert missing == []


def test_train_help_says_what_a_new_run_needs_and_lists_the_presets() -> None:
    result = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "Needed for a new run." in text and "tiny-2d" in text and "challenge-multicoil" in text


def test_a_new_run_is_told_everything_it_lacks_at_once(tmp_path) -> None:
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output == (
        "error: TRAIN_DIR, --val and --model are needed for a new run (or --resume an earlier one); TRAIN_DIR and "
        "--val are folders of fastMRI .h5 volumes: make synthetic ones with irecon synth data/train && "
        "irecon synth data/val --split val\n"
    )

from pathlib import Path

from click.testing import CliRunner

from irecon import __version__
from irecon.cli import main

TINY = ["--kspace-size", "32", "24", "--recon-size", "16", "16", "--slices", "2"]


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_version() -> None:
    result = _run("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_synth_then_check_as_a_new_user(tmp_path: Path) -> None:
    result = _run("synth", str(tmp_path / "train"), "--volumes", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert "2 singlecoil train volume(s)" in result.output
    result = _run("synth", str(tmp_path / "test"), "--split", "test", "--challenge", "multicoil",
                  "--coils", "3", "--volumes", "1", *TINY)
    assert result.exit_code == 0, result.output
    (tmp_path / "train" / "notes.txt").write_text("not data")
    result = _run("check", str(tmp_path / "train"), str(tmp_path / "test"))
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "notes.txt" in result.output
    assert "3 valid volume(s), 0 problem(s)" in result.output


def test_synth_refuses_to_overwrite(tmp_path: Path) -> None:
    assert _run("synth", str(tmp_path), "--volumes", "1", *TINY).exit_code == 0
    result = _run("synth", str(tmp_path), "--volumes", "1", *TINY)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert _run("synth", str(tmp_path), "--volumes", "1", "--overwrite", *TINY).exit_code == 0


def test_check_reports_bad_files_one_line_each_and_exits_1(tmp_path: Path) -> None:
    assert _run("synth", str(tmp_path), "--volumes", "1", *TINY).exit_code == 0
    (tmp_path / "broken.h5").write_text("not hdf5")
    result = _run("check", str(tmp_path))
    assert result.exit_code == 1
    assert "error: " in result.output and "broken.h5: not a readable HDF5 file" in result.output
    assert "Traceback" not in result.output
    assert "1 valid volume(s), 1 problem(s)" in result.output


def test_user_errors_never_show_a_traceback(tmp_path: Path) -> None:
    result = _run("check", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert "missing" in result.output and "Traceback" not in result.output
    result = _run("synth", str(tmp_path), "--kspace-size", "4", "4")
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert not any(tmp_path.iterdir())


def test_models_lists_every_preset_with_parameter_counts() -> None:
    result = CliRunner().invoke(main, ["models"], terminal_width=120)
    assert result.exit_code == 0
    for name in ("paper-2d", "paper-3d", "challenge-singlecoil", "rim", "unet", "zero-filled", "tiny-2d"):
        assert name in result.output
    assert "275,247,552" in result.output and "94,464" in result.output

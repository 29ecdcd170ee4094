"""``irecon synth``, ``check`` and ``models`` through the real ``main`` group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from irecon.cli import main
from irecon.models.pretrained.registry import ENV_FOLDER
from tests.helpers.pretrained import make_registry
from tests.helpers.volumes import write_tiny_volume

TINY = ["--kspace-size", "32", "24", "--recon-size", "16", "16", "--slices", "2"]


def _run(*args: str, width: int = 200):
    return CliRunner().invoke(main, list(args), terminal_width=width)


def test_synth_then_check_as_a_new_user(tmp_path: Path) -> None:
    result = _run("synth", str(tmp_path / "train"), "--volumes", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert "2 singlecoil train volumes" in result.output
    result = _run(
        "synth",
        str(tmp_path / "test"),
        "--split",
        "test",
        "--challenge",
        "multicoil",
        "--coils",
        "3",
        "--volumes",
        "1",
        *TINY,
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "train" / "notes.txt").write_text("not data")
    result = _run("check", str(tmp_path / "train"), str(tmp_path / "test"))
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "notes.txt" in result.output
    assert "3 valid volumes, 0 problems" in result.output


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
    assert "1 valid volume, 1 problem" in result.output


def test_check_table_lists_each_volume(tmp_path: Path) -> None:
    write_tiny_volume(tmp_path / "a.h5")
    write_tiny_volume(tmp_path / "b.h5", coils=3)
    write_tiny_volume(tmp_path / "c.h5", with_mask=True)
    result = _run("check", str(tmp_path))
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "challenge" in line)
    assert [word for word in header.replace("┃", " ").split() if word] == [
        "file",
        "challenge",
        "slices",
        "k-space",
        "coils",
        "target",
        "mask",
        "acquisition",
    ]
    assert "esc 8x8" in result.output and "rss 8x8" in result.output
    assert "R=2" in result.output and "16x12" in result.output and "CORPD_FBK" in result.output
    assert "3 valid volumes, 0 problems" in result.output


def test_user_errors_never_show_a_traceback(tmp_path: Path) -> None:
    result = _run("check", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert "missing" in result.output and "Traceback" not in result.output
    result = _run("synth", str(tmp_path), "--kspace-size", "4", "4")
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert not any(tmp_path.iterdir())


def test_synth_under_a_regular_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    result = _run("synth", str(tmp_path / "file.txt" / "data"), "--volumes", "1", *TINY)
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_models_lists_every_preset_with_parameter_counts() -> None:
    result = _run("models", width=120)
    assert result.exit_code == 0
    for name in ("paper-2d", "paper-3d", "challenge-singlecoil", "rim", "unet", "zero-filled", "tiny-2d"):
        assert name in result.output
    assert "275,247,552" in result.output and "94,464" in result.output


def test_models_lists_the_bundled_weights_or_says_how_to_make_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "empty", names=())))
    assert "no bundled weights: make pretrained\n" in _run("models", width=120).output
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "two")))
    result = _run("models", width=160)
    assert result.exit_code == 0 and "bundled weights" in result.output
    rows = [line for line in result.output.splitlines() if "irim-" in line]
    assert "irim-singlecoil" in rows[0] and "0.5000 (0.4000)" in rows[0] and "untrained test weights" in rows[0]
    assert "irim-multicoil" in rows[1] and "multi, 2 virtual" in rows[1]


def test_the_models_table_is_the_presets_counted() -> None:
    from irecon.cli.data import PRESET_ROWS
    from irecon.models.presets import PRESETS, count_parameters

    assert list(PRESET_ROWS) == list(PRESETS)
    for name, (config, _) in PRESETS.items():
        row = (config.kind, config.dims, config.time_steps, config.layers_per_step, count_parameters(config))
        assert PRESET_ROWS[name] == row, name


@pytest.mark.slow
def test_models_prints_without_loading_torch() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from irecon.cli import main; "
        "result = CliRunner().invoke(main, ['models']); "
        "assert result.exit_code == 0 and 'tiny-unet' in result.output, result.output; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_check_at_80_columns_keeps_whole_names_and_shows_folders_of_shared_names(tmp_path: Path) -> None:
    long_name = "file_brain_AXT2_200_2000019_long_name.h5"
    write_tiny_volume(tmp_path / "a" / long_name)
    write_tiny_volume(tmp_path / "b" / long_name, coils=3)
    write_tiny_volume(tmp_path / "a" / "other.h5")
    result = _run("check", str(tmp_path / "a"), str(tmp_path / "b"), width=80)
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "a" / long_name) in result.output and str(tmp_path / "b" / long_name) in result.output
    assert "other.h5" in result.output and "3 valid volumes, 0 problems" in result.output
    assert "1 singlecoil train volume in" in _run("synth", str(tmp_path / "one"), "--volumes", "1", *TINY).output


def test_the_same_mistake_gets_the_same_message_in_synth_train_and_reconstruct(tmp_path: Path) -> None:
    synth = _run("synth", str(tmp_path / "s"), "--seed", "-1", *TINY)
    assert synth.output.strip() == "error: --seed must not be negative, got -1"
    mask = _run("synth", str(tmp_path / "s"), "--center-fraction", "0.3", "--acceleration", "4", *TINY)
    recon = _run(
        "reconstruct",
        str(tmp_path),
        "--model",
        "zero-filled",
        "--out",
        str(tmp_path / "r"),
        "--center-fraction",
        "0.3",
        "--acceleration",
        "4",
    )
    assert mask.output.startswith("error: center fraction 0.3 with acceleration 4")
    assert recon.output.splitlines()[-1] == mask.output.strip()

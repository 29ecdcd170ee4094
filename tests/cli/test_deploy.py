"""``irecon export-model`` and ``irecon reconstruct --onnx`` through ``main``: output lines and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from irecon.cli import main
from irecon.data.synth import synthesize
from tests.deploy.test_export_model import write_checkpoint


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=200)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", "tiny-2d", {"steps": 1, "layers": 2})


def test_export_model_writes_the_file_and_says_what_it_checked(
    checkpoint: Path, tmp_path: Path, one_thread: None
) -> None:
    out = tmp_path / "tiny.ts"
    result = _run("export-model", checkpoint, "--format", "torchscript", "--out", out, "--size", 32, 24)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {out} (torchscript, {out.stat().st_size:,} bytes)")
    assert lines[1] == ("inputs: kspace (B, 1, H, W, 2) float32, mask (W,) float32; output: magnitude images (B, H, W)")
    assert "checked on an unseen (4, 1, 32, 24, 2) input" in lines[2]
    again = _run("export-model", checkpoint, "--format", "torchscript", "--out", out)
    assert again.exit_code == 1
    assert again.output.strip() == f"error: {out}: file exists; pass --overwrite to replace it"


def test_export_model_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    result = _run("export-model", missing, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {missing}: checkpoint does not exist"
    small = _run("export-model", missing, "--out", tmp_path / "m.onnx", "--size", 4, 4)
    assert small.output.strip() == "error: --size must be two sizes H W of at least 8, got (4, 4)"
    assert not (tmp_path / "m.onnx").exists()


def test_reconstruct_onnx_refuses_a_checkpoint_beside_it_and_a_file_that_is_not_onnx(
    checkpoint: Path, tmp_path: Path
) -> None:
    synthesize(tmp_path / "val", split="val", volumes=1, slices=2, kspace_size=(32, 24), recon_size=(16, 16))
    both = _run(
        "reconstruct",
        tmp_path / "val",
        "--onnx",
        tmp_path / "m.onnx",
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "r",
    )
    assert both.exit_code == 1
    assert "error: --onnx runs the exported model on its own; leave out --checkpoint and --model" in both.output
    pytest.importorskip("onnxruntime", reason="needs the onnx extra (irecon[onnx])")
    result = _run("reconstruct", tmp_path / "val", "--onnx", checkpoint, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert f"error: {checkpoint}: not a readable ONNX model" in result.output
    assert not (tmp_path / "r").exists()


def test_export_model_defaults_are_the_dataclass_defaults_and_help_loads_no_torch() -> None:
    import subprocess
    import sys

    import click

    from irecon.cli.options import default_of
    from irecon.deploy.options import ExportModelOptions

    command = main.get_command(click.Context(main), "export-model")
    defaults = {p.name: p.get_default(click.Context(command)) for p in command.params}
    assert defaults["format"] == default_of(ExportModelOptions, "format") == "onnx"
    assert defaults["size"] in (None, ())
    code = (
        "import sys\nfrom irecon.cli import main\ntry:\n    main(['export-model', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout

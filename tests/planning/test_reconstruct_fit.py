"""``irecon reconstruct --max-memory``: whole volumes when they fit, planner-sized overlapping slabs when not."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fastmri.evaluate import ssim

from irecon.cli import main
from irecon.data.synth import synthesize
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def volume_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One 12-slice volume and a seeded (untrained) tiny-3d checkpoint."""
    root = tmp_path_factory.mktemp("rec3d")
    synthesize(root / "val", split="val", volumes=1, slices=12, kspace_size=(48, 32), recon_size=(24, 24), seed=4)
    torch.manual_seed(0)
    config = preset("tiny-3d")
    model = config.build()
    save_checkpoint(
        root / "tiny3d.pt", {"model_config": config.to_dict(), "model": model.state_dict(), "preset": "tiny-3d"}
    )
    return root / "val", root / "tiny3d.pt"


def reconstruct(inputs: Path, checkpoint: Path, out: Path, *extra: str):
    args = ["reconstruct", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out), "--threads", "1"]
    return CliRunner().invoke(main, [*args, "--json", str(out) + ".json", *extra])


def images(out: Path) -> np.ndarray:
    with h5py.File(next(out.iterdir())) as handle:
        return handle["reconstruction"][()]


def test_a_volume_over_the_budget_runs_in_slabs_close_to_the_whole_result(volume_and_model, tmp_path: Path) -> None:
    inputs, checkpoint = volume_and_model
    whole = reconstruct(inputs, checkpoint, tmp_path / "whole")
    slabs = reconstruct(inputs, checkpoint, tmp_path / "slabs", "--max-memory", "20MB")
    roomy = reconstruct(inputs, checkpoint, tmp_path / "roomy", "--max-memory", "1GiB")
    for result in (whole, slabs, roomy):
        assert result.exit_code == 0, result.output
    assert "3 slabs of 6 slices (overlap 3, linear ramps); predicted peak" in slabs.output
    assert "whole volume; predicted peak" in roomy.output
    record = json.loads((tmp_path / "slabs.json").read_text())["volumes"][0]
    fit = record["memory_fit"]
    assert fit["what"] == "slab" and fit["value"] == 6 and fit["verified_bytes"] <= fit["budget_bytes"] == 20 * 10**6
    assert fit["next_bytes"] > fit["budget_bytes"]
    reference = images(tmp_path / "whole")
    np.testing.assert_array_equal(images(tmp_path / "roomy"), reference)
    assert ssim(reference, images(tmp_path / "slabs"), maxval=float(reference.max())) > 0.98


def test_a_bad_memory_size_is_one_line_before_anything_is_written(volume_and_model, tmp_path: Path) -> None:
    inputs, checkpoint = volume_and_model
    result = reconstruct(inputs, checkpoint, tmp_path / "out", "--max-memory", "plenty")
    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()[-1]
        == "error: cannot read 'plenty' as a memory size (e.g. 24GiB, 40GB, 512MiB, 1e9)"
    )
    assert not (tmp_path / "out").exists()

"""irecon.evaluate against fastmri.evaluate on files written here with h5py, not by irecon."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastmri import evaluate as fastmri_evaluate
from fastmri.data import transforms

from irecon.errors import IreconError
from irecon.evaluate.options import EvaluateOptions
from irecon.evaluate.run import evaluate

ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK", "CORPD_FBK")


def write_pair(root: Path, name: str, seed: int, acquisition: str, acceleration: int | None) -> None:
    """A target file (esc and rss, 20x16 with a wider k-space-like pad) and a noisy 24x20 prediction."""
    rng = np.random.default_rng(seed)
    target = rng.random((3, 20, 16)).astype(np.float32) + 0.5
    prediction = np.pad(target, ((0, 0), (2, 2), (2, 2))) + 0.1 * rng.standard_normal((3, 24, 20)).astype(np.float32)
    (root / "targets").mkdir(exist_ok=True)
    (root / "predictions").mkdir(exist_ok=True)
    with h5py.File(root / "targets" / name, "w") as hf:
        hf["reconstruction_esc"] = target
        hf["reconstruction_rss"] = target * 2
        hf.attrs["acquisition"] = acquisition
    with h5py.File(root / "predictions" / name, "w") as hf:
        hf["reconstruction"] = prediction.astype(np.float32)
        if acceleration is not None:
            hf.attrs["acceleration"] = acceleration


@pytest.fixture()
def folders(tmp_path: Path) -> Path:
    for index, acquisition in enumerate(ACQUISITIONS):
        write_pair(tmp_path, f"file{index}.h5", index, acquisition, 4)
    return tmp_path


@pytest.mark.parametrize("challenge,key", [("singlecoil", "reconstruction_esc"), ("multicoil", "reconstruction_rss")])
def test_scores_equal_fastmri_evaluate(folders: Path, challenge: str, key: str) -> None:
    result = evaluate(EvaluateOptions(folders / "predictions", folders / "targets", challenge=challenge))
    args = argparse.Namespace(
        target_path=folders / "targets", predictions_path=folders / "predictions", acquisition=None, acceleration=None
    )
    expected = fastmri_evaluate.evaluate(args, key)
    overall = result.groups[-1]
    assert (overall.acceleration, overall.acquisition, overall.volumes) == ("all", "all", 3)
    means, sds = expected.means(), expected.stddevs()
    # fastmri's running statistics accumulate its float32 per-volume values in float32.
    for ours, theirs in (("nmse", "NMSE"), ("psnr", "PSNR"), ("ssim", "SSIM")):
        assert getattr(overall.mean, ours) == pytest.approx(np.asarray(means[theirs]).item(), rel=1e-6, abs=0)
        assert getattr(overall.sd, ours) == pytest.approx(np.asarray(sds[theirs]).item(), rel=1e-4, abs=0)
    assert {v.target_key for v in result.volumes} == {key} and {v.crop for v in result.volumes} == {(16, 16)}
    for volume in result.volumes:  # each volume's figures are fastmri's own, bit for bit
        with h5py.File(folders / "targets" / volume.name) as t, h5py.File(folders / "predictions" / volume.name) as p:
            target = transforms.center_crop(t[key][()], (16, 16))
            prediction = transforms.center_crop(p["reconstruction"][()], (16, 16))
        assert volume.scores.nmse == fastmri_evaluate.nmse(target, prediction).item()
        assert volume.scores.psnr == float(fastmri_evaluate.psnr(target, prediction))
        assert volume.scores.ssim == fastmri_evaluate.ssim(target, prediction).item()


def test_groups_per_acceleration_and_acquisition_and_the_protocol(tmp_path: Path) -> None:
    for index, acquisition in enumerate(ACQUISITIONS):
        write_pair(tmp_path, f"file{index}.h5", index, acquisition, 4 if index < 2 else 8)
    write_pair(tmp_path, "extra.h5", 9, "CORPD_FBK", None)
    (tmp_path / "targets" / "extra.h5").unlink()
    json_path = tmp_path / "scores.json"
    result = evaluate(EvaluateOptions(tmp_path / "predictions", tmp_path / "targets", json=json_path))
    groups = {(g.acceleration, g.acquisition): g.volumes for g in result.groups}
    assert groups == {
        ("4x", "CORPDFS_FBK"): 1,
        ("4x", "CORPD_FBK"): 1,
        ("8x", "CORPD_FBK"): 1,
        ("4x", "all"): 2,
        ("8x", "all"): 1,
        ("all", "all"): 3,
    }
    assert result.ignored == ["extra.h5"]
    protocol = result.to_dict()["protocol"]
    first = protocol["files"][0]
    assert first["target_sha256"] == hashlib.sha256((tmp_path / "targets" / "file0.h5").read_bytes()).hexdigest()
    assert first["target_key"] == "reconstruction_esc" and first["mask"] == {"acceleration": 4}
    assert protocol["irecon_version"] and json_path.exists()


def test_missing_prediction_or_dataset_is_one_error_and_writes_nothing(folders: Path) -> None:
    json_path = folders / "scores.json"
    (folders / "predictions" / "file1.h5").unlink()
    with pytest.raises(IreconError, match="has no prediction of this name"):
        evaluate(EvaluateOptions(folders / "predictions", folders / "targets", json=json_path))
    with h5py.File(folders / "predictions" / "file1.h5", "w") as hf:
        hf["image"] = np.zeros((3, 20, 16), np.float32)
    with pytest.raises(IreconError, match="has no 'reconstruction' dataset"):
        evaluate(EvaluateOptions(folders / "predictions", folders / "targets", json=json_path))
    assert not json_path.exists()
    with pytest.raises(IreconError, match="unknown challenge"):
        evaluate(EvaluateOptions(folders / "predictions", folders / "targets", challenge="knee"))
    with pytest.raises(IreconError, match="is not a folder"):
        evaluate(EvaluateOptions(folders / "nowhere", folders / "targets"))


def test_evaluate_gives_reconstructs_own_scores(tmp_path: Path) -> None:
    from irecon.data.synth import synthesize
    from irecon.reconstruct.options import ReconstructOptions
    from irecon.reconstruct.run import reconstruct

    synthesize(tmp_path / "val", split="val", volumes=2, seed=2, kspace_size=(32, 24), recon_size=(16, 16), slices=3)
    report = reconstruct(ReconstructOptions(inputs=[tmp_path / "val"], out_dir=tmp_path / "recon", model="zero-filled"))
    result = evaluate(EvaluateOptions(tmp_path / "recon", tmp_path / "val"))
    assert result.groups[-1].mean == report.mean_metrics()
    assert {v.acceleration for v in result.volumes} == {"4x"}

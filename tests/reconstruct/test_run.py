"""irecon reconstruct: output format checked by fastmri.evaluate, masks, safety, previews, JSON, CLI."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import fastmri
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from fastmri.data.transforms import center_crop
from fastmri.evaluate import evaluate
from matplotlib.image import imread
from rich.console import Console

import irecon.reconstruct.run as recon_module
from irecon.cli import main
from irecon.data.datasets import load_volume
from irecon.data.masks import MaskSpec
from irecon.data.synth import synthesize
from irecon.errors import IreconError
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.models.pretrained.registry import ENV_FOLDER
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.report import ReconstructReport
from irecon.reconstruct.run import reconstruct
from tests.helpers.pretrained import make_registry

SIZES = {"kspace_size": (32, 24), "recon_size": (16, 16), "slices": 3, "volumes": 2}
RECON_SHAPE = (3, 16, 16)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _zero_filled_magnitude(kspace: np.ndarray) -> np.ndarray:
    """|ifft2c(kspace)| with fastmri's centred orthonormal inverse FFT."""
    return fastmri.complex_abs(fastmri.ifft2c(torch.view_as_real(torch.from_numpy(kspace)))).numpy()


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two single-coil volumes with targets; nothing else in the folder (fastmri.evaluate reads it)."""
    out = tmp_path_factory.mktemp("val")
    synthesize(out, split="val", **SIZES)
    return out


@pytest.fixture(scope="module")
def test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two test-style volumes: undersampled k-space with the file's own mask, no target."""
    out = tmp_path_factory.mktemp("test")
    synthesize(out, split="test", **SIZES)
    return out


@pytest.fixture(scope="module")
def multicoil_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multicoil")
    synthesize(out, split="val", challenge="multicoil", coils=2, **{**SIZES, "volumes": 1})
    return out


def make_checkpoint(path: Path, name: str, **extra: object) -> Path:
    """An untrained tiny i-RIM checkpoint: enough to test the plumbing."""
    torch.manual_seed(0)
    config = preset(name, steps=1)
    save_checkpoint(path, {"model_config": config.to_dict(), "model": config.build().state_dict(), **extra})
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {name: make_checkpoint(folder / f"{name}.pt", name) for name in ("tiny-2d", "tiny-3d")}


def run(inputs: list[Path], out: Path, **options: object) -> ReconstructReport:
    return reconstruct(ReconstructOptions(inputs=inputs, out_dir=out, device="cpu", **options))


def invoke(*args: object) -> Result:
    """Run ``irecon reconstruct`` through the real ``main`` group."""
    return CliRunner().invoke(main, ["reconstruct", *map(str, args)])


def read_output(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        assert set(hf.keys()) == {"reconstruction", "ismrmrd_header"}
        data = hf["reconstruction"][()]
    assert data.dtype == np.float32
    return data


def fastmri_scores(targets: list[Path], predictions: Path, tmp: Path) -> dict[str, float]:
    """Mean scores from ``fastmri.evaluate.evaluate`` over ``targets``, as its CLI would compute them."""
    folder = tmp / f"targets_{len(list(tmp.iterdir()))}"
    folder.mkdir()
    for target in targets:
        (folder / target.name).symlink_to(target.resolve())
    args = argparse.Namespace(
        target_path=folder,
        predictions_path=predictions,
        challenge="singlecoil",
        acquisition=None,
        acceleration=None,
    )
    return evaluate(args, recons_key="reconstruction_esc").means()


def assert_matches_fastmri(report: ReconstructReport, out: Path, tmp: Path) -> None:
    """irecon's per-volume and mean metrics equal fastmri.evaluate's on the written files."""
    for volume in report.volumes:
        theirs = fastmri_scores([volume.input], out, tmp)
        for key in ("nmse", "psnr", "ssim"):
            assert getattr(volume.metrics, key) == pytest.approx(theirs[key.upper()], abs=1e-6)
    theirs = fastmri_scores([v.input for v in report.volumes], out, tmp)
    mean = report.mean_metrics()
    for key in ("nmse", "psnr", "ssim"):
        assert getattr(mean, key) == pytest.approx(theirs[key.upper()], abs=1e-6)


def test_zero_filled_round_trip_is_scored_like_fastmri_evaluate(val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run([val_dir], out, model="zero-filled")
    assert report.exit_code == 0 and len(report.volumes) == 2
    for volume in report.volumes:
        assert volume.output == out / volume.input.name
        assert read_output(volume.output).shape == RECON_SHAPE
        assert volume.metrics == volume.zero_filled  # the model is zero-filling itself
        assert volume.mask_source == "drawn" and volume.slices == 3
    assert_matches_fastmri(report, out, tmp_path)


@pytest.mark.parametrize("name", ["tiny-2d", "tiny-3d"])
def test_checkpoint_round_trip_and_same_masks_as_zero_filled(
    name: str, val_dir: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    report = run([val_dir], tmp_path / "model", checkpoint=checkpoints[name])
    baseline = run([val_dir], tmp_path / "zf", model="zero-filled")
    assert report.exit_code == 0 and report.config.dims == (3 if name == "tiny-3d" else 2)
    for volume, zero_filled in zip(report.volumes, baseline.volumes):
        assert read_output(volume.output).shape == RECON_SHAPE
        assert volume.zero_filled == zero_filled.metrics  # the same file-name-seeded mask
        assert volume.sampled_lines == zero_filled.sampled_lines
    assert_matches_fastmri(report, tmp_path / "model", tmp_path)


def test_2d_batches_do_not_change_the_result(val_dir: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    one = run([val_dir], tmp_path / "one", checkpoint=checkpoints["tiny-2d"], batch_size=1)
    all_ = run([val_dir], tmp_path / "all", checkpoint=checkpoints["tiny-2d"], batch_size=8)
    for a, b in zip(one.volumes, all_.volumes):
        np.testing.assert_allclose(read_output(a.output), read_output(b.output), rtol=1e-5, atol=1e-7)


def test_masks_are_seeded_by_file_name(val_dir: Path, tmp_path: Path) -> None:
    first = run([val_dir], tmp_path / "a", model="zero-filled")
    second = run([val_dir], tmp_path / "b", model="zero-filled")
    spec = MaskSpec("random", (0.08,), (4,))
    for a, b in zip(first.volumes, second.volumes):
        np.testing.assert_array_equal(read_output(a.output), read_output(b.output))
        volume = load_volume(a.input, spec)
        with h5py.File(a.input, "r") as hf:
            kspace = hf["kspace"][()] * volume.mask.numpy().reshape(-1)
        expected = center_crop(_zero_filled_magnitude(kspace), RECON_SHAPE[1:])
        np.testing.assert_allclose(read_output(a.output), expected, rtol=1e-4, atol=1e-6)
    masks = [load_volume(v.input, spec).mask for v in first.volumes]
    assert not torch.equal(masks[0], masks[1])  # different names, different masks


def test_test_style_input_uses_the_files_mask(test_dir: Path, tmp_path: Path) -> None:
    # A different acceleration must not matter: the file's own mask wins.
    report = run([test_dir], tmp_path / "out", model="zero-filled", acceleration=8, center_fraction=0.04)
    assert report.exit_code == 0
    for volume in report.volumes:
        with h5py.File(volume.input, "r") as hf:
            kspace, mask = hf["kspace"][()], hf["mask"][()]
        assert volume.mask_source == "file" and volume.sampled_lines == int(mask.sum())
        assert volume.metrics is None and volume.zero_filled is None and not volume.has_target
        expected = center_crop(_zero_filled_magnitude(kspace), RECON_SHAPE[1:])
        np.testing.assert_allclose(read_output(volume.output), expected, rtol=1e-4, atol=1e-6)


def test_test_style_input_with_a_checkpoint(test_dir: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    report = run([test_dir], tmp_path / "out", checkpoint=checkpoints["tiny-3d"])
    assert report.exit_code == 0 and all(v.metrics is None for v in report.volumes)
    assert all(read_output(v.output).shape == RECON_SHAPE for v in report.volumes)
    table = invoke(test_dir, "--checkpoint", checkpoints["tiny-3d"], "--out", tmp_path / "cli")
    assert table.exit_code == 0 and "NMSE" not in table.output


def test_existing_outputs_are_refused_per_volume_unless_overwrite(val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = sorted(p.name for p in val_dir.glob("*.h5"))
    (out / names[0]).write_bytes(b"keep me")
    report = run([val_dir], out, model="zero-filled")
    assert report.exit_code == 1
    failed, written = report.volumes
    assert "--overwrite" in failed.error and names[0] in failed.error and failed.output is None
    assert (out / names[0]).read_bytes() == b"keep me"
    assert written.error is None and read_output(out / names[1]).shape == RECON_SHAPE

    report = run([val_dir], out, model="zero-filled", overwrite=True)
    assert report.exit_code == 0
    assert read_output(out / names[0]).shape == RECON_SHAPE
    assert sorted(p.name for p in out.iterdir()) == names


def test_output_may_not_replace_its_input(val_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    shutil.copytree(val_dir, folder)
    before = {p: p.read_bytes() for p in folder.iterdir()}
    report = run([folder], folder, model="zero-filled", overwrite=True)
    assert report.exit_code == 1 and all("replace this input" in v.error for v in report.volumes)
    assert {p: p.read_bytes() for p in folder.iterdir()} == before


def test_inputs_with_the_same_name_do_not_clobber_each_other(val_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    name = sorted(val_dir.glob("*.h5"))[0].name
    shutil.copy(val_dir / name, other / name)
    with pytest.raises(IreconError) as caught:
        run([val_dir, other / name], tmp_path / "out", model="zero-filled", overwrite=True)
    assert str(caught.value) == (
        f"{other / name}: another input has the same file name ({val_dir / name}); outputs are named after "
        "the input file, so reconstruct them into different --out folders"
    )
    assert not (tmp_path / "out").exists()  # refused before any work


def test_bad_files_fail_alone_with_one_line_and_no_output(val_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(val_dir, data)
    good = sorted(p.name for p in data.glob("*.h5"))
    (data / "bad.h5").write_text("not hdf5\n")
    raw = (data / good[0]).read_bytes()
    (data / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (data / "README.txt").write_text("skipped\n")
    out = tmp_path / "out"

    result = invoke(data, "--model", "zero-filled", "--out", out)

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {data / 'bad.h5'}: ")
    assert errors[1].startswith(f"error: {data / 'truncated.h5'}: ")
    assert "skipped" in result.stderr and "README.txt" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == good  # no output for bad files, no temp files
    assert "mean" in result.stdout and "failed" in result.stdout


def test_preview_and_json(val_dir: Path, test_dir: Path, tmp_path: Path) -> None:
    previews, report_file = tmp_path / "previews", tmp_path / "report.json"
    result = invoke(
        val_dir,
        test_dir,
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "out",
        "--preview",
        previews,
        "--json",
        report_file,
    )
    assert result.exit_code == 0, result.output

    pngs = sorted(previews.iterdir())
    assert [p.name for p in pngs] == sorted(f"{p.stem}.png" for p in [*val_dir.iterdir(), *test_dir.iterdir()])
    widths = {}
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(png)
        assert image.ndim == 3 and image.shape[-1] in (3, 4)
        widths[png.name] = image.shape[1]
    # Four panels with a target (zero-filled, reconstruction, target, |error|), two without.
    with_target = [w for name, w in widths.items() if "_val_" in name]
    without = [w for name, w in widths.items() if "_test_" in name]
    assert min(with_target) > 1.5 * max(without)

    data = json.loads(report_file.read_text())
    assert set(data) == {
        "irecon_version",
        "model",
        "device",
        "batch_size",
        "virtual_coils",
        "mask",
        "volumes",
        "mean",
        "failed",
    }
    assert set(data["model"]) == {"name", "kind", "dims", "checkpoint", "config"}
    assert data["mask"] == {"mask_type": "random", "acceleration": 4, "center_fraction": 0.08}
    assert data["failed"] == 0 and len(data["volumes"]) == 4
    keys = {
        "input",
        "output",
        "slices",
        "mask_source",
        "sampled_lines",
        "acceleration",
        "has_target",
        "seconds",
        "metrics",
        "zero_filled",
        "preview",
        "exports",
        "error",
        "warnings",
    }
    for record in data["volumes"]:
        assert set(record) == keys
        assert Path(record["preview"]).is_file() and record["error"] is None and record["warnings"] == []
        if record["has_target"]:
            assert set(record["metrics"]) == {"nmse", "psnr", "ssim"} and record["mask_source"] == "drawn"
        else:
            assert record["metrics"] is None and record["mask_source"] == "file"
    mean = data["mean"]
    assert set(mean) == {"scored_volumes", "metrics", "zero_filled", "seconds"} and mean["scored_volumes"] == 2
    scored = [r["metrics"]["psnr"] for r in data["volumes"] if r["metrics"]]
    assert mean["metrics"]["psnr"] == pytest.approx(np.mean(scored))


def test_json_is_not_overwritten_without_overwrite(val_dir: Path, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    report_file.write_text("{}")
    with pytest.raises(IreconError, match="--overwrite"):
        run([val_dir], tmp_path / "out", model="zero-filled", json_path=report_file)
    assert report_file.read_text() == "{}"


def test_model_and_checkpoint_rules(
    val_dir: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "empty", names=())))
    out = tmp_path / "out"
    result = invoke(val_dir, "--model", "tiny-2d", "--out", out)
    assert result.exit_code == 1 and "--checkpoint" in result.stderr and "Traceback" not in result.stderr
    result = invoke(val_dir, "--out", out)  # no bundled weights in an empty registry
    assert result.exit_code == 1 and "--checkpoint" in result.stderr and "make pretrained" in result.stderr
    result = invoke(val_dir, "--checkpoint", checkpoints["tiny-2d"], "--model", "paper-3d", "--out", out)
    assert result.exit_code == 1 and "does not match" in result.stderr
    assert not out.exists()  # nothing was written for a bad command

    recorded = make_checkpoint(tmp_path / "recorded.pt", "tiny-2d", preset="tiny-2d")
    with pytest.raises(IreconError, match="does not match"):
        run([val_dir], out, checkpoint=recorded, model="paper-2d")
    report = run([val_dir], out, checkpoint=recorded, model="tiny-2d")
    assert report.exit_code == 0 and report.model_name == "tiny-2d from recorded.pt"

    result = invoke(val_dir, "--checkpoint", tmp_path / "missing.pt", "--out", out, "--overwrite")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "missing.pt" in result.stderr


def test_cli_with_checkpoint_prints_the_table(val_dir: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    result = invoke(
        val_dir,
        "--checkpoint",
        checkpoints["tiny-2d"],
        "--model",
        "tiny-2d",
        "--out",
        tmp_path / "out",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    for word in ("NMSE", "PSNR", "SSIM", "zf PSNR", "time (s)", "mean (2 scored)"):
        assert word in result.stdout
    assert all(line.startswith("reconstructed ") for line in result.stderr.splitlines())


def test_a_coil_count_the_model_was_not_built_for_is_refused_once_before_anything_is_created(
    multicoil_dir: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "inputs"
    shutil.copytree(multicoil_dir, folder)
    (original,) = folder.iterdir()
    shutil.copy(original, folder / "second.h5")
    out = tmp_path / "a"
    result = invoke(folder, "--checkpoint", checkpoints["tiny-2d"], "--out", out, "--preview", tmp_path / "p")
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {checkpoints['tiny-2d']}: the model takes single-coil k-space")
    assert "2 of 2 inputs have another coil count" in line and f"{folder / 'second.h5'} (2 coils)" in line
    assert not out.exists() and not (tmp_path / "p").exists()
    report = run([multicoil_dir], tmp_path / "b", model="zero-filled")  # RSS of the coils
    assert report.exit_code == 0 and read_output(report.volumes[0].output).shape == (3, 16, 16)


def test_bad_options_fail_before_anything_is_written(val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(IreconError, match="center fraction"):
        run([val_dir], out, model="zero-filled", acceleration=8, center_fraction=0.2)
    with pytest.raises(IreconError, match="batch-size"):
        run([val_dir], out, model="zero-filled", batch_size=0)
    assert not out.exists()


def test_a_bad_mask_type_gets_the_mask_specs_own_message(val_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(IreconError) as expected:
        MaskSpec("bogus").validate()
    with pytest.raises(IreconError) as got:
        run([val_dir], tmp_path / "out", model="zero-filled", mask_type="bogus")
    assert str(got.value) == str(expected.value)


def test_cudnn_benchmark_is_off_during_the_run_and_restored(
    val_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    original = recon_module.reconstruct_volume

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(torch.backends.cudnn.benchmark)
        return original(*args, **kwargs)

    monkeypatch.setattr(recon_module, "reconstruct_volume", spy)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    run([val_dir], tmp_path / "out", model="zero-filled")
    assert seen and not any(seen)
    assert torch.backends.cudnn.benchmark is True


def test_progress_and_errors_on_a_terminal(val_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(val_dir, data)
    (data / "bad.h5").write_text("nope")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    report = reconstruct(ReconstructOptions([data], tmp_path / "out", model="zero-filled"), console=console)
    text = buffer.getvalue()
    assert report.exit_code == 1 and "error: " in text and "bad.h5" in text and "volumes" in text


def test_without_a_model_the_bundled_one_for_the_inputs_coils_runs(
    val_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "pretrained")))
    three_coils = tmp_path / "three"
    synthesize(three_coils, split="val", challenge="multicoil", coils=3, **{**SIZES, "volumes": 1})
    single = run([val_dir], tmp_path / "single")
    assert single.exit_code == 0 and single.model_name == "tiny-2d from bundled:irim-singlecoil"
    multi = run([three_coils], tmp_path / "multi")  # any coil count: the checkpoint's 2 virtual coils
    assert multi.exit_code == 0 and multi.model_name == "tiny-2d from bundled:irim-multicoil"
    assert multi.virtual_coils == 2 and str(multi.checkpoint) == "bundled:irim-multicoil"
    with pytest.raises(IreconError, match="mix single-coil .* and multi-coil") as err:
        run([next(val_dir.glob("*_001.h5")), three_coils], tmp_path / "mixed")
    assert "\n" not in str(err.value) and not (tmp_path / "mixed").exists()

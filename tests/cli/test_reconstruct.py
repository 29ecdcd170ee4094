"""``irecon reconstruct`` (formats, table, output failures, messages, progress) and ``irecon export``, through ``main``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner, _NamedTextIOWrapper

from irecon.cli import main
from irecon.data.synth import synthesize
from irecon.errors import IreconError
from irecon.export import images_from_nifti
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.models.pretrained.registry import ENV_FOLDER
from tests.helpers.pretrained import make_registry
from tests.helpers.tmpfs import fill, small_tmpfs


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("val")
    synthesize(out, split="val", volumes=1, slices=3, kspace_size=(32, 24), recon_size=(16, 12))
    return out


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=200)


def test_reconstruct_writes_h5_nifti_and_dicom_with_the_same_images(val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(
        "reconstruct",
        val_dir,
        "--model",
        "zero-filled",
        "--out",
        out,
        "--format",
        "h5",
        "--format",
        "nifti",
        "--format",
        "dicom",
    )
    assert result.exit_code == 0, result.output
    (h5_path,) = out.glob("*.h5")
    with h5py.File(h5_path) as hf:
        images = hf["reconstruction"][()]
        assert hf.attrs["model"] == "zero-filled" and "ismrmrd_header" in hf
    nifti = nib.load(out / f"{h5_path.stem}.nii.gz")
    np.testing.assert_array_equal(images_from_nifti(np.asarray(nifti.dataobj)), images)
    slices = sorted((out / f"{h5_path.stem}_dicom").glob("*.dcm"))
    assert len(slices) == images.shape[0]
    first = pydicom.dcmread(slices[0])
    step = float(first.RescaleSlope)
    pixels = first.pixel_array * step + float(first.RescaleIntercept)
    assert np.abs(pixels - images[int(first.InstanceNumber) - 1]).max() <= step


def test_nifti_only_writes_no_h5_and_export_converts_a_written_reconstruction(val_dir: Path, tmp_path: Path) -> None:
    result = _run("reconstruct", val_dir, "--model", "zero-filled", "--out", tmp_path / "a", "--format", "nifti")
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "a").glob("*.h5")) and list((tmp_path / "a").glob("*.nii.gz"))
    assert _run("reconstruct", val_dir, "--model", "zero-filled", "--out", tmp_path / "b").exit_code == 0
    (h5_path,) = (tmp_path / "b").glob("*.h5")
    result = _run("export", h5_path, "--format", "nifti", "--out", tmp_path / "exported")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exported" / f"{h5_path.stem}.nii.gz").is_file()
    again = _run("export", h5_path, "--format", "nifti", "--out", tmp_path / "exported")
    assert again.exit_code == 1 and "pass --overwrite" in again.output and "Traceback" not in again.output


def test_export_of_a_target_and_of_a_bad_file(val_dir: Path, tmp_path: Path) -> None:
    (source,) = val_dir.glob("*.h5")
    result = _run("export", source, "--dataset", "reconstruction_esc", "--format", "nifti", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (tmp_path / "bad.h5").write_text("not hdf5")
    result = _run("export", tmp_path / "bad.h5", "--format", "dicom", "--out", tmp_path / "x")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained single-coil tiny-2d checkpoint."""
    torch.manual_seed(0)
    config = preset("tiny-2d", steps=1)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny-2d.pt"
    save_checkpoint(path, {"model_config": config.to_dict(), "model": config.build().state_dict()})
    return path


@pytest.fixture(scope="module")
def two_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_val")
    synthesize(out, split="val", volumes=2, slices=3, kspace_size=(32, 24), recon_size=(16, 12))
    return out


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _lines(text: str) -> list[str]:
    """The lines of terminal output, without colour and cursor codes."""
    return ANSI.sub("", text).splitlines()


def test_at_80_columns_every_name_and_the_mean_stay_whole(
    two_val: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["file_brain_AXT2_200_2000019.h5", "file1000001.h5"]
    folder = tmp_path / "in"
    folder.mkdir()
    for source, name in zip(sorted(two_val.iterdir()), names):
        shutil.copy(source, folder / name)
    # stdout is an 80-column terminal (stderr stays a pipe, so no live progress bar)
    monkeypatch.setattr(_NamedTextIOWrapper, "isatty", lambda self: self.name == "<stdout>", raising=False)
    result = CliRunner().invoke(
        main,
        ["reconstruct", str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")],
        terminal_width=80,
    )
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert max(map(len, lines)) <= 80
    for name in names:
        assert any(name in line for line in lines), result.stdout
    assert any("mean (2 scored)" in line for line in lines)
    assert sum("zero-filled" in line for line in lines) == 3  # two volumes and the mean


def test_an_unwritable_preview_folder_is_one_line_and_creates_nothing(val_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a regular file")
    result = _run(
        "reconstruct",
        val_dir,
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "out",
        "--preview",
        tmp_path / "file" / "previews",
    )
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"error: {tmp_path / 'file'}: ")
    assert not (tmp_path / "out").exists()


def test_a_preview_not_written_is_a_warning_and_the_volume_keeps_its_output(val_dir: Path, tmp_path: Path) -> None:
    (source,) = val_dir.iterdir()
    previews, report_file = tmp_path / "previews", tmp_path / "report.json"
    (previews / f"{source.stem}.png").mkdir(parents=True)  # a folder where the PNG should go
    result = _run(
        "reconstruct",
        val_dir,
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "out",
        "--preview",
        previews,
        "--json",
        report_file,
        "--overwrite",
    )
    assert result.exit_code == 3, result.output
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert str(previews / f"{source.stem}.png") in warning and "preview was not written" in warning
    assert "error" not in result.stderr and "Traceback" not in result.output
    assert (tmp_path / "out" / source.name).is_file()
    assert source.name in result.stdout and "1 preview not written" in result.stdout
    (record,) = json.loads(report_file.read_text())["volumes"]
    assert record["error"] is None and record["output"] == str(tmp_path / "out" / source.name)
    assert record["metrics"] is not None and record["preview"] is None and record["warnings"] == [warning[9:]]


def test_an_unwritable_json_still_prints_the_table_then_one_error_line(
    val_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import irecon.reconstruct.run as recon_module

    def full_disk(path: Path, value: object, **_: object) -> None:
        raise IreconError("no space left on device", path)

    monkeypatch.setattr(recon_module, "write_json", full_disk)
    report_file = tmp_path / "report.json"
    result = _run("reconstruct", val_dir, "--model", "zero-filled", "--out", tmp_path / "out", "--json", report_file)
    assert result.exit_code == 3
    assert "mean (1 scored)" in result.stdout and "PSNR" in result.stdout
    assert result.stderr.splitlines()[-1] == f"error: {report_file}: no space left on device"
    assert f"wrote {report_file}" not in result.stdout and (tmp_path / "out").iterdir()


def test_help_gives_the_exit_statuses() -> None:
    text = _run("reconstruct", "--help").output
    assert "Exit status:" in text
    for code in ("0  every volume reconstructed", "1  nothing was done", "2  usage error", "3  every volume"):
        assert code in text


def test_off_a_terminal_each_volume_prints_one_progress_line(two_val: Path, tmp_path: Path) -> None:
    result = _run("reconstruct", two_val, "--model", "zero-filled", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in two_val.iterdir())
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    for number, (line, name) in enumerate(zip(lines, names), start=1):
        output = tmp_path / "out" / name
        assert re.fullmatch(
            rf"reconstructed {number}/2 {re.escape(name)} in \d+\.\d s \(model \d+\.\d\d s, the table's time; "
            rf"the rest is reading, scoring and writing\): {re.escape(str(output))}",
            line,
        ), line


def test_counts_read_right(two_val: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(two_val, data)
    (data / "bad.h5").write_text("not hdf5")
    result = _run("reconstruct", data, "--model", "zero-filled", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "1 volume failed;" in result.stdout and "volume(s)" not in result.output


def test_a_bad_checkpoint_is_one_line_naming_no_exception_class(two_val: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(
        good,
        {
            "model_config": preset("tiny-2d", steps=1).to_dict(),
            "model": preset("tiny-2d", steps=1).build().state_dict(),
        },
    )
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:200])
    for bad in ("junk.pt", "truncated.pt"):
        result = _run("reconstruct", two_val, "--checkpoint", tmp_path / bad, "--out", tmp_path / "o")
        assert result.exit_code == 1 and len(result.output.splitlines()) == 1
        assert result.output.startswith(f"error: {tmp_path / bad}: not a readable irecon checkpoint")
        assert not re.search(r"Error|Exception|pickle", result.output.split(": ", 2)[2]), result.output


def test_the_same_mistake_gets_the_same_message_as_train(two_val: Path, tmp_path: Path) -> None:
    recon = _run("reconstruct", two_val, "--model", "zero-filled", "--out", tmp_path / "r", "--batch-size", "0")
    train = _run("train", two_val, "--val", two_val, "--model", "tiny-2d", "--out", tmp_path / "t", "--batch-size", "0")
    assert recon.exit_code == train.exit_code == 1
    assert recon.output == train.output == "error: --batch-size must be at least 1, got 0\n"
    recon = _run("reconstruct", two_val, "--model", "zero-filled", "--out", tmp_path / "r", "--acceleration", "0")
    train = _run(
        "train",
        two_val,
        "--val",
        two_val,
        "--model",
        "tiny-2d",
        "--out",
        tmp_path / "t",
        "--accelerations",
        "0",
        "--center-fractions",
        "0.08",
    )
    assert recon.output == train.output == "error: acceleration 0 is invalid: it must be at least 1\n"


def test_a_nifti_only_run_is_not_refused_for_an_h5_it_does_not_write(val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run("reconstruct", val_dir, "--model", "zero-filled", "--out", out).exit_code == 0
    result = _run("reconstruct", val_dir, "--model", "zero-filled", "--out", out, "--format", "nifti")
    assert result.exit_code == 0, result.output
    assert list(out.glob("*.nii.gz")) and len(list(out.glob("*.h5"))) == 1


def test_threads_are_set_and_named_in_the_table_title(val_dir: Path, tmp_path: Path) -> None:
    result = _run("reconstruct", val_dir, "--model", "zero-filled", "--out", tmp_path, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "zero-filled on cpu, 1 thread" in result.output
    bad = _run("reconstruct", val_dir, "--model", "zero-filled", "--out", tmp_path / "b", "--threads", "0")
    assert bad.exit_code == 1 and "--threads must be at least 1, got 0" in bad.output


def test_json_may_go_into_a_folder_the_run_creates(val_dir: Path, tmp_path: Path) -> None:
    result = _run(
        "reconstruct",
        val_dir,
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "recon" / "val",
        "--json",
        tmp_path / "recon" / "val.json",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "recon" / "val.json").is_file()
    missing = _run(
        "reconstruct",
        val_dir,
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "other",
        "--json",
        tmp_path / "nowhere" / "val.json",
    )
    assert missing.exit_code == 1 and "no such folder" in missing.output and not (tmp_path / "other").exists()


@pytest.mark.parametrize("room_for", ["h5", "h5 and nifti"])
def test_a_disk_that_fills_mid_volume_leaves_none_of_its_outputs_and_the_retry_needs_no_overwrite(
    tmp_path: Path, room_for: str
) -> None:
    inputs = tmp_path / "inputs"
    synthesize(inputs, split="val", volumes=1, slices=8, kspace_size=(128, 96), recon_size=(64, 64))
    formats = ["--format", "h5", "--format", "nifti", "--format", "dicom"]
    reference = _run("reconstruct", inputs, "--model", "zero-filled", "--out", tmp_path / "reference", *formats)
    assert reference.exit_code == 0, reference.output
    (h5_file,) = (tmp_path / "reference").glob("*.h5")
    with small_tmpfs(tmp_path / "disk") as disk:
        out, previews = disk / "recon", disk / "previews"
        command = ["reconstruct", inputs, "--model", "zero-filled", "--out", out, "--preview", previews, *formats]
        room = h5_file.stat().st_size + 16384  # the .h5, not the NIfTI and DICOM too
        if room_for == "h5 and nifti":  # and half of the DICOM series
            dicom = sum(f.stat().st_size for f in (tmp_path / "reference" / f"{h5_file.stem}_dicom").iterdir())
            room += (tmp_path / "reference" / f"{h5_file.stem}.nii.gz").stat().st_size + dicom // 2
        filler = fill(disk, room)
        result = _run(*command)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        failed = f"{h5_file.stem}{'.nii.gz' if room_for == 'h5' else '_dicom'}"
        assert errors == [f"error: {out / failed}: no space left on device"], result.output
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no .h5, staging or empty folder left
        filler.unlink()
        retry = _run(*command)
        assert retry.exit_code == 0, retry.output
        stem = h5_file.stem
        assert sorted(p.name for p in out.iterdir()) == [f"{stem}.h5", f"{stem}.nii.gz", f"{stem}_dicom"]
        assert (previews / f"{stem}.png").is_file()


def test_when_every_volume_fails_there_is_no_table_and_no_empty_output_folder(tmp_path: Path) -> None:
    (tmp_path / "bad.h5").write_text("not hdf5")
    out, previews = tmp_path / "new" / "out", tmp_path / "previews"
    result = _run("reconstruct", tmp_path / "bad.h5", "--model", "zero-filled", "--out", out, "--preview", previews)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'bad.h5'}: not a readable HDF5 file (not HDF5, truncated or corrupt)",
        "no volume was reconstructed: 1 volume failed (errors above)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_a_mask_option_a_test_style_input_ignores_gets_a_note_and_the_masks_are_named(
    val_dir: Path, tmp_path: Path
) -> None:
    synthesize(tmp_path / "test", split="test", volumes=1, slices=2, kspace_size=(32, 24), recon_size=(16, 12))
    (test_file,) = (tmp_path / "test").iterdir()
    result = _run(
        "reconstruct",
        val_dir,
        test_file,
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "out",
        "--acceleration",
        "8",
        "--center-fraction",
        "0.04",
    )
    assert result.exit_code == 0, result.output
    assert (
        f"note: --acceleration and --center-fraction did not apply to 1 test-style volume ({test_file.name}): "
        "it carries its own mask"
    ) in result.stderr.splitlines()
    assert "mask: random 8x, centre 0.04, seeded by file name (1 volume); the file's own (1 volume)" in result.stdout
    assert f"wrote {tmp_path / 'out'}: 2 volumes as <name>.h5" in result.stdout
    plain = _run("reconstruct", val_dir, test_file, "--model", "zero-filled", "--out", tmp_path / "plain")
    assert "note:" not in plain.output


def test_reconstruct_as_typed_writes_into_reconstructions_with_the_bundled_model(
    val_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "pretrained")))
    (volume,) = val_dir.glob("*.h5")
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    result = _run("reconstruct", volume)
    assert result.exit_code == 0, result.output
    assert (work / "reconstructions" / volume.name).is_file()
    assert "model: tiny-2d from bundled:irim-singlecoil" in result.stderr
    assert "wrote reconstructions: 1 volume" in result.stdout
    again = _run("reconstruct", volume)  # never overwrites without --overwrite
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert _run("reconstruct", volume, "--overwrite").exit_code == 0
    named = _run("reconstruct", volume, "--checkpoint", "bundled:irim-singlecoil", "--out", "named")
    assert named.exit_code == 0 and "tiny-2d from bundled:irim-singlecoil" in named.stdout
    assert (work / "named" / volume.name).is_file()

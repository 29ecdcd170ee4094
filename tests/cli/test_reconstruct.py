"""``irecon reconstruct --format`` and ``irecon export`` through the real ``main`` group."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from irecon.cli import main
from irecon.data.synth import synthesize
from irecon.export import images_from_nifti


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("val")
    synthesize(out, split="val", volumes=1, slices=3, kspace_size=(32, 24), recon_size=(16, 12))
    return out


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=200)


def test_reconstruct_writes_h5_nifti_and_dicom_with_the_same_images(val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run("reconstruct", val_dir, "--model", "zero-filled", "--out", out,
                  "--format", "h5", "--format", "nifti", "--format", "dicom")
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

"""``irecon import`` through the real ``main`` group: a scanner file to a reconstruction in three commands."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from irecon.cli import main
from tests.rawdata.ismrmrd_files import random_kspace, write_2d
from tests.rawdata.twix_files import correlation, example, independent_rss


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=200)


def test_twix_import_check_reconstruct_matches_an_independent_reconstruction(tmp_path: Path) -> None:
    gre = example("gre.dat")
    result = _run("import", gre, "--out", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert "1 volume from 1 raw file, 0 problems" in result.output
    result = _run("check", tmp_path / "d")
    assert result.exit_code == 0 and "1 valid volume, 0 problems" in result.output, result.output
    result = _run(
        "reconstruct", tmp_path / "d", "--model", "zero-filled", "--acceleration", "1", "--out", tmp_path / "r"
    )
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "r" / "gre.h5") as hf:
        image = hf["reconstruction"][0]
    assert correlation(image, independent_rss(gre)) >= 0.999


def test_undersampled_ismrmrd_is_reconstructed_with_its_own_mask(tmp_path: Path) -> None:
    raw = write_2d(tmp_path / "scan.h5", random_kspace((2, 2, 16, 12)), lines=[1, 4, 5, 6, 7, 10])
    result = _run("import", raw, "--out", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert "R=2, 4 centre lines (mask written)" in result.output
    result = _run(
        "reconstruct", tmp_path / "d", "--model", "zero-filled", "--out", tmp_path / "r", "--json", tmp_path / "r.json"
    )
    assert result.exit_code == 0, result.output
    assert '"mask_source": "file"' in (tmp_path / "r.json").read_text()


@pytest.mark.parametrize("name", ["scan.raw", "missing.dat"])
def test_bad_inputs_are_one_line(tmp_path: Path, name: str) -> None:
    if name == "scan.raw":
        (tmp_path / name).write_bytes(b"x")
    result = _run("import", tmp_path / name, "--out", tmp_path / "d")
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    good = write_2d(tmp_path / "good.h5", random_kspace((1, 2, 8, 6)))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    result = _run("import", bad, good, "--out", tmp_path / "d")
    assert result.exit_code == 1
    assert "error: " in result.output and "bad.h5: not a readable ISMRMRD file" in result.output
    assert (tmp_path / "d" / "good.h5").is_file()
    assert "1 volume from 2 raw files, 1 problem" in result.output


def test_prospective_file_without_mask_uses_its_zero_lines(tmp_path: Path) -> None:
    from irecon.data.header import write_header_xml

    kspace = random_kspace((2, 3, 16, 12), seed=11)
    lines = [0, 2, 4, 5, 6, 7, 9, 11]
    kspace[..., [c for c in range(12) if c not in lines]] = 0
    (tmp_path / "d").mkdir()
    with h5py.File(tmp_path / "d" / "other_tool.h5", "w") as hf:
        hf["kspace"] = kspace
        hf["ismrmrd_header"] = write_header_xml((16, 12, 1), (16, 12, 1), center=6, maximum=11)
    result = _run("check", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert "no mask dataset, but 8 of 12 k-space lines are non-zero (4 in the centre)" in result.output
    result = _run(
        "reconstruct", tmp_path / "d", "--model", "zero-filled", "--out", tmp_path / "r", "--json", tmp_path / "r.json"
    )
    assert result.exit_code == 0, result.output
    assert "its mask is its non-zero k-space lines (8 sampled)" in result.output
    assert '"mask_source": "zero lines"' in (tmp_path / "r.json").read_text()
    with h5py.File(tmp_path / "r" / "other_tool.h5") as hf:
        image = hf["reconstruction"][()]
    coil_images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(image, np.sqrt((np.abs(coil_images) ** 2).sum(axis=1)), rtol=1e-4, atol=1e-5)

"""``check_paths`` records every bad file and goes on."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from irecon.data.check import check_paths
from irecon.errors import IreconError
from tests.helpers.volumes import write_tiny_volume


def test_good_and_bad_files_are_all_reported(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    single = write_tiny_volume(folder / "a_single.h5")
    multi = write_tiny_volume(folder / "b_multi.h5", coils=3)
    test = write_tiny_volume(folder / "c_test.h5", with_mask=True)
    broken = folder / "d_broken.h5"
    broken.write_text("not hdf5")
    nan_file = write_tiny_volume(folder / "e_nan.h5")
    with h5py.File(nan_file, "r+") as hf:
        hf["kspace"][1, 0, 0] = np.nan
    (folder / "notes.txt").write_text("x")

    result = check_paths([folder])

    assert [info.path for info in result.files] == [single, multi, test]
    assert [info.challenge for info in result.files] == ["singlecoil", "multicoil", "singlecoil"]
    assert len(result.problems) == 2
    assert result.problems[0].startswith(f"{broken}: not a readable HDF5 file")
    assert result.problems[1] == f"{nan_file}: kspace slice 1 contains NaN or Inf values"
    assert result.notes == [f"skipped {folder / 'notes.txt'}: not an .h5 file"]
    assert not result.ok


def test_value_scan_can_be_skipped(tmp_path: Path) -> None:
    path = write_tiny_volume(tmp_path / "nan.h5")
    with h5py.File(path, "r+") as hf:
        hf["kspace"][0, 0, 0] = np.inf
    assert check_paths([path], check_values=False).ok
    assert not check_paths([path]).ok


def test_missing_path_among_others_is_a_problem(tmp_path: Path) -> None:
    good = write_tiny_volume(tmp_path / "good.h5")
    missing = tmp_path / "missing.h5"
    result = check_paths([missing, good])
    assert [info.path for info in result.files] == [good]
    assert result.problems == [f"{missing}: no such file or folder"]


def test_nothing_to_check_raises(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(IreconError, match="no such file or folder") as info:
        check_paths([missing])
    assert str(info.value) == f"{missing}: no such file or folder"
    (tmp_path / "empty").mkdir()
    with pytest.raises(IreconError, match="nothing to check: .*missing.*empty"):
        check_paths([missing, tmp_path / "empty"])


def test_duplicate_paths_are_checked_once(tmp_path: Path) -> None:
    good = write_tiny_volume(tmp_path / "good.h5")
    assert len(check_paths([good, tmp_path]).files) == 1

import os
from pathlib import Path

import pytest

from irecon.errors import IreconError
from irecon.training.folders import latest_run_folder, new_run_folder


def test_a_new_run_folder_takes_the_next_number_of_its_preset(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert new_run_folder("tiny-2d", runs) == runs / "tiny-2d-1"
    for name in ("tiny-2d-1", "tiny-2d-7", "tiny-2d-x", "tiny-3d-9", "paper-2d-12"):
        (runs / name).mkdir(parents=True)
    assert new_run_folder("tiny-2d", runs) == runs / "tiny-2d-8"
    assert new_run_folder("tiny-3d", runs) == runs / "tiny-3d-10"
    assert new_run_folder("rim", runs) == runs / "rim-1"


def test_the_latest_run_is_the_one_whose_last_checkpoint_is_newest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(IreconError, match="no run folder here holds a last.pt"):
        latest_run_folder(runs)
    for age, name in enumerate(("tiny-2d-9", "tiny-3d-1", "tiny-2d-2")):
        (runs / name).mkdir(parents=True)
        (runs / name / "last.pt").write_bytes(b"")
        os.utime(runs / name / "last.pt", (1000 + age, 1000 + age))
    (runs / "tiny-2d-10").mkdir()  # no checkpoint yet: not a run to resume
    assert latest_run_folder(runs) == runs / "tiny-2d-2"

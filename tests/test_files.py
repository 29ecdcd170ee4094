from pathlib import Path

import pytest

from irecon.errors import IreconError
from irecon.files import atomic_write


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_without_overwrite_an_existing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with atomic_write(path, overwrite=False) as tmp:
        tmp.write_text("first")
    with pytest.raises(IreconError, match="file exists; pass --overwrite"):
        with atomic_write(path, overwrite=False) as tmp:
            tmp.write_text("second")
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]

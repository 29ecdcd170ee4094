"""benchmarks/narrow_rows.py on a tiny layer: both layouts timed for each k, the threshold left as it was."""

from __future__ import annotations

import pytest
from benchmarks.narrow_rows import main

from irecon.invertible import coupling

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prints_both_layouts_for_each_width_and_restores_the_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    before = coupling.NARROW_ROWS
    main(["--hidden", "2", "12", "--channels", "4", "--size", "8", "8", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert coupling.NARROW_ROWS == before
    for k in (2, 12):
        at = lines.index(f"k = {k}")
        rows = lines[at + 1 : at + 5]
        assert [r.split()[0] for r in rows] == ["forward", "backward", "patchify", "3x3"]
        assert all("ratio" in r and float(r.split()[-1]) > 0 for r in rows)

import json
from pathlib import Path

from click.testing import CliRunner

from irecon.cli import main
from tests.evaluate.test_run import write_pair


def test_evaluate_prints_the_groups_and_writes_scores_with_the_protocol(tmp_path: Path) -> None:
    for index in range(2):
        write_pair(tmp_path, f"file{index}.h5", index, "CORPD_FBK", 4)
    out = tmp_path / "scores.json"
    args = [str(tmp_path / "predictions"), str(tmp_path / "targets"), "--json", str(out)]
    result = CliRunner().invoke(main, ["evaluate", *args])
    assert result.exit_code == 0, result.output
    assert "2 volumes scored" in result.output and "4x" in result.output and "CORPD_FBK" in result.output
    report = json.loads(out.read_text())
    assert [g["volumes"] for g in report["groups"]] == [2, 2, 2]
    assert len(report["protocol"]["files"]) == 2
    again = CliRunner().invoke(main, ["evaluate", *args])
    assert again.exit_code == 1 and again.output.strip().startswith(f"error: {out}: file exists")


def test_a_missing_prediction_is_one_error_line(tmp_path: Path) -> None:
    write_pair(tmp_path, "file0.h5", 0, "CORPD_FBK", 4)
    (tmp_path / "predictions" / "file0.h5").unlink()
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "predictions"), str(tmp_path / "targets")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'predictions' / 'file0.h5'}: has no prediction of this name"

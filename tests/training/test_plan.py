from pathlib import Path

import pytest

from irecon.errors import IreconError
from irecon.training.plan import with_defaults
from tests.helpers.training import make_options


def test_without_out_a_new_run_is_numbered_in_runs_and_torchrun_must_name_one(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny-2d-4").mkdir(parents=True)
    options, init, notes = with_defaults(make_options(data, None))
    assert options.out == Path("runs/tiny-2d-5") and init is None
    assert notes == ["no «out»: a new run folder runs/tiny-2d-5"] and not (tmp_path / "runs/tiny-2d-5").exists()
    with pytest.raises(IreconError) as torchrun:
        with_defaults(make_options(data, None), world_size=2)
    assert torchrun.value.problem.startswith("under torchrun pass «out»")
    with pytest.raises(IreconError) as both:
        with_defaults(make_options(data, None, resume=True, init="default"))
    assert both.value.problem.startswith("«init» starts a new run")

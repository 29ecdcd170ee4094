from pathlib import Path

import pytest

from irecon.data.synth import synthesize
from irecon.errors import IreconError
from irecon.models.checkpoint import load_checkpoint
from irecon.models.pretrained.registry import ENV_FOLDER, MULTICOIL, SINGLECOIL
from irecon.training.plan import prepare
from tests.helpers.pretrained import make_registry
from tests.helpers.training import SIZES, assert_same_weights, make_options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_registry(tmp_path / "pretrained")
    monkeypatch.setenv(ENV_FOLDER, str(folder))
    return folder


def test_init_default_starts_from_the_bundled_single_coil_weights(data: Path, registry: Path, tmp_path: Path) -> None:
    options = make_options(data, tmp_path / "run", model=None, steps=None, layers=None, init="default")
    options, plan = prepare(options)
    assert (options.model, options.init) == ("tiny-2d", "bundled:" + SINGLECOIL)
    bundled = load_checkpoint(registry / f"{SINGLECOIL}.pt")
    assert plan.config.to_dict() == bundled["model_config"]
    assert_same_weights(plan.model.state_dict(), bundled["model"])


def test_init_default_on_multi_coil_data_takes_the_multi_coil_weights_and_their_virtual_coils(
    registry: Path, tmp_path: Path
) -> None:
    for split in ("train", "val"):
        synthesize(tmp_path / split, split=split, challenge="multicoil", coils=3, volumes=1, seed=3, **SIZES)
    options = make_options(tmp_path, tmp_path / "run", model=None, steps=None, layers=None, init="default")
    options, plan = prepare(options)
    assert (options.init, options.virtual_coils, plan.config.coils) == ("bundled:irim-multicoil", 2, 2)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        (SINGLECOIL, {"model": "tiny-3d"}, "--model tiny-3d conflicts with the --init weights"),
        (SINGLECOIL, {"steps": 3}, "--steps 3 conflicts with the --init weights"),
        (MULTICOIL, {"virtual_coils": 4}, "trained on 2 virtual coils, not 4"),
    ],
)
def test_options_that_conflict_with_the_init_weights_are_refused(
    data: Path, registry: Path, tmp_path: Path, name: str, overrides: dict[str, object], message: str
) -> None:
    options = make_options(data, tmp_path / "run", init=str(registry / f"{name}.pt"), **overrides)
    with pytest.raises(IreconError, match=message):
        prepare(options)
    assert not (tmp_path / "run").exists()


def test_init_without_bundled_weights_names_make_pretrained(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FOLDER, str(make_registry(tmp_path / "empty", names=())))
    with pytest.raises(IreconError, match="make pretrained"):
        prepare(make_options(data, tmp_path / "run", init="default"))
    assert not (tmp_path / "run").exists()

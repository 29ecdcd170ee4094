from pathlib import Path

import pytest
import torch

from irecon.errors import IreconError
from irecon.models.checkpoint import load_checkpoint, load_model
from irecon.models.pretrained.registry import (
    ENV_FOLDER,
    MULTICOIL,
    SINGLECOIL,
    bundled_models,
    find_bundled,
    four_x_ssim,
    name_for_coils,
)
from tests.helpers.pretrained import make_registry


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_registry(tmp_path / "pretrained")
    monkeypatch.setenv(ENV_FOLDER, str(folder))
    return folder


def test_the_shipped_manifest_reads_and_names_make_pretrained_when_a_model_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_FOLDER, raising=False)
    shipped = {m.name for m in bundled_models()}
    assert shipped <= {SINGLECOIL, MULTICOIL}
    with pytest.raises(IreconError, match="make pretrained") as err:
        find_bundled("irim-nonexistent")
    assert "\n" not in str(err.value)


def test_a_bundled_model_is_found_and_loads_through_the_checkpoint_path(registry: Path) -> None:
    model = find_bundled(SINGLECOIL)
    assert (model.preset, model.coils, model.spec) == ("tiny-2d", 1, "bundled:irim-singlecoil")
    assert four_x_ssim(model) == (0.5, 0.4)
    payload = load_checkpoint(model.spec)
    direct = torch.load(registry / model.file, weights_only=True)
    assert payload["model"].keys() == direct["model"].keys()
    assert all(torch.equal(payload["model"][k], direct["model"][k]) for k in direct["model"])
    loaded = load_model("bundled:" + MULTICOIL, None, torch.device("cpu"))
    assert loaded.virtual_coils == 2 and loaded.config.coils == 2
    assert loaded.name == "tiny-2d from bundled:irim-multicoil"
    assert [name_for_coils(c) for c in (1, 2, 15)] == [SINGLECOIL, MULTICOIL, MULTICOIL]


def test_a_file_whose_sha256_does_not_match_is_refused_in_one_line(registry: Path) -> None:
    path = registry / f"{SINGLECOIL}.pt"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IreconError, match="sha256") as err:
        load_checkpoint("bundled:" + SINGLECOIL)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_model_or_weight_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_registry(tmp_path / "one", names=(SINGLECOIL,))
    monkeypatch.setenv(ENV_FOLDER, str(folder))
    with pytest.raises(IreconError, match=f"no bundled model '{MULTICOIL}'.*make pretrained"):
        load_checkpoint("bundled:" + MULTICOIL)
    (folder / f"{SINGLECOIL}.pt").unlink()
    with pytest.raises(IreconError, match="weight file missing"):
        load_checkpoint("bundled:" + SINGLECOIL)
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(IreconError, match="not a manifest"):
        bundled_models()

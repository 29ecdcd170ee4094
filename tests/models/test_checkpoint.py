from pathlib import Path

import pytest
import torch

from irecon.errors import IreconError
from irecon.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from irecon.models.presets import preset


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    config = preset("tiny-2d", steps=2)
    model = config.build()
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model_config": config.to_dict(), "model": model.state_dict()})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    loaded, loaded_config, payload = model_from_checkpoint(path)
    assert loaded_config == config
    assert payload["irecon_version"] and payload["torch_version"] == torch.__version__
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(IreconError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(IreconError, match="not a readable irecon checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(IreconError, match="not an irecon checkpoint"):
        load_checkpoint(other)
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(
        wrong,
        {"model_config": preset("tiny-2d").to_dict(), "model": preset("tiny-2d", steps=1).build().state_dict()},
    )
    with pytest.raises(IreconError, match="weights do not fit"):
        model_from_checkpoint(wrong)


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model_config": {}, "model": {}, "step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"model_config": {}, "model": {}, "bad": Unpicklable()})
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_older_checkpoint_with_metadata_channels_zero_still_loads(tmp_path: Path) -> None:
    config = preset("tiny-2d", steps=1)
    stored = {**config.to_dict(), "metadata_channels": 0}
    save_checkpoint(tmp_path / "old.pt", {"model_config": stored, "model": config.build().state_dict()})
    model, loaded, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert loaded == config
    with_metadata = {**config.to_dict(), "metadata_channels": 3}
    save_checkpoint(tmp_path / "meta.pt", {"model_config": with_metadata, "model": config.build().state_dict()})
    with pytest.raises(IreconError, match="metadata channels"):
        model_from_checkpoint(tmp_path / "meta.pt")


def test_a_checkpoint_without_an_output_field_loads_with_the_official_head(tmp_path: Path) -> None:
    official = preset("tiny-2d", steps=1, output="official")
    stored = {k: v for k, v in official.to_dict().items() if k != "output"}
    save_checkpoint(tmp_path / "old.pt", {"model_config": stored, "model": official.build().state_dict()})
    _, loaded, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert loaded.output == "official" and loaded == official
    residual = preset("tiny-2d", steps=1)
    save_checkpoint(tmp_path / "new.pt", {"model_config": residual.to_dict(), "model": residual.build().state_dict()})
    assert model_from_checkpoint(tmp_path / "new.pt")[1].output == "residual"

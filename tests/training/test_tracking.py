"""``train --tensorboard``: event files read back with TensorBoard's own reader, and resumed curves without duplicates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from irecon.errors import IreconError
from irecon.training.loop import train
from tests.helpers.training import make_options

pytest.importorskip("tensorboard", reason="needs the tensorboard extra (irecon[tensorboard])")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

STEP_TAGS = (
    "train/loss",
    "train/lr",
    "train/skipped_steps",
    "throughput/slices_per_s",
    "throughput/model_slices_per_s",
    "throughput/loader_slices_per_s",
    "memory/peak_bytes",
)
EPOCH_TAGS = (
    "val/nmse",
    "val/psnr",
    "val/ssim",
    "val/zero_filled_nmse",
    "val/zero_filled_psnr",
    "val/zero_filled_ssim",
)
IMAGES = ("val_slice/zero_filled", "val_slice/reconstruction", "val_slice/target", "val_slice/error")


def read_events(run: Path) -> EventAccumulator:
    guidance = {"scalars": 0, "images": 0, "tensors": 0}
    return EventAccumulator(str(run / "tensorboard"), size_guidance=guidance).Reload()


def steps(events: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in events.Scalars(tag)]


def test_two_epochs_write_every_scalar_image_and_the_options(data: Path, tmp_path: Path, one_thread: None) -> None:
    result = train(make_options(data, tmp_path / "run", epochs=2, tensorboard=True))
    events = read_events(tmp_path / "run")
    tags = events.Tags()
    assert set(STEP_TAGS + EPOCH_TAGS) <= set(tags["scalars"])
    assert set(IMAGES) <= set(tags["images"])
    assert result.global_step == 6
    assert steps(events, "train/loss") == [1, 2, 3, 4, 5, 6]
    for tag, name in zip(
        EPOCH_TAGS, ("val_nmse", "val_psnr", "val_ssim", "zero_filled_nmse", "zero_filled_psnr", "zero_filled_ssim")
    ):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["global_step"], pytest.approx(r[name], rel=1e-6)) for r in result.history], tag
    for tag in IMAGES:
        images = events.Images(tag)
        assert [i.step for i in images] == [3, 6]
        assert images[0].height == 16 and images[0].width == 16  # the recon size of the tiny volumes
    assert "text_summary" in "".join(tags["tensors"])


def test_a_resumed_run_continues_the_curves_without_duplicate_steps(
    data: Path, tmp_path: Path, one_thread: None
) -> None:
    run = tmp_path / "run"
    train(make_options(data, run, epochs=1, tensorboard=True))
    shutil.copy(run / "last.pt", tmp_path / "after_epoch_1.pt")
    train(make_options(data, run, epochs=2, tensorboard=True, resume=True))
    # Go back to the epoch-1 checkpoint, as after a crash that lost last.pt: steps 4-6 run again.
    shutil.copy(tmp_path / "after_epoch_1.pt", run / "last.pt")
    again = train(make_options(data, run, epochs=2, tensorboard=True, resume=True))
    events = read_events(run)
    assert steps(events, "train/loss") == [1, 2, 3, 4, 5, 6]
    assert steps(events, "val/ssim") == [3, 6]
    last = events.Scalars("val/ssim")[-1].value
    assert last == pytest.approx(again.history[-1]["val_ssim"], rel=1e-6)


def test_tensorboard_without_the_package_is_refused_before_anything_is_written(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an environment without the extra gives
    with pytest.raises(IreconError, match=r"irecon\[tensorboard\]"):
        train(make_options(data, tmp_path / "run", tensorboard=True))
    assert not (tmp_path / "run").exists()

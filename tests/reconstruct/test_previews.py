"""Preview figures of ``irecon reconstruct --preview``: panels, scales, colour bar and titles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import irecon.reconstruct.run as recon_module
from irecon.data.synth import synthesize
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.preview import MASK_LABEL, preview
from irecon.reconstruct.run import reconstruct

SIZES = {"kspace_size": (32, 24), "recon_size": (16, 16), "slices": 3, "volumes": 1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One volume with a target (val), one test-style volume, and an untrained tiny-2d checkpoint.

    The checkpoint uses the official (random) output head, so its untrained images are off the target's scale.
    """
    root = tmp_path_factory.mktemp("previews")
    (val,) = synthesize(root / "val", split="val", **SIZES)
    (test,) = synthesize(root / "test", split="test", **SIZES)
    torch.manual_seed(0)
    config = replace(preset("tiny-2d", steps=1), output="official")
    checkpoint = root / "tiny.pt"
    save_checkpoint(checkpoint, {"model_config": config.to_dict(), "model": config.build().state_dict()})
    return {"val": val, "test": test, "checkpoint": checkpoint}


def _figures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: list[Path], **options: object
) -> dict[str, Figure]:
    """The preview figures a real run builds, by PNG name; the PNGs are written as usual."""
    figures: dict[str, Figure] = {}
    write = recon_module.write_preview

    def keep(path: Path, figure: Figure) -> None:
        figures[path.name] = figure
        write(path, figure)

    monkeypatch.setattr(recon_module, "write_preview", keep)
    report = reconstruct(
        ReconstructOptions(
            inputs=files, out_dir=tmp_path / "out", preview_dir=tmp_path / "previews", device="cpu", **options
        )
    )
    assert report.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == sorted(figures)
    return figures


def _panels(figure: Figure) -> dict[str, object]:
    """Image panels by title (colour bars and empty grid cells have no image; the mask strip is left out)."""
    return {
        axis.get_title(): axis.images[0]
        for axis in figure.axes
        if axis.images and not axis.get_xlabel().startswith(MASK_LABEL)
    }


def test_with_a_target_errors_share_one_scale_with_a_colour_bar_and_the_title_names_the_run(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    figures = _figures(monkeypatch, tmp_path, [inputs["val"]], checkpoint=inputs["checkpoint"])
    figure = figures[f"{inputs['val'].stem}.png"]
    panels = _panels(figure)
    assert list(panels) == [
        "zero-filled",
        "reconstruction",
        "target",
        "|zero-filled - target|",
        "|reconstruction - target|",
    ]
    greys = [panels[t].get_clim() for t in ("zero-filled", "target")]
    assert len(set(greys)) == 1 and greys[0][0] == 0
    # the untrained model's images are far darker than the target: on its own window, and saying so
    assert panels["reconstruction"].axes.get_xlabel().endswith("(its own: off the target's scale)")
    errors = [panels[t] for t in ("|zero-filled - target|", "|reconstruction - target|")]
    assert errors[0].get_clim() == errors[1].get_clim()
    assert errors[0].get_clim()[1] == pytest.approx(max(float(e.get_array().max()) for e in errors))
    assert errors[0].colorbar is not None
    assert len(figure.axes) == 3 + 3 + 2 + 1 + 1  # images with their grey bars, error maps, one error bar, mask
    assert all(panels[t].colorbar is not None for t in ("zero-filled", "reconstruction", "target"))
    title = figure.get_suptitle()
    for words in (
        "tiny.pt",
        "mask: random",
        "acceleration 4",
        "whole volume",
        "not of this slice",
        "model NMSE",
        "zero-filled NMSE",
    ):
        assert words in title


def test_without_a_target_each_panel_is_on_its_own_scale(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    figures = _figures(monkeypatch, tmp_path, [inputs["test"]], checkpoint=inputs["checkpoint"])
    figure = figures[f"{inputs['test'].stem}.png"]
    panels = _panels(figure)
    assert list(panels) == ["zero-filled", "reconstruction"]
    for image in panels.values():
        assert image.get_clim() == pytest.approx((0, float(image.get_array().max())))
    title = figure.get_suptitle()
    assert "the file's own" in title and "not scored" in title and "own grey scale" in title


def test_the_zero_filled_model_is_shown_once(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    figures = _figures(monkeypatch, tmp_path, [inputs["val"], inputs["test"]], model="zero-filled")
    with_target = _panels(figures[f"{inputs['val'].stem}.png"])
    assert list(with_target) == ["zero-filled", "target", "|zero-filled - target|"]
    assert with_target["|zero-filled - target|"].colorbar is not None
    assert list(_panels(figures[f"{inputs['test'].stem}.png"])) == ["zero-filled"]
    title = figures[f"{inputs['val'].stem}.png"].get_suptitle()
    assert "no checkpoint" in title and "model NMSE" not in title and title.count("NMSE") == 1


def test_an_off_scale_reconstruction_gets_its_own_stated_window_and_the_reader_gets_scale_and_mask() -> None:
    rng = np.random.default_rng(0)
    target = rng.random((40, 30)).astype(np.float32) + 1.0
    tiny = target * 1e-6  # a scaling fault: on the target's window it would be black
    errors = [("|reconstruction - target|", np.abs(tiny - target))]
    mask = (np.arange(32) % 4 == 0).astype(np.float32)
    figure = preview(
        [("reconstruction", tiny), ("target", target)],
        errors,
        "t",
        float(target.max()),
        spacing_mm=(0.5, 0.5),
        mask=mask,
    )
    axes = {axis.get_title(): axis for axis in figure.axes if axis.images and axis.get_title()}
    reconstruction, truth = axes["reconstruction"], axes["target"]
    assert reconstruction.images[0].get_clim() == pytest.approx((0, float(tiny.max())))
    assert reconstruction.get_xlabel() == f"window 0 to {float(tiny.max()):.3g} (its own: off the target's scale)"
    assert truth.get_xlabel() == f"window 0 to {float(target.max()):.3g} (the target's)"
    assert all(axis.images[0].get_interpolation() == "nearest" for axis in axes.values())
    (bar,) = [a for a in reconstruction.artists if type(a).__name__ == "AnchoredSizeBar"]
    assert bar.txt_label.get_text() == "2 mm"  # 30 columns of 0.5 mm: a quarter is 3.75 mm
    (strip,) = [axis for axis in figure.axes if axis.get_xlabel().startswith(MASK_LABEL)]
    assert strip.get_xlabel() == "sampling mask: 8 of 32 k-space columns"

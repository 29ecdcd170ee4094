"""3-D reconstruction in overlapping slabs: coverage, blending weights, and agreement with the whole volume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastmri.evaluate import ssim

from irecon.data.datasets import load_volume
from irecon.data.masks import MaskSpec
from irecon.data.synth import synthesize
from irecon.inference import reconstruct_slabs, reconstruct_volume, slab_overlap, slab_starts, slab_weights
from irecon.models.presets import preset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("slices", "slab"), [(10, 4), (12, 4), (7, 6), (9, 2), (5, 8)])
def test_slabs_cover_every_slice_and_weights_add_up_to_one(slices: int, slab: int) -> None:
    overlap = slab_overlap(slab)
    starts = slab_starts(slices, slab, overlap)
    assert starts[0] == 0 and min(starts[-1] + slab, slices) == slices
    total = torch.zeros(slices, dtype=torch.float64)
    for k, start in enumerate(starts):
        before = starts[k - 1] + slab - start if k else 0
        after = start + slab - starts[k + 1] if k + 1 < len(starts) else 0
        weights = slab_weights(min(slab, slices), before, after)
        assert (weights > 0).all()
        total[start : start + slab] += weights
    if len(starts) > 1 and all(b - a == slab - overlap for a, b in zip(starts, starts[1:-1])):
        torch.testing.assert_close(
            total[: starts[-2] + slab - overlap], torch.ones(starts[-2] + slab - overlap, dtype=torch.float64)
        )


def test_a_slab_as_deep_as_the_volume_is_the_whole_volume_result(tmp_path: Path) -> None:
    synthesize(tmp_path, split="val", volumes=1, slices=6, kspace_size=(32, 24), recon_size=(16, 16))
    volume = load_volume(next(tmp_path.iterdir()), MaskSpec("random", (0.08,), (4,)))
    model = seeded_model()
    torch.testing.assert_close(reconstruct_slabs(model, volume, 6), reconstruct_volume(model, volume), rtol=0, atol=0)


def seeded_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return preset("tiny-3d").build().eval()


def test_slabs_agree_with_the_whole_volume_on_synthetic_3d_data(tmp_path: Path) -> None:
    """Slabs of 6 (overlap 3, blended) against the whole volume, a seeded untrained tiny-3d: the blend is
    closer to the whole-volume result than slabs that do not overlap."""
    synthesize(tmp_path, split="val", volumes=1, slices=16, kspace_size=(48, 32), recon_size=(24, 24), seed=4)
    volume = load_volume(next(tmp_path.iterdir()), MaskSpec("random", (0.08,), (4,)))
    model = seeded_model()
    whole = reconstruct_volume(model, volume)
    scale = float(whole.max())
    blended, apart = (reconstruct_slabs(model, volume, 6, overlap=overlap) for overlap in (None, 0))
    assert blended.shape == apart.shape == whole.shape
    errors = [float((s - whole).abs().max()) / scale for s in (blended, apart)]
    agreement = [ssim(whole.numpy(), s.numpy(), maxval=scale).item() for s in (blended, apart)]
    print(
        f"slabs of 6 vs whole volume (16 slices): blended (overlap 3) max |diff| / max {errors[0]:.4f}, SSIM "
        f"{agreement[0]:.4f}; not overlapping: {errors[1]:.4f}, SSIM {agreement[1]:.4f}"
    )
    assert errors[0] < errors[1] and agreement[0] > agreement[1]
    assert agreement[0] > 0.98 and errors[0] < 0.2, (errors, agreement)

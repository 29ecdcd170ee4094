"""Run any irecon model over whole volumes (or a 3-D model over overlapping slabs, blended): magnitude
images at the recon size, and their scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from irecon.data.datasets import Volume, load_volume
from irecon.data.masks import MaskSpec
from irecon.data.volumes import VolumeInfo
from irecon.metrics import Scores, score_volume
from irecon.physics import center_crop, common_crop

VAL_BATCH = 8  # slices per forward pass of a 2-D model when scoring whole volumes


@torch.inference_mode()
def reconstruct_volume(
    model: nn.Module,
    volume: Volume,
    *,
    batch_size: int = VAL_BATCH,
    device: str | torch.device = "cpu",
) -> Tensor:
    """(slices, h, w) float32 magnitude images on the CPU, centre-cropped to the header's recon size.

    2-D models see the slices in batches of ``batch_size``; 3-D models see the whole volume at once.
    """
    crop = volume.info.crop_size
    mask = volume.mask.to(device)
    if getattr(model, "dims", 2) == 3:
        kspace = volume.kspace.to(device).transpose(0, 1).unsqueeze(0)
        images = model(kspace, mask.unsqueeze(0))[-1][0]
        return center_crop(images, crop).float().cpu()
    parts = []
    for start in range(0, volume.kspace.shape[0], batch_size):
        kspace = volume.kspace[start : start + batch_size].to(device)
        parts.append(center_crop(model(kspace, mask)[-1], crop).float().cpu())
    return torch.cat(parts)


def slab_overlap(slab: int) -> int:
    """Slices two neighbouring slabs share: half the slab (none for a 1-slice slab)."""
    return slab // 2


def slab_starts(slices: int, slab: int, overlap: int) -> list[int]:
    """First slice of each slab: every ``slab - overlap`` slices, the last slab ending at the volume's end."""
    if slab >= slices:
        return [0]
    starts = list(range(0, slices - slab + 1, slab - overlap))
    if starts[-1] + slab < slices:
        starts.append(slices - slab)
    return starts


def slab_weights(slab: int, before: int, after: int) -> Tensor:
    """Blending window of one slab: linear ramps over the ``before``/``after`` slices it shares, 1 elsewhere.

    Over a shared stretch of ``o`` slices one slab ramps down (o..1)/(o+1) while the next ramps up
    (1..o)/(o+1), so the two weights add up to 1 on every slice.
    """
    weights = torch.ones(slab, dtype=torch.float64)
    if before:
        weights[:before] = torch.arange(1, before + 1, dtype=torch.float64) / (before + 1)
    if after:
        weights[slab - after :] = torch.minimum(
            weights[slab - after :], torch.arange(after, 0, -1, dtype=torch.float64) / (after + 1)
        )
    return weights


@torch.inference_mode()
def reconstruct_slabs(
    model: nn.Module,
    volume: Volume,
    slab: int,
    *,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """A 3-D model over overlapping slabs of ``slab`` slices, blended with :func:`slab_weights`.

    Same output as :func:`reconstruct_volume`; ``overlap`` defaults to :func:`slab_overlap`.
    """
    slices = volume.kspace.shape[0]
    overlap = slab_overlap(slab) if overlap is None else overlap
    starts = slab_starts(slices, slab, overlap)
    total: Tensor | None = None
    weight_sum = torch.zeros(slices, dtype=torch.float64)
    for k, start in enumerate(starts):
        part = volume._replace(kspace=volume.kspace[start : start + slab])
        images = reconstruct_volume(model, part, device=device).double()
        before = starts[k - 1] + slab - start if k > 0 else 0
        after = start + slab - starts[k + 1] if k + 1 < len(starts) else 0
        weights = slab_weights(images.shape[0], before, after)
        if total is None:
            total = images.new_zeros((slices, *images.shape[1:]))
        total[start : start + slab] += weights.view(-1, 1, 1) * images
        weight_sum[start : start + slab] += weights
    assert total is not None
    return (total / weight_sum.view(-1, 1, 1)).float()


def score_prediction(prediction: Tensor, target: Tensor) -> Scores:
    """fastMRI's volume scores of ``prediction`` on the region it shares with ``target``."""
    prediction, target = common_crop(prediction, target)
    return score_volume(target.numpy(), prediction.numpy())


def score_model(
    model: nn.Module,
    volumes: Sequence[VolumeInfo],
    mask_spec: MaskSpec,
    device: torch.device,
    on_volume: Callable[[int, int], None] | None = None,
    virtual_coils: int | None = None,
) -> list[Scores]:
    """NMSE/PSNR/SSIM per volume of the model's reconstructions under file-name-seeded masks.

    ``on_volume(done, total)`` is called after each volume (progress reports); ``virtual_coils``
    compresses each volume's coils as in training.
    """
    was_training = model.training
    model.eval()
    scores = []
    try:
        for done, info in enumerate(volumes, start=1):
            volume = load_volume(info.path, mask_spec, info, virtual_coils)
            if volume.target is None:
                raise ValueError(f"{info.path} has no target to score against")
            images = reconstruct_volume(model, volume, device=device)
            scores.append(score_prediction(images, volume.target))
            if on_volume is not None:
                on_volume(done, len(volumes))
    finally:
        model.train(was_training)
    return scores

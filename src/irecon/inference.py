"""Run any irecon model over whole volumes: magnitude images at the recon size, and their scores."""

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

"""Run any irecon model over a whole volume and return its magnitude images at the target size."""

from __future__ import annotations

import torch
from fastmri.data.transforms import center_crop
from torch import Tensor, nn

from irecon.data.datasets import Volume


def crop_to(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre crop over the last two dims; sizes larger than the image are clipped to it."""
    size = (min(size[0], image.shape[-2]), min(size[1], image.shape[-1]))
    return center_crop(image, size)


@torch.inference_mode()
def reconstruct_volume(
    model: nn.Module, volume: Volume, *, batch_size: int = 8, device: str | torch.device = "cpu",
    crop_size: tuple[int, int] | None = None,
) -> Tensor:
    """(slices, h, w) float32 magnitude images on the CPU.

    2-D models see the slices in batches of ``batch_size``; 3-D models see the whole volume at once.
    The output is centre-cropped to ``crop_size`` (default: the volume's recon size from its header).
    """
    crop = crop_size or volume.info.crop_size
    mask = volume.mask.to(device)
    if getattr(model, "dims", 2) == 3:
        kspace = volume.kspace.to(device).transpose(0, 1).unsqueeze(0)
        images = model(kspace, mask.unsqueeze(0))[-1][0]
        return crop_to(images, crop).float().cpu()
    parts = []
    for start in range(0, volume.kspace.shape[0], batch_size):
        kspace = volume.kspace[start : start + batch_size].to(device)
        parts.append(crop_to(model(kspace, mask)[-1], crop).float().cpu())
    return torch.cat(parts)

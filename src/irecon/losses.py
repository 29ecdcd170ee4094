"""Training losses: between magnitude images, each scaled by the data range (the volume's max), and on held-out k-space."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from fastmri.losses import SSIMLoss
from torch import Tensor, nn

LOSSES = ("ssim", "ssim-l1", "l1", "mse")
SSIM_LOSSES = ("ssim", "ssim-l1")  # the ones that need targets of at least SSIM_WINDOW pixels
SSIM_WINDOW = 7
# ssim-l1: (1 - SSIM) + L1_WEIGHT * mean |error| / max; the L1 term pins the intensity SSIM barely sees.
# At 10 the two terms start about equal; at 1 the demo's first epoch fell below zero-filled PSNR (docs/compare.md).
L1_WEIGHT = 10.0


class ImageLoss(nn.Module):
    """1 - SSIM (fastmri.losses.SSIMLoss), 1 - SSIM + L1, L1 or MSE; slabs (B, S, h, w) are folded into the batch.

    The loss runs in float32 even under bf16 autocast: SSIM subtracts nearly equal moments.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
        self.name = name
        self.ssim = SSIMLoss(win_size=SSIM_WINDOW)

    def forward(self, estimate: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        device_type = estimate.device.type
        available = torch.amp.is_autocast_available(device_type)  # not on meta (the planner's shapes-only runs)
        with torch.autocast(device_type, enabled=False) if available else contextlib.nullcontext():
            if estimate.dim() == 4:
                max_value = max_value.repeat_interleave(estimate.shape[1])
            estimate = estimate.float().reshape(-1, 1, *estimate.shape[-2:])
            target = target.float().reshape(-1, 1, *target.shape[-2:])
            max_value = max_value.float().clamp_min(1e-12)
            scale = max_value.view(-1, 1, 1, 1)
            error = estimate / scale - target / scale
            if self.name == "ssim":
                return self.ssim(estimate, target, max_value)
            if self.name == "ssim-l1":
                return self.ssim(estimate, target, max_value) + L1_WEIGHT * error.abs().mean()
            return error.abs().mean() if self.name == "l1" else error.square().mean()


def mean_mse(estimates: Sequence[Tensor], target: Tensor) -> Tensor:
    """Mean squared error averaged over the returned estimates (one for the i-RIM, every step for the RIM)."""
    return sum(torch.nn.functional.mse_loss(e, target) for e in estimates) / len(estimates)


def normalised_kspace_loss(predicted: Tensor, measured: Tensor) -> Tensor:
    """SSDU's loss on held-out k-space (Yaman et al. 2020): ||y - ŷ||₂/||y||₂ + ||y - ŷ||₁/||y||₁, batch mean.

    Both are complex ``(B, ...)``, already restricted to the loss lines; a sample with no loss lines
    (all zero) contributes 0.
    """
    error = (measured - predicted).flatten(1)
    measured = measured.flatten(1)
    l2 = torch.linalg.vector_norm(error, dim=1) / torch.linalg.vector_norm(measured, dim=1).clamp_min(1e-12)
    l1 = error.abs().sum(dim=1) / measured.abs().sum(dim=1).clamp_min(1e-12)
    return (l2 + l1).mean()

"""Self-supervised training by data undersampling (SSDU, Yaman et al. 2020): no target images needed.

Each sample's acquired lines (the file's own mask, or the training mask) are split at random into Θ
and Λ (:mod:`irecon.data.splits`). The model sees only the k-space on Θ; its complex estimate is
taken to k-space and compared with the measured k-space on Λ by the normalised L1+L2 loss
(:func:`irecon.losses.normalised_kspace_loss`). A model whose estimate is one complex image for
multi-coil data (the i-RIM's ``official`` head) reaches coil k-space through sensitivity maps
estimated from the calibration lines of its input; a model that outputs coil images (the RIM, the
U-Net, the i-RIM's residual outputs) is compared coil by coil. Validation holds out Λ lines of each
validation volume, split once per file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from irecon.data.datasets import load_volume
from irecon.data.splits import SplitSpec, calibration_lines, split_mask, split_seed
from irecon.data.volumes import VolumeInfo
from irecon.inference import VAL_BATCH
from irecon.losses import normalised_kspace_loss
from irecon.physics import channels_to_complex, fft2c, ifft2c
from irecon.training.options import TrainOptions
from irecon.training.runtime import World

VALIDATION_DRAW = 2**31 - 1  # the draw number of a validation split: one fixed split per file, apart from training's
UNSCORED = {"nmse": math.nan, "psnr": math.nan, "ssim": math.nan}  # no validation volume has a target


def with_targets(volumes: Sequence[VolumeInfo]) -> list[VolumeInfo]:
    """The volumes with a target to score against (all of them in a supervised run)."""
    return [info for info in volumes if info.target_key is not None]


def split_masks(mask: Tensor, spec: SplitSpec, seeds: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """(Θ, Λ) for a batch of masks ``(B, 1, ..., W)``, one seed per sample; same shape and device as ``mask``."""
    theta, loss_set = [], []
    for row, seed in zip(mask.detach().cpu().reshape(mask.shape[0], -1).numpy(), seeds):
        first, second = split_mask(row, spec, seed)
        theta.append(first)
        loss_set.append(second)

    def stacked(rows: list[np.ndarray]) -> Tensor:
        return torch.from_numpy(np.stack(rows)).reshape(mask.shape).to(mask.device, mask.dtype)

    return stacked(theta), stacked(loss_set)


def sensitivity_maps(kspace: Tensor, mask: Tensor) -> Tensor:
    """Coil sensitivities ``(B, C, ..., H, W)``: the calibration lines' coil images over their root-sum-of-squares."""
    rows = mask.detach().cpu().reshape(mask.shape[0], -1).numpy()
    calibration = torch.from_numpy(np.stack([calibration_lines(r) for r in rows]).astype(np.float32))
    images = ifft2c(kspace * calibration.reshape(mask.shape).to(kspace.device))
    return images / torch.linalg.vector_norm(images, dim=1, keepdim=True).clamp_min(1e-12)


def predicted_kspace(estimate: Tensor, kspace: Tensor, mask: Tensor) -> Tensor:
    """The full k-space per coil of a model's complex estimate ``(B, 2C', ...)``, C' the data's coils or 1.

    A one-image estimate of multi-coil data goes through the maps of ``kspace`` on ``mask``'s calibration lines.
    """
    image = channels_to_complex(estimate.float())
    if image.shape[1] != kspace.shape[1]:
        image = image * sensitivity_maps(kspace, mask)
    return fft2c(image)


def heldout_loss(model: nn.Module, kspace: Tensor, theta: Tensor, loss_set: Tensor, seen_weight: float = 0.0) -> Tensor:
    """The k-space loss on Λ of ``model`` fed only the k-space on Θ (mean over a RIM's steps).

    ``seen_weight`` adds that multiple of the same loss on Θ: the models have no hard data
    consistency at their output, so nothing else ties their estimate to the lines they were given
    (the calibration region, which holds most of the image's energy, is never in Λ).
    """
    given = kspace * theta
    losses = []
    for estimate in model(given, theta, complex_output=True):
        predicted = predicted_kspace(estimate, given, theta)
        loss = normalised_kspace_loss(predicted * loss_set, kspace * loss_set)
        if seen_weight:
            loss = loss + seen_weight * normalised_kspace_loss(predicted * theta, given)
        losses.append(loss)
    return torch.stack(losses).mean()


class SelfSupervision:
    """The SSDU training loss and its validation loss for one run."""

    def __init__(self, spec: SplitSpec, splits: int, seed: int, seen_weight: float) -> None:
        spec.validate()
        self.spec, self.splits, self.seed, self.seen_weight = spec, splits, seed, seen_weight

    @classmethod
    def of(cls, options: TrainOptions) -> SelfSupervision | None:
        """The run's self-supervision, or None for a supervised run."""
        if not options.self_supervised:
            return None
        spec = SplitSpec(options.ssdu_rho, options.ssdu_selection)
        return cls(spec, options.ssdu_splits, options.seed, options.ssdu_seen_weight)

    def loss(
        self, network: nn.Module, kspace: Tensor, mask: Tensor, names: Sequence[str], slices: Tensor, epoch: int
    ) -> Tensor:
        """The batch's k-space loss over ``splits`` fresh splits per sample (seeded by run, epoch, file, slice, draw)."""
        seeds = [
            split_seed(self.seed, epoch, name, int(index), draw)
            for draw in range(self.splits)
            for name, index in zip(names, slices)
        ]
        repeated = kspace.repeat(self.splits, *([1] * (kspace.dim() - 1)))
        theta, loss_set = split_masks(mask.repeat(self.splits, *([1] * (mask.dim() - 1))), self.spec, seeds)
        return heldout_loss(network, repeated, theta, loss_set, self.seen_weight)

    @torch.inference_mode()
    def validate(
        self,
        model: nn.Module,
        volumes: Sequence[VolumeInfo],
        options: TrainOptions,
        world: World,
        device: torch.device | None = None,
    ) -> float:
        """Mean k-space loss per slice on held-out lines of every rank's validation volumes (every rank calls this).

        The volumes are masked as validation masks them (``options``); a volume whose mask has no line
        outside the calibration region is left out; NaN when all are. ``device``: the model's.
        """
        device = next(model.parameters()).device if device is None else device
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for info in volumes:
                volume = load_volume(info.path, options.val_mask_spec, info, options.virtual_coils)
                seed = split_seed(self.seed, 0, info.path.name, 0, VALIDATION_DRAW)
                theta, loss_set = split_masks(volume.mask, self.spec, [seed])
                if not loss_set.any():  # only calibration lines acquired: nothing to hold out
                    continue
                theta, loss_set = theta.to(device), loss_set.to(device)
                slices = volume.kspace.shape[0]
                if getattr(model, "dims", 2) == 3:
                    kspace = volume.kspace.to(device).transpose(0, 1).unsqueeze(0)
                    total += float(heldout_loss(model, kspace, theta.unsqueeze(0), loss_set.unsqueeze(0))) * slices
                else:
                    for start in range(0, slices, VAL_BATCH):
                        kspace = volume.kspace[start : start + VAL_BATCH].to(device)
                        total += float(heldout_loss(model, kspace, theta, loss_set)) * kspace.shape[0]
                count += slices
        finally:
            model.train(was_training)
        sums = world.all_reduce(torch.tensor([total, count], dtype=torch.float64, device=device))
        return float(sums[0] / sums[1]) if float(sums[1]) else math.nan

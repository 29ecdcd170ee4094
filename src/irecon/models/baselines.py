"""The non-iterative baselines: zero-filled (no parameters) and fastMRI's U-Net on its magnitude."""

from __future__ import annotations

from fastmri.models import Unet
from torch import Tensor, nn

from irecon.physics import root_sum_of_squares_image, zero_filled


class ZeroFilled(nn.Module):
    """RSS magnitude of the zero-filled image A^H d; the reference every model must beat."""

    def __init__(self, *, coils: int = 1, dims: int = 2) -> None:
        super().__init__()
        self.coils, self.dims = coils, dims

    def forward(self, kspace: Tensor, mask: Tensor, complex_output: bool = False) -> list[Tensor]:
        image = zero_filled(kspace, mask)
        return [image if complex_output else root_sum_of_squares_image(image)]


class UNetBaseline(nn.Module):
    """fastmri.models.Unet on the instance-normalised zero-filled magnitude (as fastMRI's baseline)."""

    def __init__(self, *, coils: int = 1, dims: int = 2, chans: int = 32, num_pool_layers: int = 4) -> None:
        super().__init__()
        if dims != 2:
            raise ValueError("the U-Net baseline is 2-D only")
        self.coils, self.dims = coils, dims
        self.unet = Unet(in_chans=1, out_chans=1, chans=chans, num_pool_layers=num_pool_layers)

    def forward(self, kspace: Tensor, mask: Tensor, complex_output: bool = False) -> list[Tensor]:
        """The magnitude image; with ``complex_output`` coil images: each zero-filled coil image rescaled to it.

        The U-Net sees magnitudes only, so its coil images borrow phase and coil weighting from the
        zero-filled image: coil c = zero-filled coil c x (U-Net magnitude / zero-filled magnitude).
        """
        channels = zero_filled(kspace, mask)
        zero_magnitude = root_sum_of_squares_image(channels)
        image = zero_magnitude.unsqueeze(1)
        mean = image.mean(dim=(-2, -1), keepdim=True)
        std = image.std(dim=(-2, -1), keepdim=True) + 1e-11
        normalised = ((image - mean) / std).clamp(-6, 6)
        magnitude = (self.unet(normalised) * std + mean).squeeze(1)
        if not complex_output:
            return [magnitude]
        return [channels * (magnitude / zero_magnitude.clamp_min(1e-12)).unsqueeze(1)]

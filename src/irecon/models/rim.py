"""The RIM baseline of the i-RIM paper's appendix B (Lonning et al.-style), single- and multi-coil.

Per step: [estimate | data-consistency gradient] -> conv 5x5 -> ReLU -> conv-GRU 1x1 -> conv 3x3
(dilation 2) -> ReLU -> conv-GRU 1x1 -> conv 3x3 without bias -> update added to the estimate.
Plain autograd: its training memory grows with the number of steps (the point of comparison).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irecon.models.irim import input_scale
from irecon.physics import data_consistency_gradient, root_sum_of_squares_image, zero_filled


class ConvGRUCell(nn.Module):
    """GRU over channels with 1x1 convolutions: h' = (1 - z) h + z n (the official role of z)."""

    def __init__(self, channels: int, hidden: int, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.hidden = hidden
        self.input_gates = conv(channels, 3 * hidden, 1)
        self.hidden_gates = conv(hidden, 3 * hidden, 1)
        for layer in (self.input_gates, self.hidden_gates):
            nn.init.orthogonal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, h: Tensor | None) -> Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
        xz, xr, xn = self.input_gates(x).chunk(3, dim=1)
        hz, hr, hn = self.hidden_gates(h).chunk(3, dim=1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        n = torch.tanh(xn + r * hn)
        return h + z * (n - h)


class ConvNonlinear(nn.Module):
    """Replication-padded convolution followed by ReLU (padding keeps the spatial size)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, dilation: int = 1, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.pad = dilation * (kernel - 1) // 2
        self.conv = conv(n_in, n_out, kernel, dilation=dilation)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, [self.pad] * (2 * (x.dim() - 2)), mode="replicate")
        return F.relu(self.conv(x))


class RIM(nn.Module):
    """Recurrent Inference Machine; returns the magnitude estimate of every step (B, [S,] H, W)."""

    def __init__(
        self,
        *,
        coils: int = 1,
        dims: int = 2,
        steps: int = 8,
        hidden: int = 64,
        norm_crop: tuple[int, int] = (320, 320),
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.coils, self.dims, self.num_steps = coils, dims, steps
        self.norm_crop = tuple(norm_crop)
        image_channels = 2 * coils
        self.enc1 = ConvNonlinear(2 * image_channels, hidden, 5, dims=dims)
        self.gru1 = ConvGRUCell(hidden, hidden, dims)
        self.enc2 = ConvNonlinear(hidden, hidden, 3, dilation=2, dims=dims)
        self.gru2 = ConvGRUCell(hidden, hidden, dims)
        self.out = conv(hidden, image_channels, 3, bias=False)
        nn.init.kaiming_normal_(self.out.weight, nonlinearity="relu")

    def forward(self, kspace: Tensor, mask: Tensor, complex_output: bool = False) -> list[Tensor]:
        """Every step's magnitude image; with ``complex_output`` every step's coil-image channels."""
        estimate = zero_filled(kspace, mask)
        scale = input_scale(estimate, self.norm_crop)
        estimate, scaled = estimate / scale, kspace / scale
        h1 = h2 = None
        estimates = []
        for _ in range(self.num_steps):
            gradient = data_consistency_gradient(estimate, scaled, mask)
            z = self.enc1(torch.cat([estimate, gradient], dim=1))
            h1 = self.gru1(z, h1)
            h2 = self.gru2(self.enc2(h1), h2)
            update = self.out(F.pad(h2, [1] * (2 * (h2.dim() - 2)), mode="replicate"))
            estimate = estimate + update
            step = estimate * scale
            estimates.append(step if complex_output else root_sum_of_squares_image(step))
        return estimates

"""The invertible Recurrent Inference Machine (i-RIM), 2-D and 3-D, single- and multi-coil.

State layout (``n_latent`` channels): [image estimate: ``multiplicity`` copies of the zero-filled
image, all real parts then all imaginary parts | gradient accumulator (same size) | free channels].
The unrolled model is DC, then for each of T steps an invertible stack of L layers followed by DC,
where DC adds the data-consistency gradient into the accumulator. The whole chain runs through the
memory-free engine, so training memory does not grow with T or L.

Outputs (:data:`OUTPUTS`): ``official`` is the official parametric head alone (it starts random);
``residual`` adds the head to the state's image channels (mean over the copies), per coil;
``residual-rss`` adds a one-channel head to the root-sum-of-squares of those channels. Both residual
heads start with a zero last gain, so the untrained model returns the state's own image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from irecon.invertible.engine import InvertibleOp, invertible_chain, reverse_chain
from irecon.invertible.layers import DataConsistencyLayer, InvertibleLayer
from irecon.models.names import IRIM_OUTPUTS
from irecon.physics import (
    center_crop,
    data_consistency_gradient,
    data_consistency_vjp,
    root_sum_of_squares_image,
    zero_filled,
)


def input_scale(image: Tensor, crop: tuple[int, int]) -> Tensor:
    """Per-sample std of the central crop of an image-channel tensor, + 1e-6, shaped to broadcast.

    The official i-RIM divides its input by this and multiplies its output back.
    """
    size = (min(crop[0], image.shape[-2]), min(crop[1], image.shape[-1]))
    central = center_crop(image, size).flatten(1)
    std = central.std(dim=1) + 1e-6
    return std.view(-1, *([1] * (image.dim() - 1)))


OUTPUTS = IRIM_OUTPUTS


class OutputHead(nn.Module):
    """The parametric output: WN 1x1 -> ReLU -> WN 3x3 -> ReLU -> WN transposed 1x1 to ``out`` channels.

    ``zero_start`` sets the last weight-norm gain to 0, so the head starts as the zero map.
    """

    def __init__(self, channels: int, dims: int, out: int = 2, zero_start: bool = False) -> None:
        super().__init__()
        conv, conv_t = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        last = weight_norm(conv_t(channels, out, 1, bias=False))
        if zero_start:
            with torch.no_grad():
                last.parametrizations.weight.original0.zero_()
        self.layers = nn.Sequential(
            weight_norm(conv(channels, channels, 1)),
            nn.ReLU(),
            weight_norm(conv(channels, channels, 3, padding=1)),
            nn.ReLU(),
            last,
        )

    def forward(self, state: Tensor) -> Tensor:
        return self.layers(state)


class IRIM(nn.Module):
    """i-RIM mapping masked k-space (B, coils, [S,] H, W) and mask to magnitude images (B, [S,] H, W).

    ``keep_step_states`` (memory-free only) also keeps the exact state after every DC layer but
    the last, at most T more states, so backward's float round-off cannot build up across steps; memory
    then grows by one state per step and stays flat in the layers per step.
    """

    def __init__(
        self,
        *,
        coils: int = 1,
        dims: int = 2,
        n_latent: int = 64,
        multiplicity: int = 1,
        steps: int = 8,
        strides: Sequence[int] = (1, 1, 2, 2, 4, 4, 2, 2, 1, 1),
        hidden: Sequence[int] = (8, 8, 32, 32, 128, 128, 32, 32, 8, 8),
        shared_weights: bool = False,
        parametric_output: bool = True,
        output: str = "official",
        num_reflections: int = 3,
        norm_crop: tuple[int, int] = (320, 320),
        memory_free: bool = True,
        keep_step_states: bool = False,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if len(strides) != len(hidden):
            raise ValueError(f"strides ({len(strides)}) and hidden ({len(hidden)}) need one value per layer")
        self.image_channels = 2 * coils * multiplicity
        if n_latent < 2 * self.image_channels:
            raise ValueError(
                f"n_latent={n_latent} is too small: it needs 2 x {self.image_channels} image/gradient channels"
            )
        self.coils, self.dims, self.n_latent = coils, dims, n_latent
        self.multiplicity = multiplicity
        self.norm_crop = tuple(norm_crop)
        self.memory_free = memory_free
        self.keep_step_states = keep_step_states

        def make_step() -> nn.ModuleList:
            return nn.ModuleList(
                InvertibleLayer(n_latent, k, d, dims, num_reflections) for d, k in zip(strides, hidden)
            )

        shared = make_step() if shared_weights else None
        self.steps = nn.ModuleList(shared if shared is not None else make_step() for _ in range(steps))
        self.data_consistency = DataConsistencyLayer(
            self.image_channels, data_consistency_gradient, data_consistency_vjp
        )
        self.output = output if parametric_output else "official"
        head_channels = {"official": 2, "residual": 2 * coils, "residual-rss": 1}[self.output]
        residual = self.output != "official"
        self.head = OutputHead(n_latent, dims, head_channels, residual) if parametric_output else None

    def ops(self) -> list[InvertibleOp]:
        """The whole invertible part as one flat chain: DC, then (layers..., DC) per step."""
        ops: list[InvertibleOp] = [self.data_consistency]
        for step in self.steps:
            for layer in step:
                ops += layer.ops()
            ops.append(self.data_consistency)
        return ops

    def step_boundaries(self) -> list[int]:
        """Positions in :meth:`ops` of the DC layers: before the first step and after each step."""
        return [i for i, op in enumerate(self.ops()) if op is self.data_consistency]

    def initial_state(self, kspace: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(state, scaled k-space, scale): the zero-filled image in its copies, zeros elsewhere."""
        image = zero_filled(kspace, mask)
        scale = input_scale(image, self.norm_crop)
        image = image / scale
        batch, _, *spatial = image.shape
        state = image.new_zeros(batch, self.n_latent, *spatial)
        half, m = self.image_channels // 2, self.multiplicity
        state[:, :half] = image[:, : self.coils].repeat(1, m, *([1] * len(spatial)))
        state[:, half : 2 * half] = image[:, self.coils :].repeat(1, m, *([1] * len(spatial)))
        return state, kspace / scale, scale

    def run_state(self, kspace: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(final state, scaled k-space, scale): the invertible part, memory-free or plain."""
        state, scaled, scale = self.initial_state(kspace, mask)
        keep = self.step_boundaries() if self.keep_step_states else ()
        state = invertible_chain(
            state, self.ops(), (scaled, mask), memory_free=self.memory_free, inplace=True, keep=keep
        )
        return state, scaled, scale

    def reverse_state(self, state: Tensor, scaled_kspace: Tensor, mask: Tensor) -> Tensor:
        """Exact inverse of the invertible part (steps visited last to first)."""
        return reverse_chain(state, self.ops(), (scaled_kspace, mask))

    def state_image(self, state: Tensor, copies: int) -> Tensor:
        """The state's image channels ``[Re | Im]`` per data coil: the first copy, or the mean of ``copies``."""
        half, c = self.image_channels // 2, self.coils
        real = state[:, :half].unflatten(1, (self.multiplicity, c))[:, :copies].mean(dim=1)
        imag = state[:, half : 2 * half].unflatten(1, (self.multiplicity, c))[:, :copies].mean(dim=1)
        return torch.cat([real, imag], dim=1)

    def complex_estimate(self, state: Tensor, scale: Tensor) -> Tensor:
        """Complex image channels ``[Re | Im]`` (B, 2C, [S,] H, W) in the input's units (C = 1 for the official head).

        ``residual-rss`` has a magnitude head only: its coil images are the state's, rescaled to its magnitude.
        """
        if self.head is None:
            return self.state_image(state, 1) * scale
        if self.output == "official":
            return self.head(state) * scale
        image = self.state_image(state, self.multiplicity)
        if self.output == "residual":
            return (image + self.head(state)) * scale
        magnitude = root_sum_of_squares_image(image).unsqueeze(1)
        return image * ((magnitude + self.head(state)) / magnitude.clamp_min(1e-12)) * scale

    def estimate(self, state: Tensor, scale: Tensor) -> Tensor:
        """Magnitude image (B, 1, [S,] H, W) from the final state, rescaled to the input's units."""
        if self.output == "residual-rss" and self.head is not None:
            image = self.state_image(state, self.multiplicity)
            return (root_sum_of_squares_image(image).unsqueeze(1) + self.head(state)) * scale
        return root_sum_of_squares_image(self.complex_estimate(state, scale)).unsqueeze(1)

    def forward(self, kspace: Tensor, mask: Tensor, complex_output: bool = False) -> list[Tensor]:
        """Magnitude images (B, [S,] H, W); with ``complex_output`` the complex channels of :meth:`complex_estimate`."""
        state, _, scale = self.run_state(kspace, mask)
        if complex_output:
            return [self.complex_estimate(state, scale)]
        return [self.estimate(state, scale).squeeze(1)]

"""The reconstruction function in the form exporters accept: real tensors in, magnitude images out.

``torch.onnx.export(dynamo=True)`` and ``torch.jit.trace`` meet five things in an irecon model they
cannot carry, each replaced here by the same mathematics in plain real tensor ops:

* complex tensors and ``torch.fft`` (``fastmri.fft2c``): onnxruntime takes no complex inputs, so
  k-space is ``(B, C, [S,] H, W, 2)`` float32 (fastMRI's real layout) and the centred orthonormal DFT
  is a pair of real matrix products per axis, the matrices built from the input's own size at run
  time (so one file serves every size);
* the memory-free ``torch.autograd.Function`` engine: the chain runs through each op's plain
  ``transform`` (the inference path; exactly the same function);
* ``weight_norm`` parametrizations: baked into plain weights first (:func:`plain_model`);
* ``ConvTranspose`` with an ``output_size`` (odd sizes): ONNX fixes ``output_padding`` at export, so
  the transposed conv runs without it and the missing rows are zero padding (:func:`pre_gate_padded`);
* the header-size crop of the input scale (``min(320, H)`` would fix the size): a centred window
  weight computed from the input's size.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from irecon.invertible.coupling import ResidualBlock
from irecon.invertible.engine import invertible_chain
from irecon.models.baselines import ZeroFilled
from irecon.models.configs import ModelConfig
from irecon.models.irim import IRIM

EXPORTABLE = (IRIM, ZeroFilled)


def dft_matrix(n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(real, imaginary) parts of the centred orthonormal DFT matrix of size n (symmetric).

    Entry (j, k) is exp(-2 pi i (j - n//2)(k - n//2) / n) / sqrt(n), which equals
    ``fftshift(fft(ifftshift(x), norm="ortho"))``; the product is reduced mod n in integers first.
    """
    index = torch.arange(n, device=like.device)
    size = torch.full((), n, device=like.device)
    shifted = index - torch.div(size, 2, rounding_mode="floor")
    turns = torch.remainder(shifted[:, None] * shifted[None, :], size).to(like.dtype)
    angle = turns * (2 * math.pi) / size.to(like.dtype)
    scale = torch.rsqrt(size.to(like.dtype))
    return torch.cos(angle) * scale, -torch.sin(angle) * scale


DFT = tuple[Tensor, Tensor, Tensor, Tensor]  # (real, imaginary) DFT matrices over H, then over W


def dft_matrices(image: Tensor) -> DFT:
    """The DFT matrices for the last two dims of ``image``, built once per forward pass."""
    return (*dft_matrix(image.shape[-2], image), *dft_matrix(image.shape[-1], image))


def _axis_dft(re: Tensor, im: Tensor, fr: Tensor, fi: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    """The centred DFT over the last dim of (re, im); its inverse is the conjugate matrix."""
    if inverse:
        fi = -fi
    return re @ fr - im @ fi, re @ fi + im @ fr


def fft2c_real(re: Tensor, im: Tensor, dft: DFT, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """``fastmri.fft2c`` (or ``ifft2c``) over the last two dims of a complex tensor given as (re, im)."""
    hr, hi, wr, wi = dft
    re, im = _axis_dft(re, im, wr, wi, inverse)
    re, im = _axis_dft(re.transpose(-1, -2), im.transpose(-1, -2), hr, hi, inverse)
    return re.transpose(-1, -2), im.transpose(-1, -2)


def _mask(mask: Tensor, dims: int) -> Tensor:
    """A (W,) column mask shaped to broadcast against (B, C, [S,] H, W)."""
    return mask.reshape(*([1] * (dims + 1)), -1)


def zero_filled_real(kspace: Tensor, mask: Tensor, dft: DFT) -> Tensor:
    """``physics.zero_filled`` for real k-space (B, C, [S,] H, W, 2): channels [all Re | all Im]."""
    re, im = fft2c_real(kspace[..., 0] * mask, kspace[..., 1] * mask, dft, inverse=True)
    return torch.cat((re, im), dim=1)


def dc_gradient_real(image: Tensor, kspace: Tensor, mask: Tensor, *dft: Tensor) -> Tensor:
    """``physics.data_consistency_gradient`` with real k-space (B, C, [S,] H, W, 2), multiplicity included."""
    re, im = image.chunk(2, dim=1)
    kr, ki = fft2c_real(re, im, dft)
    dr, di = kspace[..., 0], kspace[..., 1]
    copies = re.shape[1] // dr.shape[1]
    if copies > 1:
        kr, ki = kr.unflatten(1, (copies, -1)), ki.unflatten(1, (copies, -1))
        dr, di, mask = dr.unsqueeze(1), di.unsqueeze(1), mask.unsqueeze(1)
    rr, ri = (kr * mask - dr) * mask, (ki * mask - di) * mask
    if copies > 1:
        rr, ri = rr.flatten(1, 2), ri.flatten(1, 2)
    gr, gi = fft2c_real(rr, ri, dft, inverse=True)
    return torch.cat((gr, gi), dim=1)


def centred_window(size: int, crop: int, like: Tensor) -> Tensor:
    """1.0 on the centred ``min(crop, size)`` entries of a length-``size`` axis (fastMRI's crop offsets), else 0."""
    index = torch.arange(size, device=like.device)
    total = torch.full((), size, device=like.device)
    length = torch.clamp(total, max=crop)
    start = torch.div(total - length, 2, rounding_mode="floor")
    return ((index >= start) & (index < start + length)).to(like.dtype)


def input_scale_real(image: Tensor, crop: tuple[int, int]) -> Tensor:
    """``irim.input_scale`` (std of the central crop + 1e-6, unbiased) with the crop as a weight."""
    rows = centred_window(image.shape[-2], crop[0], image)
    cols = centred_window(image.shape[-1], crop[1], image)
    weight = rows[:, None] * cols[None, :]
    count = weight.sum() * image[0].numel() / (image.shape[-2] * image.shape[-1])
    flat_weight = weight.expand_as(image).flatten(1)
    values = image.flatten(1)
    mean = (values * flat_weight).sum(1, keepdim=True) / count
    var = (((values - mean) * flat_weight) ** 2).sum(1) / (count - 1)
    return (var.sqrt() + 1e-6).view(-1, *([1] * (image.dim() - 1)))


class ExportableReconstruction(nn.Module):
    """k-space (B, C, [S,] H, W, 2) float32 and a (W,) column mask -> magnitude images (B, [S,] H, W).

    The same function as the model's ``forward`` (before the header-size crop, which the caller
    applies): zero-filled start, input scaling, the invertible chain with its data-consistency
    layers, the output head and the root-sum-of-squares.
    """

    def __init__(self, config: ModelConfig, weights: dict[str, Tensor]) -> None:
        super().__init__()
        model = plain_model(config, weights)
        if not isinstance(model, EXPORTABLE):
            raise TypeError(f"a {config.kind} model has no exportable form (i-RIM and zero-filled have)")
        self.model = model
        self.dims = model.dims
        self.coils = model.coils
        self.eval()

    def forward(self, kspace: Tensor, mask: Tensor) -> Tensor:
        mask = _mask(mask, self.dims)
        dft = dft_matrices(kspace[..., 0])
        image = zero_filled_real(kspace, mask, dft)
        model = self.model
        if not isinstance(model, IRIM):
            return torch.linalg.vector_norm(image, dim=1)
        scale = input_scale_real(image, model.norm_crop)
        image = image / scale
        kspace = kspace / scale.unsqueeze(-1)
        re, im = image.chunk(2, dim=1)
        copies = (1, model.multiplicity, *([1] * (image.dim() - 2)))
        zeros = image.new_zeros(image.shape[0], model.n_latent - model.image_channels, *image.shape[2:])
        state = torch.cat((re.repeat(copies), im.repeat(copies), zeros), dim=1)
        state = invertible_chain(state, model.ops(), (kspace, mask, *dft), memory_free=False)
        return torch.linalg.vector_norm(model.estimate(state, scale), dim=1)


def pre_gate_padded(block: ResidualBlock, x1: Tensor) -> Tensor:
    """``ResidualBlock.pre_gate`` with the transposed conv's size fix as zero padding.

    With kernel = stride and no bias, the rows and columns ``output_size`` adds to the transposed
    conv's output receive nothing, so padding with zeros is the same; ONNX's ConvTranspose needs its
    ``output_padding`` fixed at export time, the padding may depend on the input's size.
    """
    h = F.relu(block.down(x1))
    h = F.relu(block.mix(h))
    up = block.up(h)
    return F.pad(up, (0, x1.shape[-1] - up.shape[-1], 0, x1.shape[-2] - up.shape[-2]))


def plain_model(config: ModelConfig, weights: dict[str, Tensor]) -> nn.Module:
    """A new model of ``config`` with ``weights``, in eval mode, with weight norm baked into plain weights,
    plain-autograd chains and a data-consistency layer that reads real k-space.

    Built afresh rather than copied: removing a parametrization from a deep copy would edit the
    class the original shares.
    """
    model = config.build(memory_free=False)
    model.load_state_dict(weights)
    model.eval()
    for module in list(model.modules()):
        for name in list(getattr(module, "parametrizations", {}) or {}):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    if isinstance(model, IRIM):
        model.data_consistency.gradient_fn = dc_gradient_real
        for block in model.modules():
            if isinstance(block, ResidualBlock):
                block.pre_gate = types.MethodType(pre_gate_padded, block)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model

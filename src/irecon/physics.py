"""MRI forward model without sensitivity maps: A = P F per coil, its adjoint, and the data-consistency gradient.

Conventions used throughout irecon:

* **Image channels** are real tensors of shape ``(B, 2C, H, W)`` (2-D) or ``(B, 2C, S, H, W)`` (3-D slab),
  with *all real parts first, then all imaginary parts*: channel ``c`` is Re of coil ``c`` and channel
  ``C + c`` is Im of coil ``c`` (the official i-RIM layout, not interleaved). With multiplicity ``m`` the
  ``C = m * C_data`` coils are ``m`` stacked copies: copy ``j`` is coils ``j*C_data .. (j+1)*C_data - 1``
  in the real block and likewise in the imaginary block.
* **k-space** is a complex tensor ``(B, C, [S,] H, W)``, complex64 for float32 images and complex128 for
  float64 images.
* **mask** is a real or bool tensor broadcastable to the k-space, typically ``(B, 1, [1,] 1, W)`` with the
  sampled columns set to 1. It is the diagonal sampling operator ``P`` (real, so ``P^T = P``).
* **F** is the centred orthonormal 2-D DFT of fastMRI (``fastmri.fft2c``), applied over the last two dims
  ``(H, W)`` per coil and per slice, so ``F^H = F^{-1}`` and ``||F x|| = ||x||``. There is no FFT along the
  slice dim.
* The data-consistency gradient is ``A^H (A x - d)``, the gradient of ``1/2 ||A x - d||^2``
  (the negative Gaussian log-likelihood gradient with ``sigma = 1``).
"""

from __future__ import annotations

import fastmri
import torch
from fastmri.data.transforms import center_crop as _fastmri_center_crop
from torch import Tensor

__all__ = [
    "adjoint_operator",
    "center_crop",
    "common_crop",
    "channels_to_complex",
    "complex_to_channels",
    "data_consistency_gradient",
    "data_consistency_vjp",
    "fft2c",
    "forward_operator",
    "ifft2c",
    "root_sum_of_squares_image",
    "zero_filled",
]


def complex_to_channels(x: Tensor) -> Tensor:
    """Complex ``(B, C, ...)`` -> real ``(B, 2C, ...)`` as ``[Re c_0..c_{C-1} | Im c_0..c_{C-1}]``."""
    if not x.is_complex():
        raise ValueError(f"expected a complex tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"expected a tensor (B, C, ...), got shape {tuple(x.shape)}")
    return torch.cat((x.real, x.imag), dim=1)


def channels_to_complex(x: Tensor) -> Tensor:
    """Real ``(B, 2C, ...)`` in ``[all Re | all Im]`` layout -> complex ``(B, C, ...)``; one copy."""
    if x.is_complex():
        raise ValueError(f"expected a real channel tensor, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[1] % 2:
        raise ValueError(f"expected an even number of channels in dim 1, got shape {tuple(x.shape)}")
    re, im = x.chunk(2, dim=1)
    return torch.complex(re, im)


def _check_spatial(x: Tensor) -> None:
    if x.dim() < 4:
        raise ValueError(f"expected (B, C, [S,] H, W), got shape {tuple(x.shape)}")


def fft2c(z: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT (``fastmri.fft2c``) of a complex tensor over its last two dims."""
    return torch.view_as_complex(fastmri.fft2c(torch.view_as_real(z)))


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal inverse 2-D FFT (``fastmri.ifft2c``) of a complex tensor over its last two dims."""
    return torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(k)))


def _real_mask(mask: Tensor, like: Tensor) -> Tensor:
    """The mask in the real dtype and device of complex ``like``, so it never promotes the k-space precision."""
    return mask.to(device=like.device, dtype=like.real.dtype)


def _check_kspace(kspace: Tensor) -> None:
    if not kspace.is_complex():
        raise ValueError(f"k-space must be a complex tensor, got dtype {kspace.dtype}")
    _check_spatial(kspace)


def forward_operator(image: Tensor, mask: Tensor) -> Tensor:
    """``A x = P F x``: image channels ``(B, 2C, [S,] H, W)`` -> masked complex k-space ``(B, C, [S,] H, W)``."""
    z = channels_to_complex(image)
    _check_spatial(z)
    k = fft2c(z)
    return k * _real_mask(mask, k)


def adjoint_operator(kspace: Tensor, mask: Tensor) -> Tensor:
    """``A^H d = F^H P^T d``: complex k-space ``(B, C, [S,] H, W)`` -> image channels ``(B, 2C, [S,] H, W)``."""
    _check_kspace(kspace)
    return complex_to_channels(ifft2c(kspace * _real_mask(mask, kspace)))


def zero_filled(kspace: Tensor, mask: Tensor) -> Tensor:
    """Zero-filled reconstruction ``A^H d`` as image channels ``(B, 2C, [S,] H, W)``; same as ``adjoint_operator``."""
    return adjoint_operator(kspace, mask)


def data_consistency_gradient(image: Tensor, kspace: Tensor, mask: Tensor) -> Tensor:
    """``A^H (A x - d)``, the gradient of ``1/2 ||A x - d||^2`` w.r.t. ``x``, as image channels.

    ``image`` is ``(B, 2mC, [S,] H, W)`` and ``kspace`` is ``(B, C, [S,] H, W)`` with an integer
    multiplicity ``m >= 1``; each of the ``m`` image copies gets its own gradient against the same data.
    The data are broadcast over the copies, never replicated. Returns a tensor shaped like ``image``.
    """
    z = channels_to_complex(image)
    m = _multiplicity(z, kspace)
    k, p, d = _per_copy(fft2c(z), kspace, mask, m)
    return _image_channels((k * p - d) * p, m)


def data_consistency_vjp(
    grad: Tensor, kspace: Tensor, mask: Tensor, want_kspace: bool = True
) -> tuple[Tensor, Tensor | None]:
    """dL/d(image) and dL/d(k-space) of :func:`data_consistency_gradient` from ``grad`` = dL/d(its output).

    The map is affine in the image with the self-adjoint linear part ``A^H A``, so dL/d(image) =
    ``A^H A grad`` whatever the image is; the data enter as ``-A^H d``, so dL/dd = ``-A grad`` summed
    over the copies (complex, in torch's convention for complex inputs). No autograd graph is needed.
    """
    z = channels_to_complex(grad)
    m = _multiplicity(z, kspace)
    k, p, _ = _per_copy(fft2c(z), kspace, mask, m)
    measured = k * p
    grad_kspace = None
    if want_kspace:
        grad_kspace = -(measured.sum(1) if m > 1 else measured)
    return _image_channels(measured.mul_(p), m), grad_kspace


def _multiplicity(z: Tensor, kspace: Tensor) -> int:
    """How many copies of the data's coils the complex image ``z`` holds; checks shapes and precision."""
    _check_kspace(kspace)
    _check_spatial(z)
    if z.dtype != kspace.dtype:
        raise ValueError(f"image gives {z.dtype} but k-space is {kspace.dtype}; use matching precision")
    n_coils, n_data = z.shape[1], kspace.shape[1]
    if n_coils % n_data:
        raise ValueError(f"image has {n_coils} coils, not a multiple of the data's {n_data} coils")
    return n_coils // n_data


def _per_copy(k: Tensor, kspace: Tensor, mask: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """(image k-space, mask, data) broadcasting copy by copy: with m > 1 copies the image's k-space
    (B, mC, ...) is viewed as (B, m, C, ...) and the mask and data get a copies dim."""
    p = _real_mask(mask, k)
    if m == 1:
        return k, p, kspace
    p = p.unsqueeze(1) if p.dim() == kspace.dim() else p
    return k.unflatten(1, (m, kspace.shape[1])), p, kspace.unsqueeze(1)


def _image_channels(k: Tensor, m: int) -> Tensor:
    """Image channels of the inverse FFT of k-space laid out by :func:`_per_copy`."""
    return complex_to_channels(ifft2c(k.flatten(1, 2) if m > 1 else k))


def root_sum_of_squares_image(image: Tensor) -> Tensor:
    """Magnitude image ``(B, [S,] H, W)`` from channels: ``sqrt(sum_c |x_c|^2)``.

    With the ``[Re | Im]`` layout this is the 2-norm over dim 1 of the channel tensor itself (what
    ``fastmri.rss(image, dim=1)`` computes). The square root is taken only where the sum is positive,
    so the gradient is 0, not NaN, at pixels where every coil is exactly zero (``vector_norm`` over
    dim 1 does the same, but its CPU kernel is slow over a strided dim).
    """
    if image.is_complex() or image.dim() < 2 or image.shape[1] % 2:
        raise ValueError(f"expected real image channels (B, 2C, ...), got {image.dtype} {tuple(image.shape)}")
    power = image.square().sum(1)
    positive = power > 0
    return torch.where(positive, torch.where(positive, power, 1).sqrt(), 0)


def center_crop(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre crop over the last two dims to ``size = (h, w)``, each clipped to the image (a view).

    The one crop rule of irecon (``fastmri.data.transforms.center_crop`` underneath): outputs are
    cropped to the header's recon size, training estimates to their target's size.
    """
    if min(size) < 1:
        raise ValueError(f"cannot centre-crop shape {tuple(image.shape)} to {tuple(size)}")
    return _fastmri_center_crop(image, (min(size[0], image.shape[-2]), min(size[1], image.shape[-1])))


def common_crop(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Both images centre-cropped to their common size, the region on which a prediction is scored.

    The two sizes differ only when the k-space image is smaller than the header's recon size.
    """
    size = (min(prediction.shape[-2], target.shape[-2]), min(prediction.shape[-1], target.shape[-1]))
    return center_crop(prediction, size), center_crop(target, size)

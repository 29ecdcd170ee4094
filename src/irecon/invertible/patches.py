"""The state's pixels in a patchify conv's patch-major order and back (kernel = stride = patch).

A conv whose kernel equals its stride reads each pixel once: as a GEMM its operand and product are in
patch-major order (B, c, *patch, *low), which the coupling reads and writes through strided views of the
state (:func:`patch_major`) or turns into image order (:func:`patch_image`); :func:`flat_channels` gives
the (B, C, N) GEMM view of a contiguous or channels-last tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def flat_channels(t: Tensor) -> Tensor:
    """(B, C, *spatial) as a (B, C, N) view when its layout is contiguous or channels last, else a copy."""
    if t.is_contiguous():
        return t.view(t.shape[0], t.shape[1], -1)
    last = t.movedim(1, -1)
    return (
        last.view(t.shape[0], -1, t.shape[1]).transpose(1, 2) if last.is_contiguous() else t.reshape(*t.shape[:2], -1)
    )


def patch_major(x: Tensor, patch: Sequence[int]) -> Tensor:
    """View of x (B, c, *size) as (B, c, *patch, *low) over the pixels a kernel = stride = patch conv covers
    (one ``as_strided``: the chunk loops call this on every chunk)."""
    size, strides = x.shape[2:], x.stride()[2:]
    low = [s // p for s, p in zip(size, patch)]
    coarse = [s * p for s, p in zip(strides, patch)]
    return x.as_strided((*x.shape[:2], *patch, *low), (*x.stride()[:2], *strides, *coarse), x.storage_offset())


def write_patch_columns(write: Callable[..., Tensor], target: Tensor, *operands: Tensor, **options: float) -> None:
    """``write(target, *operands, **options)`` (an in-place Tensor method such as ``Tensor.add_``) on same-shape
    (B, c, *patch, *low) patch-major tensors, once per column of the patch.

    On a patch-major view of the state (:func:`patch_major`) one op loops innermost over the few pixels of a
    patch row; once per patch column its inner loop runs along the low-resolution row instead (1.25-2x faster
    for 2- and 4-pixel patches, same values). No view outlives the call, so the operands' buffers are freed
    when the caller drops them.
    """
    m = (target.dim() - 2) // 2
    for column in range(target.shape[1 + m]):
        write(target.select(1 + m, column), *(t.select(1 + m, column) for t in operands), **options)


def patch_image(products: Tensor, size: Sequence[int]) -> Tensor:
    """(B, c, *patch, *low) patch-major products -> the (B, c, *size) image, zero where no patch reaches.

    Patches two pixels wide that tile the image are interleaved by :func:`_interleave_pairs` when no
    gradient is recorded; otherwise a permuted copy (its inner loop runs over the two pixels of a patch row).
    """
    m = (products.dim() - 2) // 2
    patch, low = products.shape[2 : 2 + m], products.shape[2 + m :]
    if _pairs_interleave(products, size):
        return _interleave_pairs(
            products, torch.empty(*products.shape[:2], *size, dtype=products.dtype, device=products.device)
        )
    order = [d for i in range(m) for d in (2 + m + i, 2 + i)]
    image = products.permute(0, 1, *order).reshape(*products.shape[:2], *(lo * p for lo, p in zip(low, patch)))
    padding = [x for s, lo, p in zip(reversed(size), reversed(low), reversed(patch)) for x in (0, s - lo * p)]
    return F.pad(image, padding) if any(padding) else image


def _pairs_interleave(products: Tensor, size: Sequence[int]) -> bool:
    """Whether :func:`_interleave_pairs` takes these products for an image of ``size``: float32 or float64 patches two
    pixels wide that tile it, no gradient recorded (``torch.complex`` with ``out`` has none)."""
    m = (products.dim() - 2) // 2
    patch, low = products.shape[2 : 2 + m], products.shape[2 + m :]
    return (
        patch[-1] == 2
        and products.dtype in (torch.float32, torch.float64)
        and all(lo * p == s for lo, p, s in zip(low, patch, size))
        and not (products.requires_grad and torch.is_grad_enabled())
    )


def _interleave_pairs(products: Tensor, image: Tensor) -> Tensor:
    """Write (B, c, *patch, *low) patch-major products, patches two pixels wide that tile ``image``, into it.

    Viewed as complex numbers, an image row's pixel pairs (patch column 0, 1) are the products' two last
    patch columns as real and imaginary parts, so ``torch.complex`` writes them with one vectorised
    interleave; ``image`` must be contiguous.
    """
    m = (products.dim() - 2) // 2
    patch, low = products.shape[2 : 2 + m], products.shape[2 + m :]
    pairs = [d for lo, p in zip(low[:-1], patch[:-1]) for d in (lo, p)] + [low[-1], 2]
    complex_image = torch.view_as_complex(image.view(*image.shape[:2], *pairs))  # (B, c, low0, p0, ..., low_last)
    order = [0, 1, *(3 + 2 * i for i in range(m - 1)), *(2 + 2 * i for i in range(m))]
    torch.complex(products.select(m + 1, 0), products.select(m + 1, 1), out=complex_image.permute(order))
    return image

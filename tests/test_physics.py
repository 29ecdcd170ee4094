"""Checks of the forward model: adjointness, gradient vs autograd, layout, FFT convention, 3-D slabs."""

from __future__ import annotations

import fastmri
import pytest
import torch
from fastmri.data.transforms import center_crop

from irecon.physics import (
    adjoint_operator,
    channels_to_complex,
    common_crop,
    complex_to_channels,
    data_consistency_gradient,
    forward_operator,
    root_sum_of_squares_image,
    zero_filled,
)
from irecon.physics import (
    center_crop as irecon_center_crop,
)

B, H, W, S = 2, 7, 9, 3
TOL = 1e-12
CASES = [(1, None), (3, None), (1, S), (3, S)]  # (coils, slices or None for 2-D)
IDS = ["2d-1coil", "2d-3coil", "3d-1coil", "3d-3coil"]


def spatial(coils: int, slices: int | None) -> tuple[int, ...]:
    """Shape (B, coils, [S,] H, W)."""
    return (B, coils, H, W) if slices is None else (B, coils, slices, H, W)


def random_image(gen: torch.Generator, coils: int, slices: int | None, dtype=torch.float64) -> torch.Tensor:
    shape = list(spatial(coils, slices))
    shape[1] *= 2
    return torch.randn(shape, generator=gen, dtype=dtype)


def random_kspace(gen: torch.Generator, coils: int, slices: int | None, dtype=torch.complex128) -> torch.Tensor:
    return torch.randn(spatial(coils, slices), generator=gen, dtype=dtype)


def random_mask(gen: torch.Generator, slices: int | None) -> torch.Tensor:
    """Random column mask (B, 1, [1,] 1, W) with at least one sampled column per batch item."""
    shape = (B, 1, 1, W) if slices is None else (B, 1, 1, 1, W)
    mask = torch.rand(shape, generator=gen, dtype=torch.float64) < 0.4
    mask[..., W // 2] = True
    return mask.to(torch.float64)


def cinner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex inner product <a, b> = sum conj(a) b."""
    return (a.conj() * b).sum()


@pytest.mark.parametrize(("coils", "slices"), CASES, ids=IDS)
def test_adjointness(coils: int, slices: int | None) -> None:
    gen = torch.Generator().manual_seed(coils * 10 + (slices or 0))
    for _ in range(3):
        x = random_image(gen, coils, slices)
        y = random_kspace(gen, coils, slices)
        mask = random_mask(gen, slices)
        lhs = cinner(forward_operator(x, mask), y)
        rhs = cinner(channels_to_complex(x), channels_to_complex(adjoint_operator(y, mask)))
        assert abs(lhs - rhs) <= TOL
        # A real-linear map on real channels: the real inner product of the channels matches Re<Ax, y>.
        assert abs(lhs.real - (x * adjoint_operator(y, mask)).sum()) <= TOL


def test_adjointness_with_bool_mask() -> None:
    gen = torch.Generator().manual_seed(7)
    x, y = random_image(gen, 3, None), random_kspace(gen, 3, None)
    mask = random_mask(gen, None)
    assert torch.equal(forward_operator(x, mask.bool()), forward_operator(x, mask))
    assert torch.equal(adjoint_operator(y, mask.bool()), adjoint_operator(y, mask))


def nll(x: torch.Tensor, d: torch.Tensor, mask: torch.Tensor, m: int) -> torch.Tensor:
    """1/2 sum over the m copies of ||A x_j - d||^2, with d replicated explicitly (reference only)."""
    r = forward_operator(x, mask) - torch.cat(m * [d], dim=1)
    return 0.5 * (r.abs() ** 2).sum()


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize(("coils", "slices"), CASES, ids=IDS)
def test_gradient_matches_autograd(coils: int, slices: int | None, m: int) -> None:
    gen = torch.Generator().manual_seed(100 + coils * 10 + (slices or 0) + m)
    x = random_image(gen, m * coils, slices).requires_grad_(True)
    d = random_kspace(gen, coils, slices)
    mask = random_mask(gen, slices)
    (expected,) = torch.autograd.grad(nll(x, d, mask, m), x)
    got = data_consistency_gradient(x.detach(), d, mask)
    assert got.shape == x.shape
    assert (got - expected).abs().max() <= TOL


def test_gradient_copies_are_independent() -> None:
    """With m = 2, copy j's gradient depends only on copy j (channels [j*C:(j+1)*C] and [mC + j*C: ...])."""
    gen = torch.Generator().manual_seed(3)
    c = 3
    d, mask = random_kspace(gen, c, None), random_mask(gen, None)
    x0, x1 = random_image(gen, c, None), random_image(gen, c, None)
    both = torch.cat((x0[:, :c], x1[:, :c], x0[:, c:], x1[:, c:]), dim=1)
    g = data_consistency_gradient(both, d, mask)
    g0, g1 = data_consistency_gradient(x0, d, mask), data_consistency_gradient(x1, d, mask)
    assert (g - torch.cat((g0[:, :c], g1[:, :c], g0[:, c:], g1[:, c:]), dim=1)).abs().max() <= TOL


def test_gradient_with_per_coil_mask_and_multiplicity() -> None:
    """A mask with a full coil dim (B, C, 1, W) still broadcasts against the m copies."""
    gen = torch.Generator().manual_seed(5)
    c, m = 3, 2
    x = random_image(gen, m * c, None).requires_grad_(True)
    d = random_kspace(gen, c, None)
    mask = (torch.rand(B, c, 1, W, generator=gen, dtype=torch.float64) < 0.5).to(torch.float64)
    r = forward_operator(x, torch.cat(m * [mask], dim=1)) - torch.cat(m * [d], dim=1)
    (expected,) = torch.autograd.grad(0.5 * (r.abs() ** 2).sum(), x)
    assert (data_consistency_gradient(x.detach(), d, mask) - expected).abs().max() <= TOL


def test_gradient_differentiable() -> None:
    """Autograd through the gradient itself equals the Hessian-vector product A^H A v."""
    gen = torch.Generator().manual_seed(9)
    x = random_image(gen, 3, S).requires_grad_(True)
    d, mask, v = random_kspace(gen, 3, S), random_mask(gen, S), random_image(gen, 3, S)
    g = data_consistency_gradient(x, d, mask)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    assert (hv - adjoint_operator(forward_operator(v, mask), mask)).abs().max() <= TOL


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize(("coils", "slices"), CASES, ids=IDS)
def test_gradient_zero_at_zero_filled(coils: int, slices: int | None, m: int) -> None:
    gen = torch.Generator().manual_seed(200 + coils + (slices or 0))
    mask = random_mask(gen, slices)
    d = random_kspace(gen, coils, slices) * mask
    y = zero_filled(d, mask)
    assert torch.equal(y, adjoint_operator(d, mask))
    x = torch.cat((torch.cat(m * [y[:, :coils]], 1), torch.cat(m * [y[:, coils:]], 1)), dim=1)
    assert data_consistency_gradient(x, d, mask).abs().max() <= TOL


def test_gradient_rejects_bad_multiplicity() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="multiple"):
        data_consistency_gradient(random_image(gen, 4, None), random_kspace(gen, 3, None), random_mask(gen, None))
    with pytest.raises(ValueError, match="complex"):
        data_consistency_gradient(random_image(gen, 3, None), random_image(gen, 3, None), random_mask(gen, None))
    with pytest.raises(ValueError, match="precision"):
        data_consistency_gradient(
            random_image(gen, 3, None), random_kspace(gen, 3, None, torch.complex64), random_mask(gen, None)
        )


def test_channel_layout_and_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    z = random_kspace(gen, 3, S)
    x = complex_to_channels(z)
    assert x.shape == (B, 6, S, H, W)
    for c in range(3):
        assert torch.equal(x[:, c], z[:, c].real)
        assert torch.equal(x[:, 3 + c], z[:, c].imag)
    assert torch.equal(channels_to_complex(x), z)
    r = random_image(gen, 3, None)
    assert torch.equal(complex_to_channels(channels_to_complex(r)), r)
    with pytest.raises(ValueError, match="even"):
        channels_to_complex(torch.zeros(B, 5, H, W))


def test_fft_convention_matches_fastmri() -> None:
    gen = torch.Generator().manual_seed(2)
    x = random_image(gen, 3, None)
    ones = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    z = channels_to_complex(x)
    k = forward_operator(x, ones)
    ref = torch.view_as_complex(fastmri.fft2c(torch.stack((z.real, z.imag), dim=-1)))
    assert (k - ref).abs().max() <= TOL
    assert abs(torch.linalg.vector_norm(k) - torch.linalg.vector_norm(x)) <= TOL
    back = adjoint_operator(k, ones)
    ref_back = fastmri.ifft2c(torch.view_as_real(k))
    assert (channels_to_complex(back) - torch.view_as_complex(ref_back.contiguous())).abs().max() <= TOL
    assert (back - x).abs().max() <= TOL
    # Centred: a constant image puts all its energy in the centre pixel (H // 2, W // 2).
    const = torch.zeros(1, 2, H, W, dtype=torch.float64)
    const[:, 0] = 1.0
    kc = forward_operator(const, ones)
    assert abs(kc[0, 0, H // 2, W // 2] - (H * W) ** 0.5) <= TOL
    assert kc.abs().sum() - kc[0, 0, H // 2, W // 2].abs() <= TOL


def test_slab_is_per_slice_2d() -> None:
    gen = torch.Generator().manual_seed(4)
    x, d = random_image(gen, 3, S), random_kspace(gen, 3, S)
    mask3 = random_mask(gen, S)
    mask2 = mask3[:, :, 0]
    k3 = forward_operator(x, mask3)
    a3 = adjoint_operator(d, mask3)
    g3 = data_consistency_gradient(x, d, mask3)
    for s in range(S):
        assert torch.equal(k3[:, :, s], forward_operator(x[:, :, s], mask2))
        assert torch.equal(a3[:, :, s], adjoint_operator(d[:, :, s], mask2))
        assert (g3[:, :, s] - data_consistency_gradient(x[:, :, s], d[:, :, s], mask2)).abs().max() <= TOL


def test_float32() -> None:
    gen = torch.Generator().manual_seed(6)
    x = random_image(gen, 3, S, torch.float32)
    d = random_kspace(gen, 3, S, torch.complex64)
    mask = random_mask(gen, S)  # float64 mask must not promote the precision
    assert forward_operator(x, mask).dtype == torch.complex64
    assert adjoint_operator(d, mask).dtype == torch.float32
    g = data_consistency_gradient(torch.cat((x, x), dim=1), d, mask.bool())
    assert g.dtype == torch.float32
    ref = data_consistency_gradient(torch.cat((x, x), dim=1).double(), d.to(torch.complex128), mask)
    assert (g.double() - ref).abs().max() <= 1e-5
    assert root_sum_of_squares_image(x).dtype == torch.float32


def test_root_sum_of_squares() -> None:
    gen = torch.Generator().manual_seed(8)
    x = random_image(gen, 3, S)
    z = channels_to_complex(x)
    ref = fastmri.rss(fastmri.complex_abs(torch.view_as_real(z)), dim=1)
    rss = root_sum_of_squares_image(x)
    assert rss.shape == (B, S, H, W)
    assert (rss - ref).abs().max() <= TOL
    single = root_sum_of_squares_image(x[:, [0, 3]])
    assert (single - z[:, 0].abs()).abs().max() <= TOL
    zero = torch.zeros(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(root_sum_of_squares_image(zero).sum(), zero)
    assert torch.isfinite(grad).all()


def test_center_crop_is_fastmris_crop_clipped_to_the_image() -> None:
    gen = torch.Generator().manual_seed(10)
    x = random_image(gen, 3, S)
    for size in [(7, 9), (3, 5), (4, 4), (1, 1)]:
        got = irecon_center_crop(x, size)
        assert got.shape == (B, 6, S) + size
        assert torch.equal(got, center_crop(x, size))
    assert torch.equal(irecon_center_crop(x, (3, 5)), x[..., 2:5, 2:7])
    assert torch.equal(irecon_center_crop(x, (8, 90)), x)
    with pytest.raises(ValueError):
        irecon_center_crop(x, (0, 9))


def test_common_crop_crops_both_images_to_their_common_size() -> None:
    prediction, target = torch.rand(2, 6, 9), torch.rand(2, 8, 5)
    a, b = common_crop(prediction, target)
    assert a.shape == b.shape == (2, 6, 5)
    assert torch.equal(a, prediction[:, :, 2:7]) and torch.equal(b, target[:, 1:7])

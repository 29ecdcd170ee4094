import torch

from irecon.losses import L1_WEIGHT, ImageLoss


def test_ssim_l1_is_ssim_plus_the_weighted_scaled_l1_and_sees_a_global_scale() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 16, 16) + 0.5
    estimate = target + 0.05 * torch.randn(2, 16, 16)
    max_value = target.flatten(1).amax(dim=1)
    ssim, l1, both = (ImageLoss(n)(estimate, target, max_value) for n in ("ssim", "l1", "ssim-l1"))
    assert torch.allclose(both, ssim + L1_WEIGHT * l1)
    # A 10% brighter target: 1 - SSIM hardly sees it, the L1 term does.
    ssim_scaled, l1_scaled = (ImageLoss(n)(target * 1.1, target, max_value) for n in ("ssim", "l1"))
    assert ssim_scaled < 0.01 and l1_scaled > 0.03

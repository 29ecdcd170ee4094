import torch

from irecon.models.baselines import UNetBaseline, ZeroFilled
from irecon.physics import root_sum_of_squares_image, zero_filled


def test_zero_filled_is_rss_of_adjoint_and_has_no_parameters() -> None:
    mask = torch.ones(1, 1, 1, 8)
    kspace = torch.randn(1, 3, 10, 8, dtype=torch.complex64)
    (image,) = ZeroFilled(coils=3)(kspace, mask)
    assert torch.allclose(image, root_sum_of_squares_image(zero_filled(kspace, mask)))
    assert not list(ZeroFilled().parameters())


def test_unet_keeps_size_and_trains() -> None:
    torch.manual_seed(0)
    model = UNetBaseline(chans=4, num_pool_layers=2)
    mask = (torch.rand(2, 1, 1, 13) > 0.5).float()
    kspace = torch.randn(2, 1, 17, 13, dtype=torch.complex64) * mask
    (image,) = model(kspace, mask)
    assert image.shape == (2, 17, 13)
    image.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_torch_free_preset_names_are_the_presets() -> None:
    from irecon.models.names import PRESET_NAMES
    from irecon.models.presets import PRESETS

    assert PRESET_NAMES == tuple(PRESETS)

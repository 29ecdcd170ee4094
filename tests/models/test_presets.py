import pytest
import torch

from irecon.errors import IreconError
from irecon.models.configs import ModelConfig, config_from_dict
from irecon.models.presets import PRESETS, count_parameters, preset


def _inputs(coils: int, dims: int, spatial: tuple[int, ...], batch: int = 2, dtype=torch.complex64):
    torch.manual_seed(0)
    mask = (torch.rand(batch, 1, *([1] * (len(spatial) - 1)), spatial[-1]) > 0.5).float()
    kspace = torch.randn(batch, coils, *spatial, dtype=dtype) * mask
    return kspace, mask


def _small(name: str, dims: int, coils: int) -> ModelConfig:
    """The preset's structure with tiny widths, so every preset runs in a test."""
    config = preset(name, dims=dims, coils=coils)
    if config.kind == "irim":
        n_latent = max(config.n_latent // 4, 4 * coils * config.multiplicity)
        return preset(name, dims=dims, coils=coils, steps=2, n_latent=n_latent, hidden=tuple(4 for _ in config.strides))
    if config.kind == "rim":
        return preset(name, dims=dims, coils=coils, steps=3, rim_hidden=8)
    if config.kind == "unet":
        return preset(name, coils=coils, unet_chans=4, unet_pools=2)
    return config


CASES = [
    (name, dims, coils)
    for name in PRESETS
    for dims in (2, 3)
    for coils in (1, 3)
    if not (PRESETS[name][0].kind == "unet" and dims == 3)
    and not (name.endswith("-3d") and dims == 2)
    and not (name.endswith("-2d") and dims == 3)
]


@pytest.mark.parametrize("name,dims,coils", CASES)
def test_every_preset_gives_magnitude_images_of_the_input_size(name: str, dims: int, coils: int) -> None:
    spatial = (17, 13) if dims == 2 else (3, 17, 13)
    model = _small(name, dims, coils).build()
    kspace, mask = _inputs(coils, dims, spatial)
    estimates = model(kspace, mask)
    assert isinstance(estimates, list) and estimates
    for estimate in estimates:
        assert estimate.shape == (2, *spatial)
        assert estimate.dtype == torch.float32
        assert torch.isfinite(estimate).all()


def test_challenge_singlecoil_has_the_official_parameter_count() -> None:
    config = preset("challenge-singlecoil")
    assert count_parameters(config) == 275_206_144 + 41_408
    with torch.device("meta"):
        model = config.build()
    assert sum(p.numel() for p in model.steps.parameters()) == 275_206_144
    assert sum(p.numel() for p in model.head.parameters()) == 41_408


def test_challenge_multicoil_and_rim_parameter_counts() -> None:
    assert count_parameters(preset("challenge-multicoil")) == 329_577_472 + 92_832
    assert count_parameters(preset("rim")) == 94_464
    assert count_parameters(preset("zero-filled")) == 0


def test_paper_presets_follow_the_appendix() -> None:
    config = preset("paper-2d")
    assert config.strides == (1, 1, 2, 2, 4, 4, 2, 2, 1, 1)
    assert config.hidden[:8] == (8, 8, 32, 32, 128, 128, 32, 32)
    assert not config.shared_weights and preset("paper-3d").dims == 3


def test_tiny_and_paper_presets_have_the_residual_output_and_challenge_presets_the_official_head() -> None:
    assert {preset(n).output for n in ("tiny-2d", "tiny-3d", "paper-2d", "paper-3d")} == {"residual"}
    assert {preset(n).output for n in ("challenge-singlecoil", "challenge-multicoil")} == {"official"}
    assert preset("tiny-2d", output="residual-rss").output == "residual-rss"
    with pytest.raises(IreconError, match="invalid irim model: unknown output"):
        preset("tiny-2d", output="magnitude").build()


def test_residual_presets_take_the_rss_residual_on_multicoil_data_unless_told_otherwise() -> None:
    assert preset("tiny-2d", coils=4).output == "residual-rss"
    assert preset("paper-3d", coils=2).output == "residual-rss"
    assert preset("tiny-2d", coils=1).output == "residual"
    assert preset("tiny-2d", coils=4, output="residual").output == "residual"
    assert preset("challenge-multicoil").output == "official"


def test_overrides_and_layers() -> None:
    config = preset("paper-2d", steps=3, n_latent=32, layers=4)
    assert (config.steps, config.n_latent, config.layers) == (3, 32, 4)
    assert config.strides == (1, 1, 2, 2)
    assert preset("tiny-2d", layers=6).strides == (1, 2, 2, 1, 1, 2)
    assert preset("paper-2d", steps=None).steps == 8


def test_bad_names_and_options_are_user_errors() -> None:
    with pytest.raises(IreconError, match="unknown model preset 'nope'"):
        preset("nope")
    with pytest.raises(IreconError, match="unknown model option"):
        preset("tiny-2d", colour="red")
    with pytest.raises(IreconError, match="n_latent=8 is too small"):
        preset("tiny-2d", n_latent=8, coils=3).build()


def test_config_round_trips_through_plain_dict() -> None:
    config = preset("challenge-multicoil", steps=2)
    values = config.to_dict()
    assert all(not isinstance(v, tuple) for v in values.values())
    assert config_from_dict(values) == config


@pytest.mark.parametrize("name,kind", [("tiny-rim", "rim"), ("tiny-unet", "unet")])
@pytest.mark.parametrize("coils", [1, 4])  # tiny-2d holds at most 4 coils (n_latent 16)
def test_tiny_baselines_are_within_2x_of_tiny_2d_parameters(name: str, kind: str, coils: int) -> None:
    reference = count_parameters(preset("tiny-2d", coils=coils))
    config = preset(name, coils=coils)
    assert config.kind == kind
    assert reference / 2 <= count_parameters(config) <= 2 * reference


def test_tiny_baseline_descriptions_state_their_parameter_counts() -> None:
    for name in ("tiny-rim", "tiny-unet"):
        config, description = PRESETS[name]
        assert f"{count_parameters(config):,} parameters" in description and "tiny-2d" in description

"""SSDU: the held-out lines never reach the model, the loss is zero for exact predictions, every kind trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from irecon.cli import main
from irecon.data.datasets import MRIDataset
from irecon.data.masks import MaskSpec
from irecon.data.splits import SplitSpec, split_seed
from irecon.data.synth import synthesize
from irecon.errors import IreconError
from irecon.models.presets import preset
from irecon.physics import complex_to_channels, ifft2c, root_sum_of_squares_image
from irecon.training.loop import train
from irecon.training.selfsup import SelfSupervision, heldout_loss, predicted_kspace, split_masks
from tests.helpers.training import SIZES, cli_args, make_options

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"steps": 1, "layers": 2}


def undersampled(root: Path, challenge: str = "singlecoil", slices: int = 3) -> Path:
    sizes = {**SIZES, "slices": slices}
    synthesize(root, split="test", volumes=2, seed=3, challenge=challenge, coils=2, acceleration=4, **sizes)
    return root


def first_batch(folder: Path, slab: int = 1) -> tuple[MRIDataset, object]:
    dataset = MRIDataset(sorted(folder.glob("*.h5")), None, train=True, slab=slab, targets=False)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    return dataset, batch


def test_the_held_out_lines_never_reach_the_model(tmp_path: Path) -> None:
    _, batch = first_batch(undersampled(tmp_path))
    model = preset("tiny-2d", **TINY).build()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].clone(), args[1].clone())))
    ssdu = SelfSupervision(SplitSpec(0.4), splits=1, seed=5, seen_weight=0.1)
    seeds = [split_seed(5, 0, n, int(i), 0) for n, i in zip(batch.fname, batch.slice_index)]
    theta, loss_set = split_masks(batch.mask, SplitSpec(0.4), seeds)
    assert loss_set.sum() > 0

    loss = ssdu.loss(model, batch.kspace, batch.mask, batch.fname, batch.slice_index, epoch=0)
    poisoned = batch.kspace * (1 - loss_set)  # the held-out data erased
    poisoned_loss = ssdu.loss(model, poisoned, batch.mask, batch.fname, batch.slice_index, epoch=0)

    (given, mask), (given_poisoned, _) = seen
    assert torch.equal(mask, theta)
    assert torch.all(given * loss_set == 0)  # zero on every held-out line of its own sample
    assert torch.equal(given, given_poisoned)  # what the model saw is blind to the held-out data
    assert float(poisoned_loss.detach()) > float(loss.detach()) + 1  # while the loss sees it


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_the_loss_is_zero_for_a_model_that_predicts_the_data(tmp_path: Path, challenge: str) -> None:
    dataset = MRIDataset(sorted(undersampled(tmp_path, challenge).glob("*.h5")), None, train=True, targets=False)
    full = torch.utils.data.default_collate([dataset[0], dataset[1]]).kspace
    mask = dataset[0].mask.unsqueeze(0).expand(2, -1, -1, -1)
    theta, loss_set = split_masks(mask, SplitSpec(0.4), [1, 2])

    def exact(kspace: torch.Tensor, given_mask: torch.Tensor, complex_output: bool = False) -> list[torch.Tensor]:
        return [complex_to_channels(ifft2c(full))]

    assert float(heldout_loss(exact, full, theta, loss_set)) < 1e-6
    wrong = exact(full, theta)[0] * 0.5
    measured = full * loss_set
    assert torch.allclose(predicted_kspace(wrong, full * theta, theta) * loss_set, measured * 0.5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("tiny-2d", "residual"),
        ("tiny-2d", "residual-rss"),
        ("tiny-2d", "official"),
        ("tiny-rim", None),
        ("tiny-unet", None),
        ("tiny-3d", None),
    ],
)
def test_every_kind_gives_a_complex_estimate_whose_magnitude_is_its_output(name: str, output: str | None) -> None:
    dims = preset(name).dims
    model = preset(name, coils=2, output=output).build().eval()
    if output is not None:  # a residual head starts at zero: give it weights, so the head's part is checked
        torch.manual_seed(0)
        with torch.no_grad():
            model.head.layers[-1].parametrizations.weight.original0.normal_()
    shape = (1, 2, 3, 32, 24) if dims == 3 else (1, 2, 32, 24)
    kspace = torch.randn(shape, dtype=torch.complex64)
    mask = torch.zeros(shape[:-1] + (24,))[..., :1, :].clone()
    mask[..., ::2] = 1
    with torch.no_grad():
        images = model(kspace * mask, mask, complex_output=True)
        magnitudes = model(kspace * mask, mask)
    for image, magnitude in zip(images, magnitudes):
        assert image.shape[1] in (2, 4) and image.shape[2:] == shape[2:]
        torch.testing.assert_close(root_sum_of_squares_image(image), magnitude, rtol=1e-4, atol=1e-5)


def test_memory_free_ssdu_gradients_match_plain_autograd_in_float64(tmp_path: Path) -> None:
    _, batch = first_batch(undersampled(tmp_path))
    kspace = batch.kspace.to(torch.complex128)
    theta, loss_set = split_masks(batch.mask.double(), SplitSpec(0.4), [4, 5])
    grads = []
    for memory_free in (True, False):
        torch.manual_seed(0)
        model = preset("tiny-2d", **TINY).build(memory_free=memory_free).double()
        heldout_loss(model, kspace, theta, loss_set).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(
    ("model", "slab"), [("tiny-2d", None), ("tiny-rim", None), ("tiny-unet", None), ("tiny-3d", 3)]
)
def test_train_self_supervised_on_test_style_files_only(tmp_path: Path, model: str, slab: int | None) -> None:
    data = tmp_path / "data"
    undersampled(data / "train")
    undersampled(data / "val")
    no_layers = {"steps": 1, "layers": None}
    overrides = {"tiny-rim": no_layers, "tiny-unet": {"steps": None, "layers": None}}.get(model, TINY)
    run = tmp_path / "run"
    options = make_options(data, run, model=model, self_supervised=True, slab=slab, batch_size=1, **overrides)
    result = train(options)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert result.global_step == (2 if slab else 6)
    assert math.isfinite(record["train_loss"]) and 0 < record["val_kspace_loss"] < 4
    assert record["val_ssim"] is None and "zero_filled_ssim" not in record  # NaN, nothing to score against
    assert (run / "last.pt").is_file() and not (run / "best.pt").exists()


def test_validation_reports_the_held_out_loss_and_the_usual_metrics_when_targets_exist(tmp_path: Path) -> None:
    data = tmp_path / "data"
    undersampled(data / "train")
    synthesize(data / "val", split="val", volumes=1, seed=2, **SIZES)
    run = tmp_path / "run"
    result = train(make_options(data, run, self_supervised=True, ssdu_splits=2, **TINY))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["val_kspace_loss"]) and 0 < record["val_kspace_loss"] < 4
    assert math.isfinite(record["val_ssim"]) and math.isfinite(record["zero_filled_ssim"])
    assert result.global_step == 3  # 6 slices in batches of 2
    assert (run / "best.pt").is_file()


def test_supervised_training_still_refuses_files_without_targets(tmp_path: Path) -> None:
    with pytest.raises(IreconError, match="training needs a target"):
        MRIDataset(sorted(undersampled(tmp_path).glob("*.h5")), MaskSpec(), train=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ssdu-rho", "1.5"], "--ssdu-rho (the held-out fraction) must be between 0 and 1"),
        (["--ssdu-splits", "0"], "--ssdu-splits must be at least 1"),
        (["--ssdu-seen-weight", "-1"], "--ssdu-seen-weight must be a non-negative number"),
        (["--fit-memory", "1GiB"], "--fit-memory plans a supervised step"),
        (["--tensorboard"], "--tensorboard shows the first validation volume beside its target; it has none"),
    ],
)
def test_bad_ssdu_options_are_one_line_errors_before_anything_is_written(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    data = tmp_path / "data"
    undersampled(data / "train")
    undersampled(data / "val")
    result = CliRunner().invoke(main, ["train", *cli_args(data, tmp_path / "run", "--self-supervised", *extra)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("output", "channels"), [("official", 2), ("residual", 4), ("residual-rss", 4)])
def test_multicoil_loss_through_maps_or_coil_images_has_finite_gradients(
    tmp_path: Path, output: str, channels: int
) -> None:
    dataset = MRIDataset(sorted(undersampled(tmp_path, "multicoil").glob("*.h5")), None, train=True, targets=False)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    theta, loss_set = split_masks(batch.mask, SplitSpec(0.4), [1, 2])
    model = preset("tiny-2d", coils=2, output=output, **TINY).build()
    images = model(batch.kspace * theta, theta, complex_output=True)[0]
    assert images.shape[1] == channels  # one image through the maps, or coil images
    loss = heldout_loss(model, batch.kspace, theta, loss_set, seen_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

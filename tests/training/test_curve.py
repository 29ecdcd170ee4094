"""The training curve: loss with the learning rate, and SSIM, PSNR and NMSE against zero-filled."""

from __future__ import annotations

from irecon.training.curve import training_curve


def record(epoch: int, lr: float, best: bool) -> dict[str, float | int | bool]:
    return {
        "epoch": epoch,
        "train_loss": 0.5 / epoch,
        "val_ssim": 0.6 + epoch / 100,
        "val_psnr": 25.0 + epoch,
        "val_nmse": 0.1 / epoch,
        "lr": lr,
        "best": best,
    }


def test_the_curve_shows_loss_lr_and_every_validation_metric_against_zero_filled() -> None:
    history = [record(1, 1e-3, True), record(2, 1e-3, True), record(3, 5e-4, False)]
    zero = {"ssim": 0.55, "psnr": 24.0, "nmse": 0.2}
    figure = training_curve(history, zero, "ssim", "run my_run: tiny-2d")
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:4] == [
        "training loss and learning rate",
        "validation SSIM (higher is better)",
        "validation PSNR (higher is better)",
        "validation NMSE (lower is better)",
    ]
    (lr_axis,) = [axis for axis in figure.axes if axis.get_ylabel() == "learning rate (dotted)"]
    assert list(lr_axis.lines[0].get_ydata()) == [1e-3, 1e-3, 5e-4]
    for axis, key in zip(figure.axes[1:4], ("ssim", "psnr", "nmse")):
        assert [line.get_label() for line in axis.lines] == ["model", "zero-filled", "best.pt (by SSIM)"]
        assert list(axis.lines[1].get_ydata()) == [zero[key], zero[key]]
        assert list(axis.lines[2].get_xdata()) == [2]
    assert figure.get_suptitle() == "run my_run: tiny-2d"

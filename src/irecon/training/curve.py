"""The training curve: loss and learning rate, and validation SSIM, PSNR and NMSE per epoch against zero-filled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from irecon.figures import new_figure

# (history key, zero-filled key, panel title, axis label) of each validation panel
METRICS = (
    ("val_ssim", "ssim", "validation SSIM (higher is better)", "SSIM"),
    ("val_psnr", "psnr", "validation PSNR (higher is better)", "PSNR (dB)"),
    ("val_nmse", "nmse", "validation NMSE (lower is better)", "NMSE"),
)


def training_curve(
    history: Sequence[dict[str, Any]], zero_filled: dict[str, float] | None, loss: str, title: str = ""
) -> Figure:
    """Four panels per epoch: training loss with the learning rate, then validation SSIM, PSNR and NMSE.

    Each validation panel has zero-filled as a dashed reference line and marks the best epoch
    (the one ``best.pt`` holds, chosen by SSIM).
    """
    figure = new_figure(10, 7)
    (loss_ax, ssim_ax), (psnr_ax, nmse_ax) = figure.subplots(2, 2)
    epochs = [r["epoch"] for r in history]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", color="C0")
    loss_ax.set(xlabel="epoch", ylabel=f"training loss ({'1 - SSIM' if loss == 'ssim' else loss})")
    loss_ax.set_title("training loss and learning rate", fontsize=10)
    lr_ax = loss_ax.twinx()
    lr_ax.step(epochs, [r["lr"] for r in history], where="mid", color="C2", linestyle=":")
    lr_ax.set_ylabel("learning rate (dotted)", color="C2")
    lr_ax.tick_params(axis="y", labelcolor="C2")
    best = [r for r in history if r.get("best")]
    for axis, (key, zero_key, panel, label) in zip((ssim_ax, psnr_ax, nmse_ax), METRICS):
        _metric_panel(axis, epochs, [r[key] for r in history], panel, label)
        if zero_filled and zero_key in zero_filled:
            axis.axhline(zero_filled[zero_key], color="gray", linestyle="--", label="zero-filled")
        if best:
            axis.plot([best[-1]["epoch"]], [best[-1][key]], "r*", markersize=12, label="best.pt (by SSIM)")
        axis.legend(fontsize=8)
    for axis in (loss_ax, ssim_ax, psnr_ax, nmse_ax):
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _metric_panel(axis: Axes, epochs: list[int], values: list[float], panel: str, label: str) -> None:
    axis.plot(epochs, values, marker="o", label="model")
    axis.set(xlabel="epoch", ylabel=label)
    axis.set_title(panel, fontsize=10)

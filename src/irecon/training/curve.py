"""The training curve: loss and validation SSIM per epoch against zero-filled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from irecon.figures import new_figure


def training_curve(
    history: Sequence[dict[str, Any]], zero_filled: dict[str, float] | None, loss: str, title: str = ""
) -> Figure:
    """Training loss and validation SSIM per epoch, with zero-filled SSIM as a reference line."""
    figure = new_figure(9, 3.5)
    loss_ax, ssim_ax = figure.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o")
    loss_ax.set(xlabel="epoch", ylabel=f"training loss ({'1 - SSIM' if loss == 'ssim' else loss})", title="loss")
    ssim_ax.plot(epochs, [r["val_ssim"] for r in history], marker="o", label="model")
    if zero_filled:
        ssim_ax.axhline(zero_filled["ssim"], color="gray", linestyle="--", label="zero-filled")
    best = [r for r in history if r.get("best")]
    if best:
        ssim_ax.plot([best[-1]["epoch"]], [best[-1]["val_ssim"]], "r*", markersize=12, label="best")
    ssim_ax.set(xlabel="epoch", ylabel="SSIM", title="validation SSIM")
    ssim_ax.legend()
    for ax in (loss_ax, ssim_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure

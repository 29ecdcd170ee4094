"""Every picture irecon draws: matplotlib ``Figure`` objects only (no pyplot, no global backend).

Each function builds a figure from plain values; :func:`save_png` writes any of them atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from irecon.files import atomic_write

MIB = 2**20


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | Path, *, overwrite: bool = True, dpi: int = 100) -> None:
    """Write the figure to ``path`` as PNG, atomically (refusing an existing file unless ``overwrite``)."""
    data = png_bytes(figure, dpi)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def training_curve(
    history: Sequence[dict[str, Any]], zero_filled: dict[str, float] | None, loss: str, title: str = ""
) -> Figure:
    """Training loss and validation SSIM per epoch, with zero-filled SSIM as a reference line."""
    figure = _figure(9, 3.5)
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


class MemoryRecord(Protocol):
    """What :func:`memory_sweep` reads of a bench-memory measurement."""

    model: str
    mode: str
    memory_free: bool
    steps: int
    layers_total: int
    peak_bytes: int | None
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    planned_peak_bytes: int | None
    skipped: str | None
    method: str


def memory_sweep(records: Sequence[MemoryRecord], log_scale: bool = False) -> Figure:
    """Peak memory against depth (coupling layers; steps for the RIM), one panel per mode.

    Memory-free i-RIM runs are drawn as the stack the claim is about: weights (parameters,
    gradients, Adam state) below, the rest of the peak above. Skipped plain runs are marked at the
    planner's figure when there is one. Records that carry the CPU storage tracker's figure next to
    a different reported peak get it dashed in the same colour.
    """
    from matplotlib.ticker import MaxNLocator

    modes = sorted({m.mode for m in records}, reverse=True)
    figure = _figure(6 * max(len(modes), 1), 4.4)
    axes = figure.subplots(1, max(len(modes), 1), squeeze=False)[0]
    for ax, mode in zip(axes, modes):
        chosen = [m for m in records if m.mode == mode]
        for label, points in _memory_series(chosen).items():
            measured = sorted((x, m) for x, m in points if m.peak_bytes is not None)
            if measured:
                xs = [x for x, _ in measured]
                (line,) = ax.plot(xs, [m.peak_bytes / MIB for _, m in measured], marker="o", label=label)
                if measured[0][1].memory_free and measured[0][1].model != "rim":
                    weights = [(m.param_bytes + m.grad_bytes + m.optimizer_bytes) / MIB for _, m in measured]
                    peaks = [m.peak_bytes / MIB for _, m in measured]
                    ax.fill_between(xs, 0, weights, color=line.get_color(), alpha=0.30, label=f"{label}: weights")
                    ax.fill_between(
                        xs, weights, peaks, color=line.get_color(), alpha=0.12, label=f"{label}: activations + inputs"
                    )
                tracker = [
                    (x, m.storage_peak_bytes)
                    for x, m in measured
                    if getattr(m, "storage_peak_bytes", None) is not None
                    and getattr(m, "storage_method", None) != m.method
                ]
                if tracker:
                    ax.plot(
                        [x for x, _ in tracker],
                        [b / MIB for _, b in tracker],
                        marker=".",
                        linestyle="--",
                        color=line.get_color(),
                        label=f"{label}, tensors only",
                    )
            skipped = [(x, m) for x, m in points if m.peak_bytes is None]
            for x, m in skipped:
                planned = m.planned_peak_bytes
                y = planned / MIB if planned else None
                if y is not None:
                    ax.plot([x], [y], marker="x", color="red", markersize=9, linestyle="none")
                    ax.annotate(
                        "skipped (planner's figure)", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points"
                    )
                else:
                    ax.axvline(x, color="red", linestyle=":", alpha=0.6)
                    ax.annotate(
                        "skipped",
                        (x, 0),
                        fontsize=7,
                        xytext=(2, 4),
                        textcoords="offset points",
                        xycoords=("data", "axes fraction"),
                    )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("coupling layers in all (T x layers per step; RIM: steps T)")
        ax.set_ylabel("peak memory (MiB)" + (", log scale" if log_scale else ""))
        ax.set_title(f"{mode}: min over batches of peak allocated")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    method = records[0].method if records else ""
    storage_method = getattr(records[0], "storage_method", None) if records else None
    dashed = f"; dashed: {storage_method}" if storage_method and storage_method != method else ""
    figure.suptitle(f"irecon bench-memory (solid: {method}{dashed})", fontsize=9)
    return figure


def _memory_series(records: Sequence[MemoryRecord]) -> dict[str, list[tuple[int, MemoryRecord]]]:
    """Records by line label, each at its depth on the x axis."""
    series: dict[str, list[tuple[int, MemoryRecord]]] = {}
    for m in records:
        engine = "memory-free" if m.memory_free else "plain autograd"
        label = "RIM (plain autograd)" if m.model == "rim" else f"{m.model} {engine}"
        series.setdefault(label, []).append((m.layers_total, m))
    return series


def preview(
    images: Sequence[tuple[str, np.ndarray]],
    errors: Sequence[tuple[str, np.ndarray]],
    title: str,
    top: float | None = None,
) -> Figure:
    """Labelled grey images on one row, on [0, top] or, when ``top`` is None, each on [0, its own max].

    ``errors`` (|error| maps) go on a second row, under the first images, on one shared magma scale
    [0, largest error] with one colour bar.
    """
    columns = max(len(images), len(errors), 1)
    rows = 2 if errors else 1
    figure = _figure(3 * columns + (0.8 if errors else 0), 3 * rows + 0.9)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, (label, image) in zip(axes[0], images):
        vmax = top if top is not None else float(np.max(image)) or None
        axis.imshow(image, cmap="gray", vmin=0, vmax=vmax)
        axis.set_title(label, fontsize=9)
    if errors:
        error_top = max(float(np.max(error)) for _, error in errors) or None
        shown = []
        for axis, (label, error) in zip(axes[1], errors):
            shown.append(axis.imshow(error, cmap="magma", vmin=0, vmax=error_top))
            axis.set_title(label, fontsize=9)
        bar = figure.colorbar(shown[0], ax=list(axes[1][: len(errors)]), shrink=0.85)
        bar.set_label("|error|, one scale for all maps", fontsize=8)
        bar.ax.tick_params(labelsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle(title, fontsize=8)
    return figure

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
    peak_bytes: int | None
    method: str


def memory_sweep(records: Sequence[MemoryRecord]) -> Figure:
    """Training and inference peak memory against depth, memory-free vs plain (and the RIM).

    Records that also carry the CPU storage tracker's figure (``storage_peak_bytes``) next to a
    different reported peak get it drawn dashed in the same colour.
    """
    modes = sorted({m.mode for m in records}, reverse=True)
    figure = _figure(6 * max(len(modes), 1), 4.2)
    axes = figure.subplots(1, max(len(modes), 1), squeeze=False)[0]
    for ax, mode in zip(axes, modes):
        series: dict[str, list[tuple[int, float]]] = {}
        storages: dict[str, list[tuple[int, float]]] = {}
        for m in records:
            if m.mode != mode or m.peak_bytes is None:
                continue
            engine = "memory-free" if m.memory_free else "plain autograd"
            label = "RIM (plain autograd)" if m.model == "rim" else f"{m.model} {engine}"
            series.setdefault(label, []).append((m.steps, m.peak_bytes / MIB))
            storage = getattr(m, "storage_peak_bytes", None)
            if storage is not None and getattr(m, "storage_method", None) != m.method:
                storages.setdefault(label, []).append((m.steps, storage / MIB))
        for label, points in series.items():
            xs, ys = zip(*sorted(points))
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            if label in storages:
                xs, ys = zip(*sorted(storages[label]))
                ax.plot(xs, ys, marker=".", linestyle="--", color=line.get_color(), label=f"{label}, tensors only")
        ax.set_xlabel("time steps T (i-RIM: T x layers coupling layers)")
        ax.set_ylabel("peak memory (MiB)")
        ax.set_title(f"{mode}: min over batches of peak allocated")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    method = records[0].method if records else ""
    storage_method = getattr(records[0], "storage_method", None) if records else None
    dashed = f"; dashed: {storage_method}" if storage_method and storage_method != method else ""
    figure.suptitle(f"irecon bench-memory (solid: {method}{dashed})", fontsize=9)
    return figure


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

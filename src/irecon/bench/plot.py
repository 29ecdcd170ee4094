"""The bench-memory plot: peak memory against depth, memory-free and plain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from matplotlib.figure import Figure

from irecon.figures import new_figure

MIB = 2**20


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
    figure = new_figure(6 * max(len(modes), 1), 4.4)
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

"""The bench-memory plot: peak memory against depth, memory-free and plain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from irecon.figures import new_figure

MIB = 2**20
MODE_TITLES = {"train": "training", "inference": "inference"}


class MemoryRecord(Protocol):
    """What :func:`memory_sweep` reads of a bench-memory measurement."""

    model: str
    mode: str
    memory_free: bool
    steps: int | None
    layers_total: int | None
    peak_bytes: int | None
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    planned_peak_bytes: int | None
    skipped: str | None
    method: str


def memory_sweep(records: Sequence[MemoryRecord], log_scale: bool = False) -> Figure:
    """Peak memory against depth (coupling layers; steps for the RIM), one panel per mode.

    Ticks sit at the measured depths and the legend below the panels; plain runs have hollow
    squares, so a plain line over a memory-free one shows both. Memory-free i-RIM runs are
    drawn as a stack: weights (parameters, gradients, Adam state) below, the rest of the peak above.
    Skipped plain runs are marked at the planner's figure when there is one; a model without depth
    (a U-Net) is a horizontal line. The CPU storage tracker's figure, when it is not the reported
    peak, is dashed in the same colour.
    """
    modes = sorted({m.mode for m in records}, reverse=True) or ["train"]
    figure = new_figure(5.5 * len(modes), 4.6)
    axes = figure.subplots(1, len(modes), squeeze=False)[0]
    handles: dict[str, Any] = {}
    for ax, mode in zip(axes, modes):
        chosen = [m for m in records if m.mode == mode]
        depths = _draw_mode(ax, chosen)
        if depths:
            ax.set_xticks(depths)
        if log_scale:
            ax.set_yscale("log")
        rim = "; RIM: time steps" if any(m.model == "rim" for m in chosen) else ""
        ax.set_xlabel(f"depth: coupling layers in all{rim}")
        ax.set_ylabel("peak memory (MiB)" + (", log scale" if log_scale else ""))
        ax.set_title(MODE_TITLES.get(mode, mode))
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.suptitle("Peak memory vs depth")
    if handles:
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=2,
            fontsize=7,
            frameon=False,
            title=_methods(records),
            title_fontsize=7,
        )
    return figure


def _draw_mode(ax: Axes, records: Sequence[MemoryRecord]) -> list[int]:
    """One panel's lines; returns the depths drawn (the ticks)."""
    depths: set[int] = set()
    for label, points in _memory_series(records).items():
        measured = sorted((x, m) for x, m in points if m.peak_bytes is not None)
        depths.update(x for x, _ in points)
        if not measured:
            _mark_skipped(ax, points)
            continue
        xs = [x for x, _ in measured]
        peaks = [(m.peak_bytes or 0) / MIB for _, m in measured]
        free = measured[0][1].memory_free
        style = {"marker": "o"} if free else {"marker": "s", "markerfacecolor": "none", "markersize": 8}
        (line,) = ax.plot(xs, peaks, label=label, **style)
        if free and measured[0][1].model != "rim":
            weights = [(m.param_bytes + m.grad_bytes + m.optimizer_bytes) / MIB for _, m in measured]
            ax.fill_between(xs, 0, weights, color=line.get_color(), alpha=0.30, label=f"{label}: weights")
            ax.fill_between(
                xs, weights, peaks, color=line.get_color(), alpha=0.12, label=f"{label}: activations + inputs"
            )
        tracker = [
            (x, m.storage_peak_bytes)
            for x, m in measured
            if getattr(m, "storage_peak_bytes", None) is not None and getattr(m, "storage_method", None) != m.method
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
        _mark_skipped(ax, points)
    for m in records:
        if m.layers_total is None and m.peak_bytes is not None:
            ax.axhline(m.peak_bytes / MIB, linestyle="-.", color="grey", label=f"{m.model} (no depth)")
    return sorted(depths)


def _mark_skipped(ax: Axes, points: list[tuple[int, MemoryRecord]]) -> None:
    for x, m in points:
        if m.peak_bytes is not None:
            continue
        if m.planned_peak_bytes:
            y = m.planned_peak_bytes / MIB
            ax.plot(
                [x], [y], marker="x", color="red", markersize=9, linestyle="none", label="skipped: planner's figure"
            )
        else:
            ax.axvline(x, color="red", linestyle=":", alpha=0.6, label="skipped: out of memory")


def _methods(records: Sequence[MemoryRecord]) -> str:
    """The legend's title: how the solid (and dashed) lines were measured."""
    if not records:
        return ""
    method = records[0].method
    storage = getattr(records[0], "storage_method", None)
    return f"solid: {method}" + (f"\ndashed: {storage}" if storage and storage != method else "")


def _memory_series(records: Sequence[MemoryRecord]) -> dict[str, list[tuple[int, MemoryRecord]]]:
    """Records with a depth by line label, each at its depth on the x axis."""
    series: dict[str, list[tuple[int, MemoryRecord]]] = {}
    for m in records:
        if m.layers_total is None:
            continue
        engine = "memory-free" if m.memory_free else "plain autograd"
        label = "RIM (plain autograd)" if m.model == "rim" else f"{m.model} {engine}"
        series.setdefault(label, []).append((m.layers_total, m))
    return series

"""The reconstruction preview: zero-filled, model, target and error of one slice, for an MR reader.

Pixels are drawn nearest-neighbour; each grey image has its own grey-scale bar and states its
window under it; a mm scale bar sits on the first image when the pixel spacing is known, and the
sampling mask is drawn small under the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from irecon.figures import new_figure

# An image whose bright end (99.5th percentile) is off the target's by more than this factor gets
# its own window: on the target's it would be black or white, and a scaling fault would hide.
OFF_SCALE = 4.0
SCALE_LENGTHS_MM = (1, 2, 5, 10, 20, 50, 100, 200)
MASK_LABEL = "sampling mask"


def preview(
    images: Sequence[tuple[str, np.ndarray]],
    errors: Sequence[tuple[str, np.ndarray]],
    title: str,
    top: float | None = None,
    *,
    spacing_mm: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
) -> Figure:
    """Labelled grey images on one row; ``errors`` (|error| maps) on a second, under the first images.

    With ``top`` (the target's max) the grey images share the window [0, top], except one whose
    bright end is more than :data:`OFF_SCALE` times off it, which gets its own; without ``top``
    each is on [0, its own max]. The error maps share one magma scale with one colour bar.
    ``spacing_mm`` (row, column) adds a scale bar; ``mask`` (one value per k-space column) is drawn.
    """
    columns = max(len(images), len(errors), 1)
    rows = 2 if errors else 1
    ratios = [1.0] * rows + ([0.08] if mask is not None else [])
    figure = new_figure(3.4 * columns + (0.6 if errors else 0), 3.4 * rows + 1.2 + (0.5 if mask is not None else 0))
    grid = figure.add_gridspec(len(ratios), columns, height_ratios=ratios)
    for column, (label, image) in enumerate(images):
        axis = figure.add_subplot(grid[0, column])
        low, high, whose = _window(image, top)
        shown = axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(label, fontsize=9)
        axis.set_xlabel(f"window {low:.3g} to {high:.3g} ({whose})", fontsize=7)
        bar = figure.colorbar(shown, ax=axis, shrink=0.8, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        _plain(axis)
        if column == 0 and spacing_mm is not None:
            _scale_bar(axis, image.shape[1], spacing_mm[1])
    if errors:
        error_top = max(float(np.max(error)) for _, error in errors) or None
        error_axes, shown_errors = [], []
        for column, (label, error) in enumerate(errors):
            axis = figure.add_subplot(grid[1, column])
            shown_errors.append(axis.imshow(error, cmap="magma", vmin=0, vmax=error_top, interpolation="nearest"))
            axis.set_title(label, fontsize=9)
            _plain(axis)
            error_axes.append(axis)
        bar = figure.colorbar(shown_errors[0], ax=error_axes, shrink=0.85)
        bar.set_label("|error|, one scale for all maps", fontsize=8)
        bar.ax.tick_params(labelsize=8)
    if mask is not None:
        _mask_strip(figure.add_subplot(grid[-1, 0]), mask)
    figure.suptitle(title, fontsize=8)
    return figure


def _window(image: np.ndarray, top: float | None) -> tuple[float, float, str]:
    """(low, high, whose) of a grey image: the target's [0, top] unless it is off that scale."""
    own = float(np.max(image)) or 1.0
    if top is None or not top > 0:
        return 0.0, own, "its own"
    bright = float(np.percentile(image, 99.5))
    if bright * OFF_SCALE < top or bright > top * OFF_SCALE:
        return 0.0, own, "its own: off the target's scale"
    return 0.0, float(top), "the target's"


def _plain(axis: Axes) -> None:
    """No ticks or frame, but room for the window label under the image."""
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)


def _scale_bar(axis: Axes, width_px: int, column_spacing_mm: float) -> None:
    """A white bar of a round length in mm, about a quarter of the image wide, at the lower left."""
    width_mm = width_px * column_spacing_mm
    length = max((mm for mm in SCALE_LENGTHS_MM if mm <= width_mm / 4), default=SCALE_LENGTHS_MM[0])
    bar = AnchoredSizeBar(
        axis.transData,
        length / column_spacing_mm,
        f"{length} mm",
        "lower left",
        pad=0.3,
        color="white",
        frameon=False,
        size_vertical=max(width_px / 100, 0.5),
        fontproperties={"size": 7},
    )
    axis.add_artist(bar)


def _mask_strip(axis: Axes, mask: np.ndarray) -> None:
    """The sampled k-space columns as a thin white-on-black strip, with their count."""
    line = np.asarray(mask, dtype=np.float32).reshape(1, -1)
    axis.imshow(line, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    _plain(axis)
    sampled = int(line.sum())
    axis.set_xlabel(f"{MASK_LABEL}: {sampled} of {line.shape[1]} k-space columns", fontsize=7)

"""The reconstruction preview: zero-filled, model, target and error of one slice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from irecon.figures import new_figure


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
    figure = new_figure(3 * columns + (0.8 if errors else 0), 3 * rows + 0.9)
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

"""The one home of picture files: matplotlib ``Figure`` objects (no pyplot, no global backend), saved atomically.

Each command draws its own figures beside its code (training curve, preview, bench plot) with :func:`new_figure`
and writes them with :func:`save_png`.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from irecon.files import atomic_write


def new_figure(width: float, height: float) -> Figure:
    """An empty figure with its own Agg canvas and constrained layout."""
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

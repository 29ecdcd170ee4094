"""Reconstruct whole fastMRI volumes: ``options`` (what a run takes), ``run`` (the work), ``report``
(what it did) and ``outputs`` (the files written per volume).

``from irecon.reconstruct import reconstruct, ReconstructOptions`` works; the heavy modules load
only when one of their names is first used, so reading the options stays light.
"""

from __future__ import annotations

from typing import Any

_HOMES = {
    "ReconstructOptions": "irecon.reconstruct.options",
    "ReconstructReport": "irecon.reconstruct.report",
    "VolumeResult": "irecon.reconstruct.report",
    "reconstruct": "irecon.reconstruct.run",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'irecon.reconstruct' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)

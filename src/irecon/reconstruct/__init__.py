"""Reconstruct whole fastMRI volumes: ``options`` (what a run takes, importable without torch),
``run`` (the work), ``report`` (what it did) and ``outputs`` (the files written per volume)."""

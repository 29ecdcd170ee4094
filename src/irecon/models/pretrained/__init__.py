"""The bundled weights: ``manifest.json`` and ``<name>.pt`` checkpoints shipped as package data.

``make pretrained`` (benchmarks/pretrained.py) writes both; :mod:`.registry` reads them.
"""

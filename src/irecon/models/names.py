"""The preset names, importable without torch (for ``--help``); :data:`irecon.models.presets.PRESETS` holds them."""

from __future__ import annotations

PRESET_NAMES = (
    "paper-2d",
    "paper-3d",
    "challenge-singlecoil",
    "challenge-multicoil",
    "rim",
    "unet",
    "zero-filled",
    "tiny-2d",
    "tiny-3d",
    "tiny-rim",
    "tiny-unet",
)

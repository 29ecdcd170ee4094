"""Names importable without torch (for ``--help`` and option checks): the presets and the i-RIM outputs."""

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

# The i-RIM's output heads (irecon.models.irim): "official" starts random; the residual ones start at
# the state's image, per coil ("residual") or on the coil-combined magnitude ("residual-rss").
IRIM_OUTPUTS = ("official", "residual", "residual-rss")

"""SSDU k-space splits: the acquired lines of a mask cut into a set Θ the model sees and a disjoint set Λ for the loss.

Self-supervision via data undersampling (Yaman et al. 2020): a fraction ``rho`` of the acquired
phase-encode lines outside the calibration region goes to Λ, the rest (calibration included) to Θ.
Lines are drawn uniformly or with a Gaussian density centred on k-space's middle column. Every
draw is seeded and uses its own NumPy generator (no global random state), so a split depends only
on its mask and its seed. Masks are 1-D over the phase-encode columns, as :mod:`irecon.data.masks`
draws them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from irecon.errors import IreconError

SELECTIONS = ("uniform", "gaussian")
GAUSSIAN_WIDTH = 0.25  # standard deviation of the Gaussian selection, as a fraction of the mask's width
_SPLIT_STREAM = 2  # salt that separates the split stream from the mask and slab streams of one sample


@dataclass(frozen=True)
class SplitSpec:
    """How to split: ``rho`` = |Λ| / |acquired lines|, and the selection density (uniform or gaussian)."""

    rho: float = 0.4
    selection: str = "uniform"

    def validate(self) -> None:
        """Raise IreconError naming the bad value."""
        if isinstance(self.rho, bool) or not isinstance(self.rho, numbers.Real) or not 0 < self.rho < 1:
            raise IreconError(
                f"«ssdu_rho» (the held-out fraction) must be between 0 and 1 (exclusive), got {self.rho!r}"
            )
        if self.selection not in SELECTIONS:
            raise IreconError(f"«ssdu_selection» must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")


def calibration_lines(mask: np.ndarray) -> np.ndarray:
    """Boolean 1-D array of the calibration region: the run of acquired lines around the middle column.

    fastMRI masks sample a contiguous block at ``W // 2``; an unsampled middle column gives an
    empty region.
    """
    acquired = np.asarray(mask).reshape(-1) > 0
    region = np.zeros_like(acquired)
    middle = acquired.size // 2
    if acquired.size == 0 or not acquired[middle]:
        return region
    left = middle
    while left > 0 and acquired[left - 1]:
        left -= 1
    right = middle
    while right + 1 < acquired.size and acquired[right + 1]:
        right += 1
    region[left : right + 1] = True
    return region


def split_seed(seed: int, epoch: int, fname: str, slice_index: int, draw: int) -> tuple[int, ...]:
    """The seed of one split: the run's seed, the epoch, the slice, which of several draws, and the file name."""
    return (int(seed), int(epoch), int(slice_index), int(draw), _SPLIT_STREAM, *map(ord, fname))


def split_mask(mask: np.ndarray, spec: SplitSpec, seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(Θ, Λ) as float32 1-D masks: disjoint, their sum the acquired mask, the calibration region in Θ.

    Λ holds ``round(rho * acquired)`` lines drawn without replacement from the acquired lines
    outside the calibration region (all of them when there are fewer; none when there are none).
    """
    spec.validate()
    acquired = np.asarray(mask).reshape(-1) > 0
    candidates = np.flatnonzero(acquired & ~calibration_lines(acquired))
    count = min(int(round(spec.rho * int(acquired.sum()))), candidates.size)
    rng = np.random.default_rng(list(seed) if isinstance(seed, Sequence) else int(seed))
    weights = None
    if spec.selection == "gaussian":
        width = acquired.size
        density = np.exp(-0.5 * ((candidates - width // 2) / (GAUSSIAN_WIDTH * width)) ** 2)
        weights = density / density.sum()
    chosen = rng.choice(candidates, size=count, replace=False, p=weights)
    loss_set = np.zeros(acquired.size, dtype=np.float32)
    loss_set[chosen] = 1.0
    return acquired.astype(np.float32) - loss_set, loss_set

"""Cartesian sampling masks, drawn with fastMRI's own mask functions.

The masks come from ``fastmri.data.subsample.create_mask_for_mask_type`` so that irecon's
undersampling matches fastMRI's published baselines exactly. This module adds what fastMRI leaves
out: up-front validation with readable errors (fastMRI#344: fraction masks crash when the centre
alone exceeds the sampling budget), 1-D NumPy masks, and seeds for reproducible per-sample
re-drawing during training. Nothing here touches NumPy's global random state: every mask function
keeps its own ``RandomState``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from irecon.errors import IreconError
from irecon.text import plural

MASK_TYPES = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")
_FRACTION_TYPES = ("equispaced_fraction", "magic_fraction")


@dataclass(frozen=True)
class MaskSpec:
    """Which fastMRI mask to draw: type plus paired centre fractions and accelerations.

    As in fastMRI, each draw picks one (center_fraction, acceleration) pair uniformly; the two
    tuples must have the same length.
    """

    mask_type: str = "random"
    center_fractions: tuple[float, ...] = (0.08,)
    accelerations: tuple[int, ...] = (4,)

    def validate(self) -> None:
        """Raise IreconError naming the offending values when the spec cannot give a valid mask."""
        if self.mask_type not in MASK_TYPES:
            raise IreconError(f"unknown mask type {self.mask_type!r}; choose one of {', '.join(MASK_TYPES)}")
        if not self.center_fractions or not self.accelerations:
            raise IreconError("mask needs at least one center fraction and one acceleration")
        for acceleration in self.accelerations:  # each value first: a bad one is named before any pairing
            if isinstance(acceleration, bool) or not isinstance(acceleration, numbers.Integral):
                raise IreconError(f"acceleration {acceleration!r} is not a whole number")
            if acceleration < 1:
                raise IreconError(f"acceleration {acceleration} is invalid: it must be at least 1")
        for fraction in self.center_fractions:
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
                raise IreconError(f"center fraction {fraction!r} is not a number")
            if not 0 < fraction < 1:
                raise IreconError(f"center fraction {fraction} is not between 0 and 1 (exclusive)")
        if len(self.center_fractions) != len(self.accelerations):
            raise IreconError(
                f"{plural(len(self.center_fractions), 'center fraction')} {_fmt(self.center_fractions)} but "
                f"{plural(len(self.accelerations), 'acceleration')} {_fmt(self.accelerations)}; "
                "they are used in pairs, so give the same number of each"
            )
        for fraction, acceleration in zip(self.center_fractions, self.accelerations):
            if fraction >= 1 / acceleration:
                raise IreconError(
                    f"center fraction {fraction} with acceleration {acceleration}: the fully "
                    f"sampled centre alone takes at least the 1/{acceleration} of lines that "
                    "acceleration allows, leaving none for outer k-space (fastMRI#344); "
                    f"use a center fraction below {1 / acceleration:.4g}"
                )


def seed_for_file(fname: str) -> tuple[int, ...]:
    """The per-volume seed fastMRI's transforms use: the code points of the file name.

    Pass the file name (``Path.name``), not a full path, to reproduce fastMRI's masks.
    """
    return tuple(map(ord, fname))


def make_mask(spec: MaskSpec, num_cols: int, seed: int | tuple[int, ...] | None) -> tuple[np.ndarray, int]:
    """Draw one mask over ``num_cols`` phase-encode lines with fastMRI's mask function.

    Returns the 1-D float32 0/1 mask and the number of fully sampled centre lines. The same seed
    gives the same mask; ``None`` draws fresh randomness. Raises IreconError when the spec, or the
    spec at this width (fastMRI rounds the centre to whole lines), cannot produce a mask.
    """
    spec.validate()
    if num_cols < 1:
        raise IreconError(f"cannot draw a mask over {num_cols} k-space columns")
    if spec.mask_type in _FRACTION_TYPES:
        for fraction, acceleration in zip(spec.center_fractions, spec.accelerations):
            _check_fraction_budget(spec.mask_type, fraction, acceleration, num_cols)
    from fastmri.data.subsample import create_mask_for_mask_type  # imported here: it loads torch

    mask_func = create_mask_for_mask_type(spec.mask_type, list(spec.center_fractions), list(spec.accelerations))
    try:
        mask, num_low_frequencies = mask_func((1, num_cols, 2), seed=seed)
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise IreconError(
            f"cannot draw a {spec.mask_type} mask with center fractions "
            f"{_fmt(spec.center_fractions)} "
            f"and accelerations {_fmt(spec.accelerations)} over {num_cols} columns with seed "
            f"{seed!r}: {exc}"
        ) from None
    return mask.numpy().reshape(num_cols).astype(np.float32), int(num_low_frequencies)


def training_seed(base_seed: int, epoch: int, index: int) -> int:
    """A seed for one training sample, different for every (epoch, index) and fixed by base_seed.

    Masks are re-drawn for every sample and epoch (augmentation), yet a resumed run draws exactly
    the masks it would have drawn. Mixed with NumPy's ``SeedSequence``; the result fits
    ``RandomState`` (0 <= seed < 2**32).
    """
    for name, value in (("seed", base_seed), ("epoch", epoch), ("sample index", index)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise IreconError(f"{name} must be a non-negative integer, got {value!r}")
    return int(np.random.SeedSequence((int(base_seed), int(epoch), int(index))).generate_state(1)[0])


def apply_padding(mask: np.ndarray, padding_left: int, padding_right: int) -> np.ndarray:
    """Copy a mask (columns on the last axis), zeroed outside [padding_left, padding_right).

    This is what fastMRI's ``apply_mask(..., padding=...)`` does for zero-padded k-space columns,
    except that the bounds are clamped to the mask: a negative ``padding_left`` would otherwise
    count from the end and wipe almost the whole mask.
    """
    out = np.array(mask, copy=True)
    width = out.shape[-1]
    left = min(max(int(padding_left), 0), width)
    right = min(max(int(padding_right), left), width)
    out[..., :left] = 0
    out[..., right:] = 0
    return out


def _check_fraction_budget(mask_type: str, fraction: float, acceleration: int, num_cols: int) -> None:
    """Refuse widths where fastMRI's fraction masks divide by zero or draw from an empty range."""
    num_low = round(num_cols * fraction)
    if mask_type == "equispaced_fraction":
        ok = num_low * acceleration < num_cols
    else:
        target = round(num_cols / acceleration)
        ok = target - max(min(num_low, target), 1) > 0
    if not ok:
        raise IreconError(
            f"{mask_type} mask with center fraction {fraction} and acceleration {acceleration} "
            f"is impossible over {num_cols} k-space columns: the {num_low} centre lines use up the "
            f"{num_cols}/{acceleration} lines allowed; "
            "lower the center fraction or the acceleration"
        )


def _fmt(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)


def centre_lines(mask: np.ndarray) -> int:
    """The length of the run of sampled lines around the centre column ``W // 2`` (0 when it is not sampled)."""
    sampled = np.asarray(mask).astype(bool)
    centre = len(sampled) // 2
    if not sampled[centre]:
        return 0
    start, stop = centre, centre
    while start > 0 and sampled[start - 1]:
        start -= 1
    while stop < len(sampled) - 1 and sampled[stop + 1]:
        stop += 1
    return stop - start + 1


def mask_from_sampled_columns(sampled: np.ndarray, padding_left: int, padding_right: int) -> np.ndarray | None:
    """The mask of a prospectively undersampled file: its columns holding any non-zero k-space.

    ``sampled`` is a 1-D bool over the k-space columns. Returns None when every column in
    ``[padding_left, padding_right)`` (the header's acquired range) is sampled, i.e. the file is
    fully sampled and a mask is to be drawn; otherwise the float32 0/1 mask.
    """
    sampled = np.asarray(sampled, dtype=bool)
    inside = sampled[max(padding_left, 0) : max(padding_right, 0)]
    if inside.size == 0 or inside.all() or not sampled.any():
        return None
    return sampled.astype(np.float32)

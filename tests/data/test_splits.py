"""SSDU splits: disjoint, covering the acquired lines, the calibration region in Θ, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from irecon.data.masks import MaskSpec, make_mask
from irecon.data.splits import SplitSpec, calibration_lines, split_mask, split_seed
from irecon.errors import IreconError


def four_x_mask(seed: int = 3, width: int = 96) -> tuple[np.ndarray, int]:
    return make_mask(MaskSpec("random", (0.08,), (4,)), width, seed)


@pytest.mark.parametrize("selection", ["uniform", "gaussian"])
def test_split_is_disjoint_covers_the_acquired_lines_and_keeps_the_calibration_in_theta(selection: str) -> None:
    mask, num_low = four_x_mask()
    theta, loss_set = split_mask(mask, SplitSpec(0.4, selection), seed=7)
    assert not np.any((theta > 0) & (loss_set > 0))
    np.testing.assert_array_equal(theta + loss_set, mask)
    calibration = calibration_lines(mask)
    assert calibration.sum() >= num_low
    assert np.all(theta[calibration] == 1) and np.all(loss_set[calibration] == 0)
    assert loss_set.sum() == round(0.4 * mask.sum())


def test_calibration_region_is_the_run_around_the_middle_column() -> None:
    mask = np.array([1, 0, 0, 1, 1, 1, 1, 0, 1, 0], dtype=np.float32)
    np.testing.assert_array_equal(calibration_lines(mask), [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    assert not calibration_lines(np.array([1, 0, 0, 1], dtype=np.float32)).any()


def test_split_is_seeded_and_redrawn_per_seed() -> None:
    mask, _ = four_x_mask()
    spec = SplitSpec()
    first = split_mask(mask, spec, split_seed(0, 1, "file.h5", 2, 0))
    again = split_mask(mask, spec, split_seed(0, 1, "file.h5", 2, 0))
    np.testing.assert_array_equal(first[1], again[1])
    others = [
        split_seed(0, 2, "file.h5", 2, 0),
        split_seed(0, 1, "file.h5", 3, 0),
        split_seed(0, 1, "file.h5", 2, 1),
        split_seed(0, 1, "other.h5", 2, 0),
        split_seed(1, 1, "file.h5", 2, 0),
    ]
    for seed in others:
        assert not np.array_equal(split_mask(mask, spec, seed)[1], first[1]), seed


def test_gaussian_selection_prefers_the_centre() -> None:
    mask = np.zeros(200, dtype=np.float32)
    mask[::2] = 1
    mask[95:105] = 1
    distance = {}
    for selection in ("uniform", "gaussian"):
        picks = [np.flatnonzero(split_mask(mask, SplitSpec(0.2, selection), s)[1]) for s in range(20)]
        distance[selection] = float(np.mean([np.abs(p - 100).mean() for p in picks]))
    assert distance["gaussian"] < 0.8 * distance["uniform"]


def test_bad_specs_and_masks_are_refused() -> None:
    mask, _ = four_x_mask()
    for spec in (SplitSpec(0.0), SplitSpec(1.0), SplitSpec(0.4, "poisson")):
        with pytest.raises(IreconError):
            split_mask(mask, spec, 0)


def test_a_mask_with_only_calibration_lines_holds_nothing_out() -> None:
    centre_only = np.zeros(32, dtype=np.float32)
    centre_only[14:18] = 1
    theta, loss_set = split_mask(centre_only, SplitSpec(), 0)
    np.testing.assert_array_equal(theta, centre_only)
    assert not loss_set.any()

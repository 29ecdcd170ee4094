"""Sampling masks: fastMRI's mask functions, reproducible seeds, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type

from irecon.data.masks import (
    MASK_TYPES,
    MaskSpec,
    apply_padding,
    make_mask,
    seed_for_file,
    training_seed,
)
from irecon.errors import IreconError

NUM_COLS = 368  # fastMRI knee width


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_each_mask_type_has_shape_and_centre(mask_type: str) -> None:
    spec = MaskSpec(mask_type, (0.08,), (4,))
    mask, num_low = make_mask(spec, NUM_COLS, seed_for_file("file1000001.h5"))
    assert mask.shape == (NUM_COLS,) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert num_low == round(NUM_COLS * 0.08) == 29
    pad = (NUM_COLS - num_low + 1) // 2
    assert mask[pad : pad + num_low].all()
    assert NUM_COLS / 6 < mask.sum() < NUM_COLS / 2  # undersampled, roughly at R=4


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_mask_equals_fastmri_own(mask_type: str) -> None:
    seed = seed_for_file("file1000001.h5")
    mask, num_low = make_mask(MaskSpec(mask_type, (0.08, 0.04), (4, 8)), NUM_COLS, seed)
    func = create_mask_for_mask_type(mask_type, [0.08, 0.04], [4, 8])
    expected, expected_low = func((1, NUM_COLS, 2), seed=seed)
    np.testing.assert_array_equal(mask, expected.reshape(-1).numpy())
    assert num_low == expected_low


def test_same_seed_same_mask_and_file_names_differ() -> None:
    spec = MaskSpec("random", (0.08,), (4,))
    first, _ = make_mask(spec, NUM_COLS, seed_for_file("file1000001.h5"))
    again, _ = make_mask(spec, NUM_COLS, seed_for_file("file1000001.h5"))
    other, _ = make_mask(spec, NUM_COLS, seed_for_file("file1000002.h5"))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert seed_for_file("ab.h5") == (97, 98, 46, 104, 53)


def test_global_numpy_rng_untouched() -> None:
    np.random.seed(123)
    state = np.random.get_state()
    torch_state = torch.get_rng_state()
    for mask_type in MASK_TYPES:
        make_mask(MaskSpec(mask_type), NUM_COLS, 7)
        make_mask(MaskSpec(mask_type), NUM_COLS, None)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    assert torch.equal(torch_state, torch.get_rng_state())


def test_training_seed_is_deterministic_and_varies() -> None:
    seeds = {training_seed(0, epoch, index) for epoch in range(3) for index in range(50)}
    assert len(seeds) == 150
    assert training_seed(5, 2, 17) == training_seed(5, 2, 17)
    assert training_seed(5, 2, 17) != training_seed(6, 2, 17)
    assert all(0 <= s < 2**32 for s in seeds)
    spec = MaskSpec("random")
    first, _ = make_mask(spec, NUM_COLS, training_seed(0, 0, 0))
    resumed, _ = make_mask(spec, NUM_COLS, training_seed(0, 0, 0))
    later, _ = make_mask(spec, NUM_COLS, training_seed(0, 1, 0))
    np.testing.assert_array_equal(first, resumed)
    assert not np.array_equal(first, later)


def test_training_seed_refuses_negative_seed() -> None:
    with pytest.raises(IreconError, match="seed must be a non-negative integer, got -1"):
        training_seed(-1, 0, 0)


def test_apply_padding_zeroes_outside_range() -> None:
    mask = np.ones((1, 10), dtype=np.float32)
    padded = apply_padding(mask, 2, 7)
    np.testing.assert_array_equal(padded[0], [0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    assert mask.all()  # the input is not modified
    np.testing.assert_array_equal(apply_padding(np.ones(4), -3, 99), np.ones(4))


def test_apply_padding_matches_fastmri_apply_mask() -> None:
    from fastmri.data.transforms import apply_mask

    spec = MaskSpec("equispaced_fraction", (0.08,), (4,))
    func = create_mask_for_mask_type(spec.mask_type, [0.08], [4])
    data = torch.ones(1, 32, NUM_COLS, 2)
    _, fastmri_mask, _ = apply_mask(data, func, seed=(1, 2, 3), padding=(5, 360))
    mask, _ = make_mask(spec, NUM_COLS, (1, 2, 3))
    np.testing.assert_array_equal(apply_padding(mask, 5, 360), fastmri_mask.reshape(-1).numpy())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (MaskSpec("gaussian"), "unknown mask type 'gaussian'"),
        (MaskSpec(center_fractions=()), "at least one center fraction and one acceleration"),
        (MaskSpec(accelerations=()), "at least one center fraction and one acceleration"),
        (
            MaskSpec(center_fractions=(0.08, 0.04), accelerations=(4,)),
            "2 center fractions 0.08,0.04 but 1",
        ),
        (MaskSpec(accelerations=(0,)), "acceleration 0 is invalid: it must be at least 1"),
        (MaskSpec(accelerations=(0,), center_fractions=(0.08, 0.04)), "acceleration 0 is invalid"),
        (MaskSpec(accelerations=(2.5,)), "acceleration 2.5 is not a whole number"),
        (MaskSpec(center_fractions=(0.0,)), "center fraction 0.0 is not between 0 and 1"),
        (MaskSpec(center_fractions=(1.2,)), "center fraction 1.2 is not between 0 and 1"),
        (MaskSpec("equispaced_fraction", (0.3,), (4,)), "center fraction 0.3 with acceleration 4"),
        (MaskSpec("magic_fraction", (0.25,), (4,)), "center fraction 0.25 with acceleration 4"),
        (MaskSpec("random", (0.08, 0.2), (4, 8)), "center fraction 0.2 with acceleration 8"),
    ],
)
def test_impossible_specs_are_refused(spec: MaskSpec, message: str) -> None:
    with pytest.raises(IreconError, match=message):
        spec.validate()
    with pytest.raises(IreconError, match=message):
        make_mask(spec, NUM_COLS, 0)


@pytest.mark.parametrize("mask_type", ["equispaced_fraction", "magic_fraction"])
def test_fraction_mask_impossible_at_this_width_is_refused(mask_type: str) -> None:
    """0.24 < 1/4, but over 32 columns fastMRI rounds the centre to 8 lines = 32/4 (PR #157)."""
    spec = MaskSpec(mask_type, (0.24,), (4,))
    spec.validate()
    with pytest.raises(IreconError, match=f"{mask_type} mask .* impossible over 32 k-space columns"):
        make_mask(spec, 32, 0)
    mask, _ = make_mask(spec, NUM_COLS, 0)
    assert mask.shape == (NUM_COLS,)


def test_bad_seed_is_refused() -> None:
    with pytest.raises(IreconError, match="seed -5"):
        make_mask(MaskSpec(), NUM_COLS, -5)

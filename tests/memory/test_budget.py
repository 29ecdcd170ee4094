"""The planner's pieces: the depth search, and autocast on the meta device."""

from __future__ import annotations

import pytest
import torch

from irecon.memory.budget import deepest_fit


def _search(peak, budget: int, max_steps: int) -> tuple[int, dict[int, int]]:
    return deepest_fit(peak, budget, max_steps)


def test_a_straight_line_is_answered_with_four_measured_depths() -> None:
    steps, peaks = _search(lambda t: 100 + 10 * t, budget=455, max_steps=1000)
    assert steps == 35 and sorted(peaks) == [1, 2, 35, 36]
    assert peaks[35] <= 455 < peaks[36]


def test_growth_faster_than_a_line_is_bisected_on_measured_depths() -> None:
    for budget in range(0, 3000, 37):
        steps, peaks = _search(lambda t: 50 + 3 * t + t * t, budget, max_steps=60)
        want = max((t for t in range(1, 61) if 50 + 3 * t + t * t <= budget), default=0)
        assert steps == want
        if 0 < steps < 60:
            assert peaks[steps] <= budget < peaks[steps + 1]


def test_nothing_fits_and_the_limit_is_reported_as_reached() -> None:
    assert _search(lambda t: 10 * t, budget=5, max_steps=10) == (0, {1: 10})
    steps, peaks = _search(lambda t: 10 * t, budget=10**6, max_steps=10)
    assert steps == 10 and 11 not in peaks
    assert _search(lambda t: 10 * t, budget=100, max_steps=1)[0] == 1


def test_the_engine_treats_meta_as_a_device_without_autocast() -> None:
    from irecon.invertible.engine import autocast, autocast_state

    with pytest.raises(RuntimeError):
        torch.is_autocast_enabled("meta")  # torch itself has no autocast backend for meta
    assert autocast_state("meta") == (False, None)
    with autocast("meta", enabled=False):
        pass
    with pytest.raises(RuntimeError):
        autocast("meta", enabled=True, dtype=torch.bfloat16)
    with autocast("cpu", enabled=True, dtype=torch.bfloat16):  # devices with autocast are unchanged
        assert autocast_state("cpu") == (True, torch.bfloat16)

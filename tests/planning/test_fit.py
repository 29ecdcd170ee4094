"""The promise of --fit-memory on the CPU: the chosen setting's measured peak fits, one more does not."""

from __future__ import annotations

import pytest
import torch

from irecon.errors import IreconError
from irecon.models.presets import preset
from irecon.planning.fit import find_fit, measured_margin, resolve_budget
from irecon.planning.peaks import InputShape, measured_peaks, planned_peak

SHAPE = InputShape(batch=1, coils=1, height=32, width=24, target=(16, 16))
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def config_at(steps: int):
    return preset("tiny-2d", steps=steps)


@pytest.mark.slow
def test_deepest_t_measured_by_the_allocator_stays_under_the_budget_and_one_more_would_not():
    gap, _ = measured_margin(config_at(1), SHAPE, CPU, "train", "ssim", True)
    predicted = {t: planned_peak(config_at(t), SHAPE) + gap for t in (2, 3)}
    budget = (predicted[2] + predicted[3]) // 2

    fit = find_fit("steps", config_at, lambda _: SHAPE, (budget, "given"), 10, CPU)

    assert fit.value == 2
    assert fit.predicted_bytes <= budget < fit.next_bytes
    assert max(measured_peaks(config_at(2), SHAPE, CPU, repeats=3)) <= budget
    assert min(measured_peaks(config_at(3), SHAPE, CPU, repeats=3)) > budget
    assert "cpu allocator events" in fit.margin_method
    assert "T=2 fits" in fit.line() and "T=3 would need" in fit.line()


@pytest.mark.slow
def test_largest_batch_is_measured_and_fits():
    config = preset("tiny-2d", steps=1, layers=2)

    def shape_at(batch: int) -> InputShape:
        return InputShape(batch, 1, 32, 24, (16, 16))

    budget = planned_peak(config, shape_at(3)) + 2 * measured_margin(config, shape_at(1), CPU, "train", "ssim", True)[0]
    fit = find_fit("batch", lambda _: config, shape_at, (budget, "given"), 8, CPU)

    assert fit.value >= 2
    assert fit.verified_bytes is not None and fit.verified_bytes <= budget


def test_a_budget_below_the_smallest_setting_is_one_error_line():
    with pytest.raises(IreconError, match=r"even T=1 needs .* over the memory budget of 1.00 KiB"):
        find_fit("steps", config_at, lambda _: SHAPE, (1024, "given"), 10, CPU)


def test_budget_sizes_and_auto():
    assert resolve_budget("400MiB", CPU) == (400 * 2**20, "given")
    auto, source = resolve_budget("auto", CPU)
    assert auto > 0 and source.startswith("auto: 90% of")
    with pytest.raises(IreconError, match="cannot read 'lots'"):
        resolve_budget("lots", CPU)

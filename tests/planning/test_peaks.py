"""The planner's peaks against real runs: exact tensor bytes, and the allocator's margin on the CPU."""

from __future__ import annotations

import pytest
import torch

from irecon.models.presets import preset
from irecon.planning.peaks import InputShape, measured_peaks, planned_peak

SHAPE = InputShape(batch=2, coils=1, height=32, width=24, target=(16, 16))
SLAB = InputShape(batch=1, coils=2, height=24, width=16, target=(12, 12), slices=4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize(
    ("config", "shape"),
    [(preset("tiny-2d", steps=2, layers=2), SHAPE), (preset("tiny-3d", steps=1, layers=2, coils=2), SLAB)],
    ids=["2d", "3d"],
)
def test_planned_peak_is_the_cpu_storage_bytes_of_the_same_step(config, shape, mode):
    planned = planned_peak(config, shape, mode)
    measured = measured_peaks(config, shape, torch.device("cpu"), mode, repeats=1, meter="storages")
    assert planned == measured[0]


def test_planned_training_peak_grows_by_the_weights_of_each_step():
    """Memory-free: one more step adds its parameters, gradients and Adam state, and no activations."""
    peaks = [planned_peak(preset("tiny-2d", steps=t, layers=2), SHAPE) for t in (1, 2, 3)]
    counts = [sum(p.numel() for p in preset("tiny-2d", steps=t, layers=2).build().parameters()) for t in (1, 2)]
    per_step = counts[1] - counts[0]
    assert peaks[2] - peaks[1] == peaks[1] - peaks[0] > 0
    assert peaks[1] - peaks[0] >= 4 * 4 * per_step  # fp32 weights, gradients and two Adam moments


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        planned_peak(preset("tiny-2d"), SHAPE, "eval")

"""BenchOptions: frozen, checked by a pure validate(), resolved into a new instance for the run."""

import dataclasses
from pathlib import Path

import pytest

from irecon.bench.options import BenchOptions
from irecon.errors import IreconError


def test_options_are_frozen_and_validate_changes_nothing() -> None:
    options = BenchOptions(model="tiny-2d", budget=2**30)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "meta"  # type: ignore[misc]
    before = dataclasses.asdict(options)
    options.validate()
    assert dataclasses.asdict(options) == before


def test_resolved_is_a_new_instance_with_the_run_s_values() -> None:
    options = BenchOptions(model="tiny-2d")
    assert options.resolved("cpu") == dataclasses.replace(options, device="cpu", batches=10)
    assert options.resolved("meta").batches == 1
    assert dataclasses.replace(options, budget=100).resolved("cpu").device == "meta"
    assert dataclasses.replace(options, batches=3).resolved("cpu").batches == 3
    assert options.device is None and options.batches is None
    assert options.sweep_steps == (1, 2, 4) and dataclasses.replace(options, steps=(3,)).sweep_steps == (3,)
    with pytest.raises(IreconError, match="--meter allocator is a CPU meter; on CUDA"):
        dataclasses.replace(options, meter="allocator").resolved("cuda:0")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batches": 0}, "--batches must be at least 1, got 0"),
        ({"steps": ()}, "--steps needs one or more values >= 1"),
        ({"steps": (0, 1)}, "--steps needs one or more values >= 1"),
        ({"size": (4, 16)}, "--size 4 16 is too small"),
        ({"threads": 0}, "--threads must be at least 1, got 0"),
        ({"layers": (0,)}, "--layers needs values >= 1"),
        ({"meter": "rss"}, "unknown meter 'rss'"),
        ({"budget": 0}, "--budget must be at least one byte, got 0"),
        ({"budget": 10, "device": "cpu"}, "--budget plans on the meta device"),
        ({"meter": "allocator", "device": "meta"}, "on meta the planner counts storages"),
        ({"modes": ("train", "eval")}, "unknown mode 'eval'"),
    ],
)
def test_validate_refuses_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(IreconError, match=message):
        BenchOptions(model="tiny-2d", **fields).validate()


def test_validate_checks_the_output_paths(tmp_path: Path) -> None:
    with pytest.raises(IreconError, match="no such folder"):
        BenchOptions(json_path=tmp_path / "missing" / "b.json").validate()
    BenchOptions(json_path=tmp_path / "b.json", plot_path=tmp_path / "b.png").validate()
    assert list(tmp_path.iterdir()) == []

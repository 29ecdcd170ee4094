"""Adam sharding arithmetic: ZeRO's partition of the parameters and the bytes of Adam state per rank."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch

from irecon.memory.adam import adam_shards, optimizer_bytes_per_rank, rank_of_parameters
from irecon.models.presets import preset
from irecon.training.optim import build_optimizer, load_state


def zero() -> Any:
    """ZeroRedundancyOptimizer, imported without the torch.jit deprecation warnings its package raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.distributed.optim import ZeroRedundancyOptimizer
    return ZeroRedundancyOptimizer


class TorchPartition:
    """Holds what ``zero()._partition_parameters`` reads, to run torch's own partition
    without a process group (its partition depends only on the world size and the param groups)."""

    def __init__(self, groups: list[list[torch.Tensor]], world_size: int) -> None:
        self.world_size = world_size
        self.param_groups = [{"params": group} for group in groups]
        self._partition_parameters_cache: list[list[dict[str, Any]]] = []

    def _get_min_index(self, values: list[int]) -> int:
        return zero()._get_min_index(self, values)  # type: ignore[arg-type]

    def _partition_param_group(self, group: dict[str, Any], per_rank: list[list[torch.Tensor]]) -> None:
        zero()._partition_param_group(self, group, per_rank)  # type: ignore[arg-type]

    def ranks(self) -> list[list[int]]:
        per_rank = zero()._partition_parameters(self)  # type: ignore[arg-type]
        owner = {id(p): rank for rank, groups in enumerate(per_rank) for g in groups for p in g["params"]}
        return [[owner[id(p)] for p in g["params"]] for g in self.param_groups]


def meta_parameters(name: str) -> list[torch.Tensor]:
    with torch.device("meta"):
        return list(preset(name).build().parameters())


@pytest.mark.parametrize("name", ["challenge-singlecoil", "challenge-multicoil", "tiny-2d"])
def test_the_partition_is_zeros_for_the_presets(name: str) -> None:
    params = meta_parameters(name)
    for world_size in (1, 2, 3, 4, 8):
        numels = [[p.numel() for p in params]]
        assert rank_of_parameters(numels, world_size) == TorchPartition([params], world_size).ranks()


def test_the_partition_carries_its_totals_across_param_groups() -> None:
    groups = [[torch.empty(n, device="meta") for n in sizes] for sizes in ([5, 5, 3], [4, 1, 1, 6], [2])]
    numels = [[p.numel() for p in g] for g in groups]
    for world_size in (1, 2, 3, 5):
        assert rank_of_parameters(numels, world_size) == TorchPartition(groups, world_size).ranks()


def test_adam_shards_from_tensors_shapes_and_groups() -> None:
    shapes = [(64, 3, 3, 3), (64,), (10, 64), (10,)]
    elements = 64 * 27 + 64 + 640 + 10
    whole = adam_shards(shapes, 1)[0]
    assert (whole.parameters, whole.elements) == (4, elements)
    assert whole.moment_bytes == 2 * 4 * elements and whole.step_bytes == 4 * 4
    tensors = [torch.empty(s, device="meta").requires_grad_() for s in shapes]
    assert optimizer_bytes_per_rank(tensors, 3) == optimizer_bytes_per_rank(shapes, 3)
    assert optimizer_bytes_per_rank([{"params": tensors}], 3) == optimizer_bytes_per_rank(shapes, 3)
    assert sum(optimizer_bytes_per_rank(shapes, 3)) == whole.total_bytes
    assert optimizer_bytes_per_rank(shapes, 3, shard=False) == [whole.total_bytes] * 3
    half = adam_shards([torch.empty(s, dtype=torch.bfloat16, device="meta").requires_grad_() for s in shapes], 1)[0]
    assert half.moment_bytes == whole.moment_bytes // 2
    frozen = [torch.empty(s, device="meta").requires_grad_(i != 0) for i, s in enumerate(shapes)]
    assert adam_shards(frozen, 1)[0].parameters == 3
    assert adam_shards(shapes, 1, amsgrad=True)[0].moment_bytes == 3 * 4 * elements


def test_adam_shards_match_a_real_adam_after_a_step() -> None:
    model = preset("tiny-2d").build()
    optimizer = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    held = sum(t.untyped_storage().nbytes() for state in optimizer.state.values() for t in state.values())
    assert optimizer_bytes_per_rank(model.parameters(), 1) == [held]


def test_build_optimizer_fuses_adam_and_keeps_it_through_a_resume_from_a_plain_state() -> None:
    """The fused kernel survives loading a state saved by per-parameter Adam, and steps on as that Adam would."""
    torch.manual_seed(0)
    plain_model, fused_model = preset("tiny-2d").build(), preset("tiny-2d").build()
    fused_model.load_state_dict(plain_model.state_dict())
    for p, q in zip(plain_model.parameters(), fused_model.parameters()):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-3)
    plain.step()
    fused = build_optimizer(fused_model.parameters(), 1e-3, shard=False, world_size=1)
    assert fused.param_groups[0]["fused"]
    fused_model.load_state_dict(plain_model.state_dict())
    load_state(fused, copy.deepcopy(plain.state_dict()))  # as from a checkpoint file: nothing shared
    assert fused.param_groups[0]["fused"]
    plain.step()
    fused.step()
    first = next(iter(fused.state.values()))
    assert first["step"].item() == 2
    for p, q in zip(plain_model.parameters(), fused_model.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)
    held = sum(t.untyped_storage().nbytes() for state in fused.state.values() for t in state.values())
    assert optimizer_bytes_per_rank(fused_model.parameters(), 1) == [held]

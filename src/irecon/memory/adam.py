"""The bytes of Adam state each rank holds, plain or sharded as ``ZeroRedundancyOptimizer`` shards it.

Shapes are enough (tensors on the meta device will do), so the memory planner and bench-memory
report per-rank weights memory without a process group or a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ParamsOrShapes = Iterable[Tensor] | Iterable[Sequence[int]] | Iterable[Mapping[str, Any]]


def rank_of_parameters(numels: Sequence[Sequence[int]], world_size: int) -> list[list[int]]:
    """The rank each parameter's Adam state lives on, per param group, as ZeroRedundancyOptimizer assigns it.

    ZeRO's ``_partition_parameters``: for each param group in order, the parameters sorted by
    element count (largest first, stable) each go to the rank with the fewest elements so far (the
    lowest such rank on a tie); the running totals carry over from one group to the next.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    sizes = [0] * world_size
    ranks: list[list[int]] = []
    for group in numels:
        assigned = [0] * len(group)
        for index in sorted(range(len(group)), key=lambda i: group[i], reverse=True):
            rank = min(range(world_size), key=lambda r: (sizes[r], r))
            assigned[index] = rank
            sizes[rank] += group[index]
        ranks.append(assigned)
    return ranks


@dataclass(frozen=True)
class AdamShard:
    """The Adam state one rank holds: moment tensors on the parameters' device, step counters on the host."""

    rank: int
    parameters: int
    elements: int
    moment_bytes: int
    step_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.moment_bytes + self.step_bytes


def adam_shards(
    parameters: ParamsOrShapes,
    world_size: int,
    shard: bool = True,
    dtype: torch.dtype = torch.float32,
    amsgrad: bool = False,
) -> list[AdamShard]:
    """Per rank, the Adam state ``torch.optim.Adam`` (default, non-fused) creates for its parameters.

    ``parameters``: tensors (the meta device will do), shapes (``dtype`` gives their element type)
    or param groups (dicts with ``"params"``). Every parameter gets ``exp_avg`` and ``exp_avg_sq``
    (``max_exp_avg_sq`` too with ``amsgrad``) of its own size and a 0-d float32 ``step`` on the CPU;
    only parameters that require a gradient (all, for shapes) and receive one get state. With
    ``shard`` the parameters are split as :func:`rank_of_parameters` splits them; without, every
    rank holds all.
    """
    groups = _groups(parameters, dtype)
    moments = 3 if amsgrad else 2
    step_size = 8 if torch.get_default_dtype() == torch.float64 else 4  # Adam's float32 (float64) step
    if shard:
        ranks = rank_of_parameters([[numel for numel, _, _ in group] for group in groups], world_size)
    else:
        ranks = [[-1] * len(group) for group in groups]
    shards = []
    for rank in range(world_size):
        mine = [
            (numel, size)
            for group, owners in zip(groups, ranks)
            for (numel, size, trained), owner in zip(group, owners)
            if trained and owner in (rank, -1)
        ]
        shards.append(
            AdamShard(
                rank=rank,
                parameters=len(mine),
                elements=sum(n for n, _ in mine),
                moment_bytes=moments * sum(n * size for n, size in mine),
                step_bytes=step_size * len(mine),
            )
        )
    return shards


def optimizer_bytes_per_rank(
    parameters: ParamsOrShapes, world_size: int, shard: bool = True, dtype: torch.dtype = torch.float32
) -> list[int]:
    """Bytes of Adam state on each rank (moments and step counters, see :func:`adam_shards`)."""
    return [s.total_bytes for s in adam_shards(parameters, world_size, shard, dtype)]


def _groups(parameters: ParamsOrShapes, dtype: torch.dtype) -> list[list[tuple[int, int, bool]]]:
    """(elements, bytes per element, gets state) per parameter, per param group."""
    items = list(parameters)
    if items and all(isinstance(item, Mapping) for item in items):
        return [_group(list(item["params"]), dtype) for item in items]  # type: ignore[index]
    return [_group(items, dtype)]


def _group(items: list[Any], dtype: torch.dtype) -> list[tuple[int, int, bool]]:
    element = torch.empty((), dtype=dtype).element_size()
    described = []
    for item in items:
        if isinstance(item, Tensor):
            described.append((item.numel(), item.element_size(), item.requires_grad))
        else:
            numel = 1
            for n in item:
                numel *= int(n)
            described.append((numel, element, True))
    return described

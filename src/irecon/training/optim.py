"""The run's optimiser: Adam, optionally sharded over the ranks, and the bytes of Adam state each rank holds.

``--shard-optimizer`` under ``torchrun`` wraps Adam in ``torch.distributed.optim.ZeroRedundancyOptimizer``:
each rank keeps the Adam state of its share of the parameters, steps those and broadcasts them; the
parameters and gradients stay whole on every rank (DDP all-reduces the gradients as before). On one
process it is plain Adam. Checkpoints always hold the state in ``torch.optim.Adam``'s own
``state_dict`` format (the ZeRO state is consolidated on rank 0 first), so any world size resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from irecon.training.runtime import format_bytes

ParamsOrShapes = Iterable[Tensor] | Iterable[Sequence[int]] | Iterable[Mapping[str, Any]]
# Imported when first sharding: torch.distributed.optim scripts its functional optimisers with torch.jit.
ZERO_MODULE = "torch.distributed.optim.zero_redundancy_optimizer"


def build_optimizer(parameters: Iterable[Tensor], lr: float, shard: bool, world_size: int) -> torch.optim.Optimizer:
    """Adam at ``lr``; with ``shard`` and more than one rank (process group joined), ZeRO-sharded Adam."""
    params = list(parameters)
    if shard and world_size > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.Adam, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def is_sharded(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is a ZeroRedundancyOptimizer."""
    zero = sys.modules.get(ZERO_MODULE)
    return zero is not None and isinstance(optimizer, zero.ZeroRedundancyOptimizer)


def gather_state(optimizer: torch.optim.Optimizer, rank: int) -> dict[str, Any] | None:
    """The whole optimiser state in ``torch.optim.Adam`` format on rank 0 (None elsewhere).

    Sharded, every rank must call this: ZeRO's ``consolidate_state_dict(to=0)`` sends each shard to
    rank 0, which builds the state dict and then drops its consolidated copies (host memory).
    """
    if not is_sharded(optimizer):
        return optimizer.state_dict() if rank == 0 else None
    optimizer.consolidate_state_dict(to=0)  # type: ignore[attr-defined]
    if rank != 0:
        return None
    state = optimizer.state_dict()
    optimizer._all_state_dicts.clear()  # type: ignore[attr-defined]
    return state


def load_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an Adam-format state dict into plain or sharded Adam (each rank keeps its own shard).

    ZeRO's ``load_state_dict`` also leaves a copy of this rank's shard in its outer ``state``, which
    its ``step`` never reads; on CUDA that copy is a second device copy, so it is dropped.
    """
    optimizer.load_state_dict({**state, "state": dict(state["state"])})
    if is_sharded(optimizer):
        optimizer.state.clear()


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
    parameters: ParamsOrShapes, world_size: int, shard: bool = True, dtype: torch.dtype = torch.float32,
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
        mine = [(numel, size) for group, owners in zip(groups, ranks)
                for (numel, size, trained), owner in zip(group, owners) if trained and owner in (rank, -1)]
        shards.append(AdamShard(
            rank=rank, parameters=len(mine), elements=sum(n for n, _ in mine),
            moment_bytes=moments * sum(n * size for n, size in mine), step_bytes=step_size * len(mine),
        ))
    return shards


def optimizer_bytes_per_rank(
    parameters: ParamsOrShapes, world_size: int, shard: bool = True, dtype: torch.dtype = torch.float32
) -> list[int]:
    """Bytes of Adam state on each rank (moments and step counters, see :func:`adam_shards`)."""
    return [s.total_bytes for s in adam_shards(parameters, world_size, shard, dtype)]


def adam_summary(parameters: Iterable[Tensor], world_size: int, sharded: bool, requested: bool) -> str:
    """``Adam state 1.20 MB per process, sharded over 2`` (the largest shard), for the start line."""
    largest = max(shard.total_bytes for shard in adam_shards(parameters, world_size, sharded))
    if sharded:
        return f"Adam state {format_bytes(largest)} per process, sharded over {world_size}"
    return f"Adam state {format_bytes(largest)}" + (" (--shard-optimizer needs several processes)" if requested else "")


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

"""The run's optimiser: Adam, optionally sharded over the ranks, and the bytes of Adam state each rank holds.

``--shard-optimizer`` under ``torchrun`` wraps Adam in ``torch.distributed.optim.ZeroRedundancyOptimizer``:
each rank keeps the Adam state of its share of the parameters, steps those and broadcasts them; the
parameters and gradients stay whole on every rank (DDP all-reduces the gradients as before). On one
process it is plain Adam. Checkpoints always hold the state in ``torch.optim.Adam``'s own
``state_dict`` format (the ZeRO state is consolidated on rank 0 first), so any world size resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from irecon.memory.adam import adam_shards
from irecon.text import human_bytes

# Imported when first sharding: torch.distributed.optim scripts its functional optimisers with torch.jit.
ZERO_MODULE = "torch.distributed.optim.zero_redundancy_optimizer"

FUSED_ADAM_DEVICES = ("cpu", "cuda")
"""Devices whose parameters torch's fused Adam kernel updates (both since torch 2.4, irecon's oldest)."""


def build_optimizer(parameters: Iterable[Tensor], lr: float, shard: bool, world_size: int) -> torch.optim.Optimizer:
    """Adam at ``lr``; with ``shard`` and more than one rank (process group joined), ZeRO-sharded Adam.

    Fused (one kernel for every parameter, not a loop of small ops per parameter) where torch has the fused
    kernel for the parameters' device.
    """
    params = list(parameters)
    fused = fused_adam(params)
    if shard and world_size > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.Adam, lr=lr, fused=fused)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def fused_adam(params: list[Tensor]) -> bool:
    """Whether torch's fused Adam kernel takes every one of ``params`` (floating point, on a device it supports)."""
    return bool(params) and all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in params)


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

    The optimiser keeps its own choice of the fused kernel, whichever the state was saved with (the
    step counts then move to the parameters' device, as the fused kernel reads them there).

    ZeRO's ``load_state_dict`` also leaves a copy of this rank's shard in its outer ``state``, which
    its ``step`` never reads; on CUDA that copy is a second device copy, so it is dropped.
    """
    groups = [
        {**saved, "fused": group.get("fused")} for saved, group in zip(state["param_groups"], optimizer.param_groups)
    ]
    optimizer.load_state_dict({**state, "state": dict(state["state"]), "param_groups": groups})
    if is_sharded(optimizer):
        optimizer.state.clear()


def adam_summary(parameters: Iterable[Tensor], world_size: int, sharded: bool, requested: bool) -> str:
    """``Adam state 1.14 MiB per process, sharded over 2`` (the largest shard), for the start line."""
    largest = max(shard.total_bytes for shard in adam_shards(parameters, world_size, sharded))
    if sharded:
        return f"Adam state {human_bytes(largest)} per process, sharded over {world_size}"
    return f"Adam state {human_bytes(largest)}" + (" («shard_optimizer» needs several processes)" if requested else "")

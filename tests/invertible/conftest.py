"""Small chains with distinct weights per step, shared by the invertible-engine tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from irecon.invertible.engine import InvertibleOp
from irecon.invertible.layers import DataConsistencyLayer, InvertibleLayer
from irecon.physics import data_consistency_gradient


@dataclass
class Chain:
    modules: nn.ModuleList
    ops: list[InvertibleOp]
    data: tuple[Tensor, Tensor]
    shape: tuple[int, ...]


def make_chain(
    dims: int,
    steps: int = 3,
    channels: int = 8,
    strides: tuple[int, ...] = (1, 2),
    spatial: tuple[int, ...] = (13, 11),
    batch: int = 2,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Chain:
    """An i-RIM-shaped chain: DC, then per step (layers..., DC), every layer with its own weights."""
    torch.manual_seed(seed)
    dc = DataConsistencyLayer(2, data_consistency_gradient)
    layers = nn.ModuleList(
        InvertibleLayer(channels, hidden=6, stride=s, dims=dims) for _ in range(steps) for s in strides
    ).to(dtype)
    ops: list[InvertibleOp] = [dc]
    for i, layer in enumerate(layers):
        ops += layer.ops()
        if (i + 1) % len(strides) == 0:
            ops.append(dc)
    shape = (batch, channels, *spatial)
    cols = spatial[-1]
    mask = (torch.rand(batch, 1, *([1] * (len(spatial) - 1)), cols) > 0.4).to(dtype)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    kspace = torch.randn(batch, 1, *spatial, dtype=complex_dtype) * mask
    return Chain(layers, ops, (kspace, mask), shape)


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def chain(request: pytest.FixtureRequest) -> Chain:
    spatial = (13, 11) if request.param == 2 else (3, 9, 7)
    return make_chain(request.param, spatial=spatial)

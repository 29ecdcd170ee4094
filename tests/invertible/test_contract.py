from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.nn.utils import parametrize

from irecon.invertible.coupling import NARROW_ROWS, AdditiveCoupling
from irecon.invertible.engine import InvertibleOp
from irecon.invertible.householder import HouseholderConv, HouseholderOp
from irecon.invertible.layers import DataConsistencyLayer, InvertibleLayer
from irecon.invertible.testing import ChannelAffine, check_op_contract
from irecon.physics import data_consistency_gradient, data_consistency_vjp

Case = tuple[InvertibleOp, Tensor, tuple[Tensor, ...]]


def _data(coils: int, spatial: tuple[int, ...], batch: int = 2) -> tuple[Tensor, Tensor]:
    """Random complex k-space and a 0/1 column mask broadcastable to it, float64."""
    mask = (torch.rand(batch, 1, *([1] * (len(spatial) - 1)), spatial[-1]) > 0.4).double()
    return torch.randn(batch, coils, *spatial, dtype=torch.complex128) * mask, mask


def householder(transpose: bool) -> Case:
    op = HouseholderConv(6).double().op(transpose)
    return op, torch.randn(2, 6, 5, 4, dtype=torch.float64), _data(1, (5, 4))


def fused_householder(*transposes: bool) -> Callable[[], Case]:
    """A chain of rotations of different convs as one op (one WY update)."""

    def make() -> Case:
        convs = [HouseholderConv(6, num_reflections=n).double() for n in range(3, 3 + len(transposes))]
        op = HouseholderOp(list(zip(convs, transposes)))
        return op, torch.randn(2, 6, 5, 4, dtype=torch.float64), _data(1, (5, 4))

    return make


def coupling_2d() -> Case:
    op = AdditiveCoupling(7, hidden=5, stride=2).double()  # odd split 3 | 4
    return op, torch.randn(2, 7, 9, 11, dtype=torch.float64), _data(1, (9, 11))


def coupling_2d_tiled() -> Case:
    """Patches that tile the image: no pixel is left without a patch."""
    op = AdditiveCoupling(7, hidden=5, stride=2).double()
    return op, torch.randn(2, 7, 8, 10, dtype=torch.float64), _data(1, (8, 10))


def coupling_groups() -> Case:
    """G's output produced one channel at a time."""
    op, x, data = coupling_2d()
    op.block.group_bytes = 1
    return op, x, data


def coupling_3d() -> Case:
    op = AdditiveCoupling(6, hidden=4, stride=2, dims=3).double()
    return op, torch.randn(1, 6, 3, 8, 6, dtype=torch.float64), _data(1, (3, 8, 6), batch=1)


def coupling_stride_1(hidden: int = 4) -> Case:
    """``hidden`` above ``NARROW_ROWS``: the 2-D GEMM products in pixel rows; else in (B, k, N) order."""
    op = AdditiveCoupling(6, hidden=hidden, stride=1).double()
    return op, torch.randn(2, 6, 7, 5, dtype=torch.float64), _data(1, (7, 5))


def coupling_partly_frozen() -> Case:
    """Some weight-norm tensors and a bias frozen: only the others get gradients."""
    op, x, data = coupling_2d()
    block = op.block
    for t in (block.mix.parametrizations.weight.original0, block.down.bias, block.up.parametrizations.weight.original1):
        t.requires_grad_(False)
    return op, x, data


def coupling_plain_weights() -> Case:
    """The block's weight norms baked into plain weights (as deploy's plain_model does)."""
    op, x, data = coupling_2d()
    for conv in (op.block.down, op.block.mix, op.block.up):
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return op, x, data


def layer(
    dims: int,
    stride: int,
    frozen: str = "",
    plain_weights: bool = False,
    spatial: tuple[int, ...] = (9, 11),
    one_channel_groups: bool = False,
    hidden: int = 5,
) -> Callable[[], Case]:
    """U^T C U with the rotation folded into the coupling; ``frozen``: 'vectors' or 'down' (the patchify conv).
    2-D ``spatial`` (9, 11) leaves pixels no patch covers; 3-D is (3, 8, 6), which the patches tile."""

    def make() -> Case:
        spatial_shape = spatial if dims == 2 else (3, 8, 6)
        op = InvertibleLayer(7 if dims == 2 else 6, hidden=hidden, stride=stride, dims=dims).double()  # 2-D: 3 | 4
        if frozen == "vectors":
            op.rotation.vectors.requires_grad_(False)
        elif frozen == "down":
            for t in op.coupling.block.down.parameters():
                t.requires_grad_(False)
        if plain_weights:
            for conv in (op.coupling.block.down, op.coupling.block.mix, op.coupling.block.up):
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        if one_channel_groups:  # G's output produced one channel at a time
            op.coupling.block.group_bytes = 1
        x = torch.randn(2, op.rotation.channels, *spatial_shape, dtype=torch.float64)
        return op, x, _data(1, spatial_shape)

    return make


def data_consistency(coils: int, multiplicity: int, spatial: tuple[int, ...], vjp: bool = False) -> Callable[[], Case]:
    """With ``vjp`` the layer's backward is the hand-written VJP: the mask is bool (no gradient), as in training."""

    def make() -> Case:
        image_channels = 2 * coils * multiplicity
        op = DataConsistencyLayer(image_channels, data_consistency_gradient, data_consistency_vjp if vjp else None)
        x = torch.randn(2, 2 * image_channels + 3, *spatial, dtype=torch.float64)
        kspace, mask = _data(coils, spatial)
        return op, x, (kspace, mask.bool() if vjp else mask)

    return make


def channel_affine() -> Case:
    return ChannelAffine(5).double(), torch.randn(2, 5, 6, 7, dtype=torch.float64), _data(1, (6, 7))


CASES = {
    "householder": lambda: householder(False),
    "householder-transpose": lambda: householder(True),
    "householder-fused-pair": fused_householder(True, False),
    "householder-fused-three": fused_householder(False, True, True),
    "coupling-2d": coupling_2d,
    "coupling-2d-tiled": coupling_2d_tiled,
    "coupling-3d": coupling_3d,
    "coupling-groups": coupling_groups,
    "coupling-stride-1": coupling_stride_1,
    "coupling-stride-1-wide": lambda: coupling_stride_1(hidden=NARROW_ROWS + 4),
    "coupling-partly-frozen": coupling_partly_frozen,
    "coupling-plain-weights": coupling_plain_weights,
    "layer-2d": layer(2, 2),
    "layer-2d-tiled": layer(2, 2, spatial=(8, 10)),
    "layer-2d-stride-1": layer(2, 1),
    "layer-2d-groups": layer(2, 2, spatial=(8, 10), one_channel_groups=True),
    "layer-2d-stride-1-groups": layer(2, 1, one_channel_groups=True),
    "layer-2d-wide": layer(2, 2, hidden=NARROW_ROWS + 4),
    "layer-2d-stride-1-wide": layer(2, 1, hidden=NARROW_ROWS + 4),
    "layer-3d-groups": layer(3, 2, one_channel_groups=True),
    "layer-3d": layer(3, 2),
    "layer-frozen-rotation": layer(2, 2, frozen="vectors"),
    "layer-frozen-patchify": layer(2, 1, frozen="down"),
    "layer-plain-weights": layer(2, 2, plain_weights=True),
    "dc-single-coil": data_consistency(1, 1, (9, 8)),
    "dc-multi-coil": data_consistency(3, 2, (9, 8)),
    "dc-3d": data_consistency(2, 1, (3, 8, 6)),
    "dc-vjp-single-coil": data_consistency(1, 1, (9, 8), vjp=True),
    "dc-vjp-multi-coil": data_consistency(3, 2, (9, 8), vjp=True),
    "dc-vjp-3d": data_consistency(2, 3, (3, 8, 6), vjp=True),
    "default-backward": channel_affine,
}


@pytest.mark.parametrize("name", CASES)
def test_op_keeps_the_contract(name: str) -> None:
    torch.manual_seed(0)
    op, x, data = CASES[name]()
    check_op_contract(op, x, data)


def test_data_consistency_vjp_steps_aside_when_the_mask_needs_a_gradient() -> None:
    torch.manual_seed(0)
    op, x, (kspace, mask) = data_consistency(3, 2, (9, 8), vjp=True)()
    check_op_contract(op, x, (kspace, mask.double()))


def test_data_consistency_gradient_flows_into_both_data_tensors() -> None:
    torch.manual_seed(0)
    op, x, data = data_consistency(1, 1, (9, 8))()
    state = op.transform(x, data)
    data = tuple(d.clone().requires_grad_() for d in data)
    _, data_grads = op.backward_(state.clone(), torch.randn_like(state), data)
    assert all(g is not None and g.abs().max() > 0 for g in data_grads)


def test_default_backward_needs_a_module_for_parameters() -> None:
    class Shift(InvertibleOp):
        def __init__(self) -> None:
            self.offset = torch.ones((), dtype=torch.float64, requires_grad=True)

        @property
        def op_parameters(self) -> tuple[Tensor, ...]:
            return (self.offset,)

        def transform(self, x: Tensor, data: tuple[Tensor, ...]) -> Tensor:
            return x + self.offset

        def transform_(self, x: Tensor, data: tuple[Tensor, ...]) -> None:
            x.add_(self.offset.detach())

        def invert_(self, y: Tensor, data: tuple[Tensor, ...]) -> None:
            y.sub_(self.offset.detach())

    y = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="nn.Module or override backward_"):
        Shift().backward_(y, torch.ones_like(y), ())

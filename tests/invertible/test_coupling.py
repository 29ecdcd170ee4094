import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from irecon.invertible.coupling import (
    FUSED_CONV_RELU,
    NARROW_ROWS,
    AdditiveCoupling,
    ResidualBlock,
    conv_weight,
    weight_grads,
)
from irecon.invertible.layers import InvertibleLayer
from irecon.invertible.patches import patch_image, patch_major
from irecon.memory.meters import StorageTracker


@pytest.mark.parametrize("dims,shape", [(2, (2, 6, 13, 11)), (3, (1, 6, 3, 9, 7))])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_block_keeps_any_spatial_size(dims: int, shape: tuple[int, ...], stride: int) -> None:
    block = ResidualBlock(3, 3, hidden=4, stride=stride, dims=dims)
    assert block(torch.randn(shape[0], 3, *shape[2:])).shape == (shape[0], 3, *shape[2:])


def test_three_d_never_strides_along_slices() -> None:
    block = ResidualBlock(2, 2, hidden=4, stride=4, dims=3)
    assert block.down.stride == (1, 4, 4)
    assert block.up.stride == (1, 4, 4)
    assert block.mix.kernel_size == (3, 3, 3)


def test_block_is_weight_normed() -> None:
    block = ResidualBlock(2, 2, hidden=4, stride=2)
    for conv in (block.down, block.mix, block.up):
        assert hasattr(conv.parametrizations, "weight")
    assert block.up.bias is None


def test_coupling_forward_is_additive_and_in_place_matches() -> None:
    torch.manual_seed(0)
    coupling = AdditiveCoupling(6, hidden=5, stride=2).double()
    x = torch.randn(2, 6, 9, 10, dtype=torch.float64)
    y = coupling.transform(x, ())
    assert torch.equal(y[:, :3], x[:, :3])
    assert torch.allclose(y[:, 3:], x[:, 3:] + coupling.block(x[:, :3]), atol=1e-14)
    z = x.clone()
    coupling.transform_(z, ())
    assert torch.allclose(z, y, atol=1e-14)
    coupling.invert_(z, ())
    assert torch.allclose(z, x, atol=1e-14)


def test_coupling_backward_matches_autograd() -> None:
    torch.manual_seed(1)
    coupling = AdditiveCoupling(7, hidden=5, stride=2).double()  # odd channel split: 3 | 4
    x = torch.randn(2, 7, 9, 11, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, 7, 9, 11, dtype=torch.float64)
    params = list(coupling.parameters())
    y = coupling.transform(x, ())
    reference = torch.autograd.grad(y, [x, *params], gy)
    state, grad = y.detach().clone(), gy.clone()
    param_grads, _ = coupling.backward_(state, grad, ())
    assert torch.allclose(state, x.detach(), atol=1e-13)
    assert torch.allclose(grad, reference[0], atol=1e-12)
    for a, b in zip(param_grads, reference[1:]):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("dims,shape", [(2, (2, 4, 13, 11)), (3, (1, 4, 3, 9, 7))])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_up_products_equal_the_transposed_conv(dims: int, shape: tuple[int, ...], stride: int) -> None:
    torch.manual_seed(2)
    block = ResidualBlock(2, 3, hidden=4, stride=stride, dims=dims).double()
    h = torch.randn(shape[0], 4, *(s // p for s, p in zip(shape[2:], block.patch)), dtype=torch.float64)
    w = block.weights()
    conv_t = torch.nn.functional.conv_transpose2d if dims == 2 else torch.nn.functional.conv_transpose3d
    padding = [s - i * p for s, i, p in zip(shape[2:], h.shape[2:], block.patch)]
    reference = conv_t(h, w.up, stride=block.patch, output_padding=padding)
    assert torch.allclose(patch_image(block.up_products(h, w.up, 0, 3), shape[2:]), reference, atol=1e-13)
    chunk = block.up_products(h, w.up, 1, 3)
    state = torch.zeros(shape[0], 2, *shape[2:], dtype=torch.float64)
    patch_major(state, block.patch).copy_(chunk[:, :2])
    assert torch.allclose(state, reference[:, 1:3], atol=1e-13)


WEIGHT_NORMED = {
    "conv2d": lambda: weight_norm(nn.Conv2d(3, 4, 3)),
    "conv3d": lambda: weight_norm(nn.Conv3d(3, 4, (1, 2, 2))),
    "conv-transpose2d": lambda: weight_norm(nn.ConvTranspose2d(4, 6, 2, stride=2)),
    "conv-transpose3d": lambda: weight_norm(nn.ConvTranspose3d(4, 6, (1, 2, 2))),
    "norm-over-dim-1": lambda: weight_norm(nn.ConvTranspose2d(4, 6, 2), dim=1),
    "whole-tensor-norm": lambda: weight_norm(nn.Conv2d(3, 4, 3), dim=None),
    "plain": lambda: nn.Conv2d(3, 4, 3),
}


@pytest.mark.parametrize("name", WEIGHT_NORMED)
def test_weight_grads_equal_autograd(name: str) -> None:
    """The hand weight-norm gradient (and the autograd fallback for other norms) against autograd, float64."""
    torch.manual_seed(3)
    conv = WEIGHT_NORMED[name]().double()
    grad_w = torch.randn_like(conv_weight(conv, {}))
    leaves = [p for n, p in conv.named_parameters() if "bias" not in n]
    reference = torch.autograd.grad(conv_weight(conv, {}), leaves, grad_w)
    found = weight_grads(conv, grad_w)
    assert len(found) == len(leaves)
    for leaf, expected in zip(leaves, reference):
        assert found[id(leaf)].shape == leaf.shape
        assert (found[id(leaf)] - expected).abs().max() <= 1e-12 * max(1.0, expected.abs().max().item())
    if name.startswith("conv"):
        assert parametrize.is_parametrized(conv, "weight") and conv.parametrizations.weight[0].dim == 0


def _backward_peak(op: AdditiveCoupling | InvertibleLayer) -> int:
    """Bytes ``op.backward_`` allocates beyond its inputs on a (1, 16, 32, 32) state (storage tracker)."""
    y, grad = torch.randn(1, 16, 32, 32), torch.randn(1, 16, 32, 32)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(op, y, grad)
        base = tracker.memory_allocated()
        tracker.reset_peak_memory_stats()
        op.backward_(y, grad, ())
        return tracker.max_memory_allocated() - base


@pytest.mark.parametrize("stride", [1, 2])
def test_coupling_backward_holds_one_output_chunk_at_a_time(stride: int) -> None:
    """Backward's transient peak: the three hidden activations and one chunk of G's output (plus small tensors)."""
    torch.manual_seed(4)
    coupling = AdditiveCoupling(16, hidden=4, stride=stride)
    coupling.block.group_bytes = 2 * 4 * 32 * 32 * 4  # two groups of 4 output channels
    peak = _backward_peak(coupling)
    hidden = 4 * (32 // stride) ** 2 * 4
    chunk = 2 * 4 * 32 * 32 * 4  # values and gates of 4 of the 8 output channels
    assert peak <= 3 * hidden + chunk + 8192


@pytest.mark.parametrize("stride", [1, 2])
def test_layer_backward_holds_one_output_group_and_its_gradient_at_a_time(stride: int) -> None:
    """The folded layer's backward: the hidden activations, one group's values and gates, its output's gradient,
    and the rank-n update's n-channel tensors (V^T ḡ and S, n = 3 reflections, and one of them in the other pixel
    order while it is copied)."""
    torch.manual_seed(4)
    layer = InvertibleLayer(16, hidden=4, stride=stride)
    layer.coupling.block.group_bytes = 2 * 4 * 32 * 32 * 4
    peak = _backward_peak(layer)
    hidden = 4 * (32 // stride) ** 2 * 4
    group = 4 * 32 * 32 * 4
    rank_n = 3 * 32 * 32 * 4
    assert peak <= 3 * hidden + 3 * group + 3 * rank_n + 8192


def _forward_peak(op: AdditiveCoupling | InvertibleLayer) -> int:
    """Bytes ``op.transform_`` allocates beyond its input on a (1, 16, 32, 32) state (storage tracker)."""
    x = torch.randn(1, 16, 32, 32)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(op, x)
        base = tracker.memory_allocated()
        tracker.reset_peak_memory_stats()
        op.transform_(x, ())
        return tracker.max_memory_allocated() - base


@pytest.mark.parametrize("stride", [1, 2])
def test_forward_holds_one_output_group_at_a_time(stride: int) -> None:
    """The in-place forward (inference's path) frees each group of G's output before it computes the next:
    the hidden activations, one group's values and gates, and for the folded layer the rank-n update's
    n-channel tensors (n = 3 reflections)."""
    torch.manual_seed(4)
    coupling = AdditiveCoupling(16, hidden=4, stride=stride)
    layer = InvertibleLayer(16, hidden=4, stride=stride)
    for block in (coupling.block, layer.coupling.block):
        block.group_bytes = 2 * 4 * 32 * 32 * 4  # two groups of 4 output channels
    hidden = 4 * (32 // stride) ** 2 * 4
    group = 2 * 4 * 32 * 32 * 4
    rank_n = 3 * 32 * 32 * 4
    assert _forward_peak(coupling) <= hidden + group + 4096
    assert _forward_peak(layer) <= hidden + group + 2 * rank_n + 4096


@pytest.mark.parametrize(("size", "groups"), [((1, 32, 32), 1), ((2, 320, 320), 7), ((1, 320, 320), 4)])
def test_output_groups_stay_within_the_byte_budget(size: tuple[int, int, int], groups: int) -> None:
    block = AdditiveCoupling(64, hidden=8, stride=2).block
    h = torch.empty(size[0], 8, size[1] // 2, size[2] // 2)
    ranges = list(block.chunks(h))
    assert len(ranges) == groups and ranges[0][0] == 0 and ranges[-1][1] == 32
    assert all(2 * (hi - lo) * size[0] * size[1] * size[2] * 4 <= block.group_bytes for lo, hi in ranges)


def test_op_parameters_are_the_module_parameters() -> None:
    coupling = AdditiveCoupling(6, hidden=4, stride=2)
    assert {id(p) for p in coupling.op_parameters} == {id(p) for p in coupling.parameters()}
    assert len(coupling.op_parameters) == len(list(coupling.parameters()))
    for conv in (coupling.block.down, coupling.block.mix, coupling.block.up):
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    assert {id(p) for p in coupling.op_parameters} == {id(p) for p in coupling.parameters()}


def test_coupling_backward_runs_shapes_only_on_meta() -> None:
    """The planner's shapes-only runs differentiate the coupling on the meta device."""
    coupling = AdditiveCoupling(6, hidden=4, stride=2).to("meta")
    y, grad = torch.empty(1, 6, 9, 10, device="meta"), torch.empty(1, 6, 9, 10, device="meta")
    param_grads, _ = coupling.backward_(y, grad, ())
    assert [g.shape for g in param_grads] == [p.shape for p in coupling.op_parameters]


@pytest.mark.parametrize("group_bytes", [1, 2**30], ids=["groups", "one-group"])
def test_layer_backward_runs_shapes_only_on_meta(group_bytes: int) -> None:
    """The folded layer, on both of its paths (one group of G's output or several), on the meta device."""
    layer = InvertibleLayer(6, hidden=4, stride=2).to("meta")
    layer.coupling.block.group_bytes = group_bytes
    y, grad = torch.empty(1, 6, 8, 10, device="meta"), torch.empty(1, 6, 8, 10, device="meta")
    param_grads, _ = layer.backward_(y, grad, ())
    assert [g.shape for g in param_grads] == [p.shape for p in layer.op_parameters]


@pytest.mark.skipif(not FUSED_CONV_RELU, reason="this torch has no oneDNN convolution with a fused ReLU")
def test_fused_conv_relu_equals_conv_then_relu() -> None:
    """float32 on the CPU with no gradient recorded, the 3x3 conv and the strided patchify conv each run with their
    ReLU as one oneDNN kernel: the same values."""
    torch.manual_seed(3)
    block = ResidualBlock(3, 3, hidden=NARROW_ROWS + 2, stride=2)
    w = block.weights()
    h = torch.randn(2, NARROW_ROWS + 2, 7, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = block.mix_conv(h, w)
    reference = block.mix_conv(h.requires_grad_(), w)
    assert reference.grad_fn is not None  # the unfused path, differentiable
    assert torch.allclose(fused, reference.detach(), rtol=0, atol=1e-5)
    assert fused.min() == 0 and fused.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 10)  # the strided patchify conv: NCHW input and weight
    with torch.no_grad():
        fused = block.down_relu(x, w)
    reference = block.down_relu(x.requires_grad_(), w)
    assert reference.grad_fn is not None
    assert torch.allclose(fused, reference.detach(), rtol=0, atol=1e-5)
    assert fused.min() == 0 and fused.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("hidden", "stride"), [(NARROW_ROWS, 1), (NARROW_ROWS, 2), (NARROW_ROWS + 1, 1)])
def test_2d_hidden_activations_are_channels_last_unless_narrow(hidden: int, stride: int) -> None:
    """The 3x3 conv reads channels-last activations; its output, the up GEMM's operand, is in (B, k, N) order
    when k <= NARROW_ROWS."""
    block = ResidualBlock(4, 4, hidden=hidden, stride=stride)
    with torch.no_grad():
        w = block.weights()
        h0 = block.down_relu(torch.randn(2, 4, 8, 10), w)
        h = block.mix_conv(h0, w)
    assert h0.is_contiguous(memory_format=torch.channels_last) and not h0.is_contiguous()
    assert h.is_contiguous() == (hidden <= NARROW_ROWS)
    assert h.is_contiguous(memory_format=torch.channels_last) == (hidden > NARROW_ROWS)

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from irecon.invertible.coupling import AdditiveCoupling
from irecon.invertible.engine import invertible_chain, reverse_chain
from irecon.invertible.testing import ChannelAffine

from .conftest import Chain, make_chain


class ConvDtypes(TorchDispatchMode):
    """Records the output dtype of every forward convolution run inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            self.seen.append(out.dtype)
        return out


def _loss(y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (y * weights).sum() + 0.5 * (y**2).sum()


def _grads(chain: Chain, memory_free: bool, x: torch.Tensor, kspace: torch.Tensor, w: torch.Tensor):
    chain.modules.zero_grad(set_to_none=True)
    x.grad = kspace.grad = None
    y = invertible_chain(x, chain.ops, (kspace, chain.data[1]), memory_free=memory_free)
    _loss(y, w).backward()
    return y.detach(), x.grad.clone(), kspace.grad.clone(), [p.grad.clone() for p in chain.modules.parameters()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def test_memory_free_gradients_equal_plain_autograd(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    kspace = chain.data[0].clone().requires_grad_()
    w = torch.randn(chain.shape, dtype=torch.float64)
    y0, gx0, gk0, gp0 = _grads(chain, False, x, kspace, w)
    y1, gx1, gk1, gp1 = _grads(chain, True, x, kspace, w)
    assert _rel(y1, y0) < 1e-12
    assert _rel(gx1, gx0) < 1e-10
    assert _rel(gk1, gk0) < 1e-10
    assert len(gp0) == len(gp1) > 0
    for a, b in zip(gp1, gp0):
        assert _rel(a, b) < 1e-10


def test_reverse_of_whole_chain_is_exact(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64)
    y = invertible_chain(x, chain.ops, chain.data)
    assert (y - x).abs().max() > 1e-3  # the chain does something
    assert (reverse_chain(y, chain.ops, chain.data) - x).abs().max() <= 1e-12 * x.abs().max()


def test_steps_have_distinct_weights(chain: Chain) -> None:
    vectors = [layer.rotation.vectors for layer in chain.modules]
    assert all(not torch.equal(vectors[0], v) for v in vectors[1:])


def test_caller_tensors_are_never_changed(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    kspace, mask = (t.clone() for t in chain.data)
    before = (x.detach().clone(), kspace.clone(), mask.clone())
    y = invertible_chain(x, chain.ops, (kspace, mask))
    gy = torch.randn_like(y)
    gy_before = gy.clone()
    y.backward(gy)
    assert torch.equal(x.detach(), before[0])
    assert torch.equal(kspace, before[1]) and torch.equal(mask, before[2])
    assert torch.equal(gy, gy_before)
    assert x.grad is not None


def test_output_kept_intact_through_backward(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64)
    y = invertible_chain(x, chain.ops, chain.data)
    kept = y.detach().clone()
    y.sum().backward()
    assert torch.equal(y.detach(), kept)


def test_autograd_grad_matches_backward(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(chain.shape, dtype=torch.float64)
    params = list(chain.modules.parameters())
    y = invertible_chain(x, chain.ops, chain.data)
    by_grad = torch.autograd.grad(_loss(y, w), [x, *params])
    assert all(p.grad is None for p in params)
    y = invertible_chain(x, chain.ops, chain.data, memory_free=False)
    reference = torch.autograd.grad(_loss(y, w), [x, *params])
    for a, b in zip(by_grad, reference):
        assert _rel(a, b) < 1e-10


def test_second_backward_raises_clear_error(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    loss = invertible_chain(x, chain.ops, chain.data).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_retain_graph_gives_the_same_gradient_twice(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    loss = invertible_chain(x, chain.ops, chain.data).square().sum()
    first = torch.autograd.grad(loss, x, retain_graph=True)[0]
    second = torch.autograd.grad(loss, x)[0]
    assert torch.equal(first, second)


def test_no_grad_runs_in_place_only_when_allowed(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64)
    with torch.no_grad():
        y = invertible_chain(x, chain.ops, chain.data)
        assert y.data_ptr() != x.data_ptr()
        owned = x.clone()
        z = invertible_chain(owned, chain.ops, chain.data, inplace=True)
    assert z.data_ptr() == owned.data_ptr()
    assert torch.equal(z, y)


def test_float32_gradients_close_to_plain() -> None:
    chain = make_chain(2, dtype=torch.float32)
    x = torch.randn(chain.shape, requires_grad=True)
    kspace = chain.data[0].clone().requires_grad_()
    w = torch.randn(chain.shape)
    _, gx0, _, gp0 = _grads(chain, False, x, kspace, w)
    _, gx1, _, gp1 = _grads(chain, True, x, kspace, w)
    assert _rel(gx1, gx0) < 1e-4
    assert sum((a - b).norm() ** 2 for a, b in zip(gp1, gp0)) ** 0.5 < 1e-3 * sum(b.norm() ** 2 for b in gp0) ** 0.5


def test_autocast_bf16_runs_blocks_in_bf16_and_keeps_state_float32() -> None:
    chain = make_chain(2, dtype=torch.float32)
    x = torch.randn(chain.shape, requires_grad=True)
    with ConvDtypes() as conv_dtypes, torch.autocast("cpu", dtype=torch.bfloat16):
        y = invertible_chain(x, chain.ops, chain.data)
        loss = y.float().square().mean()
    loss.backward()
    seen = conv_dtypes.seen
    assert y.dtype == torch.float32
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_plain = invertible_chain(x, chain.ops, chain.data, memory_free=False)
    assert ((y_plain - y).norm() / y.norm()).item() < 1e-2


def test_default_backward_op_in_a_chain_matches_plain(chain: Chain) -> None:
    affine = ChannelAffine(chain.shape[1]).double()
    ops = [chain.ops[0], affine, *chain.ops[1:4], affine]
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    mask = chain.data[1].clone().requires_grad_()
    w = torch.randn(chain.shape, dtype=torch.float64)
    params = [affine.log_scale, affine.shift, *chain.modules[0].parameters()]
    results = []
    for memory_free in (True, False):
        y = invertible_chain(x, ops, (chain.data[0], mask), memory_free=memory_free)
        results.append(torch.autograd.grad(_loss(y, w), [x, mask, *params]))
    for a, b in zip(*results):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("pattern", ["full+mask", "full*mask"])
def test_mask_gradients_equal_plain_autograd(chain: Chain, pattern: str) -> None:
    """The data depend on a mask that requires grad, directly and through the k-space."""
    full = torch.randn_like(chain.data[0])
    x = torch.randn(chain.shape, dtype=torch.float64)
    w = torch.randn(chain.shape, dtype=torch.float64)
    results = []
    for memory_free in (True, False):
        mask = chain.data[1].clone().requires_grad_()
        kspace = full + mask if pattern == "full+mask" else full * mask
        y = invertible_chain(x, chain.ops, (kspace, mask), memory_free=memory_free)
        results.append(torch.autograd.grad(_loss(y, w), [mask, *chain.modules.parameters()]))
    (mask1, *grads1), (mask0, *grads0) = results
    assert mask0.abs().max() > 0
    assert _rel(mask1, mask0) < 1e-10
    for a, b in zip(grads1, grads0):
        assert _rel(a, b) < 1e-10


def _backward_with_hooks(chain: Chain, memory_free: bool) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """(tensor-hook calls, post-accumulate-hook calls, gradients) per parameter for one backward."""
    params = list(chain.modules.parameters())
    chain.modules.zero_grad(set_to_none=True)
    hook_calls, accumulated = [0] * len(params), [0] * len(params)

    def doubling(i: int):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            hook_calls[i] += 1
            return grad * 2

        return hook

    def counting(i: int):
        return lambda p: accumulated.__setitem__(i, accumulated[i] + 1)

    handles = [p.register_hook(doubling(i)) for i, p in enumerate(params)]
    handles += [p.register_post_accumulate_grad_hook(counting(i)) for i, p in enumerate(params)]
    x = torch.randn(chain.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    invertible_chain(x, chain.ops, chain.data, memory_free=memory_free).square().sum().backward()
    for handle in handles:
        handle.remove()
    return hook_calls, accumulated, [p.grad.clone() for p in params]


def test_parameter_hooks_run_once_per_backward(chain: Chain) -> None:
    hooks, accumulated, grads = _backward_with_hooks(chain, memory_free=True)
    plain_hooks, plain_accumulated, plain_grads = _backward_with_hooks(chain, memory_free=False)
    names = [name for name, _ in chain.modules.named_parameters()]
    assert any("original0" in n for n in names) and any("vectors" in n for n in names)
    assert hooks == plain_hooks == [1] * len(names)
    assert accumulated == plain_accumulated == [1] * len(names)
    for a, b in zip(grads, plain_grads):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("memory_free", [True, False], ids=["memory-free", "plain"])
def test_in_place_change_to_data_before_backward_raises(chain: Chain, memory_free: bool) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    kspace, mask = (t.clone() for t in chain.data)
    loss = invertible_chain(x, chain.ops, (kspace, mask), memory_free=memory_free).square().sum()
    mask[..., 0] = 1 - mask[..., 0]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_in_place_change_to_a_parameter_before_backward_raises(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    loss = invertible_chain(x, chain.ops, chain.data).square().sum()
    with torch.no_grad():
        chain.modules[0].rotation.vectors.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_double_backward_asks_for_plain_autograd(chain: Chain) -> None:
    x = torch.randn(chain.shape, dtype=torch.float64, requires_grad=True)
    loss = invertible_chain(x, chain.ops, chain.data).square().sum()
    with pytest.raises(RuntimeError, match="first-order gradients only.*--no-memory-free.*memory_free=False"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_bf16_autocast_gradients_close_to_float32() -> None:
    """Memory-free gradients under bf16 autocast against float32 plain-autograd gradients.

    bf16 keeps 8 significant bits (unit round-off 2^-8 = 3.9e-3); every convolution rounds its
    input, weights and output to it and the errors add up over the chain's 6 coupling blocks,
    so the parameter gradients here differ from float32 by 1.7e-2 (the state gradient by 2e-3).
    Allowed: 3e-2 for both, under twice the measured error yet far below an O(1) error.
    """
    chain = make_chain(2, dtype=torch.float32)
    x = torch.randn(chain.shape, requires_grad=True)
    kspace = chain.data[0].clone().requires_grad_()
    w = torch.randn(chain.shape)
    _, gx32, _, gp32 = _grads(chain, False, x, kspace, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, gx16, _, gp16 = _grads(chain, True, x, kspace, w)
    assert _rel(_flat(gp16), _flat(gp32)) < 3e-2
    assert _rel(gx16, gx32) < 3e-2


def test_kept_outputs_stop_round_off_from_building_up() -> None:
    """A +1e5 shift rounds an O(1) float32 state to multiples of 2^-7; keeping the coupling's
    output undoes that for the coupling's gradients."""
    torch.manual_seed(0)
    coupling = AdditiveCoupling(4, hidden=4)
    shift = ChannelAffine(4)
    with torch.no_grad():
        shift.log_scale.zero_()
        shift.shift.fill_(1e5)
    x = torch.randn(1, 4, 8, 8)
    data = (torch.zeros(1, 1, 8, 8, dtype=torch.complex64), torch.ones(1, 1, 1, 8))
    w = torch.randn(1, 4, 8, 8)

    def coupling_grads(ops, data, x, w, **kw) -> torch.Tensor:
        y = invertible_chain(x, ops, data, **kw)
        return _flat(list(torch.autograd.grad((y * w).sum(), ops[0].op_parameters)))

    reference = coupling_grads(
        [copy.deepcopy(coupling).double(), copy.deepcopy(shift).double()],
        (data[0].to(torch.complex128), data[1].double()),
        x.double(),
        w.double(),
        memory_free=False,
    )
    drifted = coupling_grads([coupling, shift], data, x, w)
    kept = coupling_grads([coupling, shift], data, x, w, keep=[0])
    assert _rel(drifted.double(), reference) > 1e-4
    assert _rel(kept.double(), reference) < 1e-5

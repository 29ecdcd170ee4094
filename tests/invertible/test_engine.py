import pytest
import torch

from irecon.invertible.engine import invertible_chain, reverse_chain

from .conftest import Chain, make_chain


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
    seen: list[torch.dtype] = []
    hook = chain.modules[0].coupling.block.mix.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = invertible_chain(x, chain.ops, chain.data)
        loss = y.float().square().mean()
    loss.backward()
    hook.remove()
    assert y.dtype == torch.float32
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_plain = invertible_chain(x, chain.ops, chain.data, memory_free=False)
    assert ((y_plain - y).norm() / y.norm()).item() < 1e-2

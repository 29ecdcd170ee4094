"""The contract every InvertibleOp keeps, as one check, and a small op that uses the default backward_."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from irecon.invertible.engine import InvertibleOp


class ChannelAffine(nn.Module, InvertibleOp):
    """y = x * exp(log_scale) + shift * mask per channel; relies on the default backward_."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(0.3 * torch.randn(channels))
        self.shift = nn.Parameter(torch.randn(channels))

    @property
    def op_parameters(self) -> tuple[Tensor, ...]:
        return (self.log_scale, self.shift)

    def _coefficients(self, x: Tensor, data: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return self.log_scale.exp().view(view), self.shift.view(view) * data[1]

    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        scale, offset = self._coefficients(x, data)
        return x * scale + offset

    @torch.no_grad()
    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        scale, offset = self._coefficients(x, data)
        x.mul_(scale).add_(offset)

    @torch.no_grad()
    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        scale, offset = self._coefficients(y, data)
        y.sub_(offset).div_(scale)


def _assert_close(actual: Tensor | None, expected: Tensor | None, tol: float, what: str) -> None:
    """Max error within ``tol`` times the expected value's size; None stands for a zero gradient."""
    if expected is None:
        assert actual is None or not actual.any(), f"{what}: expected no gradient"
        return
    assert actual is not None, f"{what}: gradient missing"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    error = (actual - expected).abs().max().item()
    assert error <= tol * max(1.0, expected.abs().max().item()), f"{what}: max error {error:.3g}"


def check_op_contract(op: InvertibleOp, x: Tensor, data: Sequence[Tensor], tol: float = 1e-12) -> None:
    """transform_ == transform, invert_ undoes transform_, backward_ == the autograd VJP of transform.

    Every floating data tensor is differentiated, so ops that ignore the data must return no
    gradient for it (nor for frozen parameters), and backward_ must not run the parameters' hooks (the engine delivers those).
    """
    data = tuple(data)
    params = op.op_parameters
    with torch.no_grad():
        y = op.transform(x, data)
    assert (y - x).abs().max() > 1e-3, "the op does not change its input"
    z = x.clone()
    op.transform_(z, data)
    _assert_close(z, y, tol, "transform_ vs transform")
    op.invert_(z, data)
    _assert_close(z, x, tol, "invert_(transform_(x)) vs x")

    leaf_x = x.clone().requires_grad_()
    leaf_data = tuple(d.clone().requires_grad_() if d.is_floating_point() or d.is_complex() else d for d in data)
    grad_y = torch.randn_like(y)
    wanted = (leaf_x, *(p for p in params if p.requires_grad), *(d for d in leaf_data if d.requires_grad))
    found = iter(torch.autograd.grad(op.transform(leaf_x, leaf_data), wanted, grad_y, allow_unused=True))
    reference_x = next(found)
    reference_params = [next(found) if p.requires_grad else None for p in params]
    reference_data = [next(found) if d.requires_grad else None for d in leaf_data]

    calls: list[int] = []
    handles = [p.register_hook(lambda g: calls.append(1)) for p in params if p.requires_grad]
    state, grad = y.clone(), grad_y.clone()
    detached = tuple(d.detach().requires_grad_(d.requires_grad) for d in leaf_data)
    try:
        param_grads, data_grads = op.backward_(state, grad, detached)
    finally:
        for handle in handles:
            handle.remove()
    assert not calls, "backward_ ran parameter hooks"
    _assert_close(state, x, tol, "state after backward_")
    _assert_close(grad, reference_x, tol, "dL/dx")
    assert len(param_grads) == len(params)
    for i, (actual, expected) in enumerate(zip(param_grads, reference_params)):
        _assert_close(actual, expected, tol, f"parameter {i}")
    data_grads = data_grads or (None,) * len(data)
    assert len(data_grads) == len(data)
    for i, (actual, expected) in enumerate(zip(data_grads, reference_data)):
        _assert_close(actual, expected, tol, f"data {i}")

"""The i-RIM's invertible layers: U^T o coupling o U, and the data-consistency (gradient) layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from irecon.invertible.coupling import AdditiveCoupling
from irecon.invertible.engine import Grads, InvertibleOp, detached_alias, grads_or_none
from irecon.invertible.householder import HouseholderConv


class InvertibleLayer(nn.Module):
    """y = U^T C(U x): an additive coupling conjugated by an orthogonal 1x1 conv (appendix eqs 1-4).

    Every layer is a residual update in the original channel basis, so the image estimate stays in
    the channels where the data-consistency layer reads it.
    """

    def __init__(self, channels: int, hidden: int, stride: int = 1, dims: int = 2, num_reflections: int = 3) -> None:
        super().__init__()
        self.rotation = HouseholderConv(channels, num_reflections)
        self.coupling = AdditiveCoupling(channels, hidden, stride, dims)

    def ops(self) -> list[InvertibleOp]:
        """The three chain steps: U, coupling, U^T (U's parameters get gradients from both)."""
        return [self.rotation.op(), self.coupling, self.rotation.op(transpose=True)]


GradientFn = Callable[..., Tensor]
GradientVjp = Callable[[Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor | None]]


class DataConsistencyLayer(nn.Module, InvertibleOp):
    """Adds grad_fn(x[:, :n], *data) into channels n..2n (the gradient accumulator).

    The image channels pass unchanged, so the layer is additive and exactly invertible whatever
    the gradient function is. ``gradient_vjp(grad, kspace, mask, want_kspace)``, if given, is the
    gradient function's (image, k-space) VJP for data (kspace, mask); backward uses it instead of
    an autograd graph unless the mask needs a gradient.
    """

    def __init__(self, image_channels: int, gradient_fn: GradientFn, gradient_vjp: GradientVjp | None = None) -> None:
        super().__init__()
        self.n = image_channels
        self.gradient_fn = gradient_fn
        self.gradient_vjp = gradient_vjp

    @property
    def op_parameters(self) -> tuple[Tensor, ...]:
        return ()

    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        n = self.n
        image = x[:, :n]
        return torch.cat([image, x[:, n : 2 * n] + self.gradient_fn(image, *data), x[:, 2 * n :]], dim=1)

    @torch.no_grad()
    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        x[:, self.n : 2 * self.n].add_(self.gradient_fn(x[:, : self.n], *data))

    @torch.no_grad()
    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        y[:, self.n : 2 * self.n].sub_(self.gradient_fn(y[:, : self.n], *data))

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        n = self.n
        if self.gradient_vjp is not None and len(data) == 2 and not data[1].requires_grad:
            with torch.no_grad():
                kspace, mask = data
                y[:, n : 2 * n].sub_(self.gradient_fn(y[:, :n], kspace, mask))
                grad_image, grad_kspace = self.gradient_vjp(grad_y[:, n : 2 * n], kspace, mask, kspace.requires_grad)
                grad_y[:, :n].add_(grad_image)
            return (), (grad_kspace, None)
        with torch.enable_grad():
            image = detached_alias(y[:, :n]).requires_grad_()
            gradient = self.gradient_fn(image, *data)
        grads = grads_or_none(gradient, (image, *data), grad_y[:, n : 2 * n])
        with torch.no_grad():
            y[:, n : 2 * n].sub_(gradient)
            grad_y[:, :n].add_(grads[0])
        return (), grads[1:]

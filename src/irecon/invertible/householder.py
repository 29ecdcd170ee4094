"""Orthogonal 1x1 convolution as a product of Householder reflections (i-RIM appendix A).

W = H_1 H_2 ... H_n with H_k = I - 2 v_k v_k^T / (v_k^T v_k). W is orthogonal by construction, so its
inverse is its transpose and reconstruction errors are never amplified. Plain autograd applies W as
one dense 1x1 convolution; the memory-free path uses the compact WY form W = I - V T V^T (V the
C x n vectors, T n x n upper triangular): x <- x - (V T) (V^T x) in place is two passes over the
state whatever n is, against two per reflection (and eight per reflection in backward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from irecon.invertible.engine import Grads, InvertibleOp, autocast


def _flat(x: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, C, N) view of a contiguous state."""
    return x.view(x.shape[0], x.shape[1], -1)


def _apply(m: Tensor, xf: Tensor) -> Tensor:
    """m @ x at every pixel of a (B, C, N) tensor: one batched GEMM that reads the state in place."""
    return torch.bmm(m.expand(xf.shape[0], -1, -1), xf)


def _pull(g: Tensor, s: Tensor) -> Tensor:
    """sum_b g_b s_b^T for (B, C, N) and (B, n, N) tensors, as (C, n): a transposed GEMM on views."""
    return torch.bmm(g, s.transpose(1, 2)).sum(0)


def wy_factors(vectors: Tensor, transpose: bool) -> tuple[Tensor, Tensor]:
    """(A, V) with W = H_1 ... H_n = I - A V^T (or W^T when ``transpose``) for the (n, C) ``vectors``.

    Compact WY form W = I - V T V^T, A = V T (V T^T for W^T), with T^-1 = M = strict upper triangle of
    V^T V + diag(v_k . v_k) / 2 (Joffrain et al. 2006): A is one small triangular solve, differentiable.
    """
    gram = vectors @ vectors.t()
    m = gram.triu(1) + torch.diag(gram.diagonal() / 2)
    v = vectors.t()
    return torch.linalg.solve_triangular(m.t() if transpose else m, v, upper=not transpose, left=False), v


class HouseholderConv(nn.Module):
    """Orthogonal channel mixing y = W x over the channel dimension of (B, C, [S,] H, W) tensors."""

    def __init__(self, channels: int, num_reflections: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.vectors = nn.Parameter(torch.randn(min(num_reflections, channels), channels))

    def matrix(self) -> Tensor:
        """W = H_1 ... H_n as a dense (C, C) matrix (differentiable in the vectors)."""
        eye = torch.eye(self.channels, dtype=self.vectors.dtype, device=self.vectors.device)
        reflections = [eye - 2 * torch.outer(v, v) / torch.dot(v, v) for v in self.vectors]
        return reflections[0] if len(reflections) == 1 else torch.linalg.multi_dot(reflections)

    def op(self, transpose: bool = False) -> "HouseholderOp":
        """The chain op applying W (or W^T when ``transpose``)."""
        return HouseholderOp(self, transpose)


class HouseholderOp(InvertibleOp):
    """y = W x (or W^T x) for one :class:`HouseholderConv`; both directions share its vectors."""

    def __init__(self, conv: HouseholderConv, transpose: bool) -> None:
        self.conv = conv
        self.transpose = transpose

    @property
    def op_parameters(self) -> tuple[Tensor, ...]:
        return (self.conv.vectors,)

    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        with autocast(x.device.type, enabled=False):
            w = self.conv.matrix().to(x.dtype)
            w = w.t() if self.transpose else w
            xf = _flat(x)
            return torch.bmm(w.expand(xf.shape[0], -1, -1), xf).view_as(x)

    def _factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(A, V) with the op's map y = x - A V^T x, detached, in ``dtype``."""
        with torch.no_grad():
            return tuple(f.to(dtype) for f in wy_factors(self.conv.vectors, self.transpose))  # type: ignore[return-value]

    @torch.no_grad()
    def _update_(self, x: Tensor, left: Tensor, right: Tensor) -> None:
        """x <- x - left (right^T x) at every pixel, in place (two passes over the state)."""
        xf = _flat(x)
        xf.baddbmm_(left.expand(xf.shape[0], -1, -1), _apply(right.t(), xf), alpha=-1)

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        with autocast(x.device.type, enabled=False):
            a, v = self._factors(x.dtype)
            self._update_(x, a, v)

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        with autocast(y.device.type, enabled=False):
            a, v = self._factors(y.dtype)
            self._update_(y, v, a)

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """Undo y = x - A S (S = V^T x) in place, turn grad_y into dL/dx and return dL/dvectors.

        x = y - V A^T y; dL/dx = g - V R with R = A^T g; dL/dA = -g S^T and dL/dV = -x R^T, pulled back to
        the vectors through the small WY factors by autograd: seven passes over the state, each a GEMM
        with n rows or columns (S from x rather than from V^T y by an n x n product: GEMMs with an inner
        size of n ran slower than a pass over the state).
        """
        vectors = self.conv.vectors
        with torch.enable_grad(), autocast(y.device.type, enabled=False):
            alias = vectors.detach().requires_grad_(vectors.requires_grad)
            factors = wy_factors(alias, self.transpose)
        with torch.no_grad(), autocast(y.device.type, enabled=False):
            a, v = (f.detach().to(y.dtype) for f in factors)
            yf, gf = _flat(y), _flat(grad_y)
            self._update_(y, v, a)
            s = _apply(v.t(), yf)
            r = _apply(a.t(), gf)
            grad_a = -_pull(gf, s) if vectors.requires_grad else None
            gf.baddbmm_(v.expand(gf.shape[0], -1, -1), r, alpha=-1)
            grad_v = -_pull(yf, r) if vectors.requires_grad else None
            del r, s
        if grad_a is None or grad_v is None:
            return (None,), ()
        grad_outputs = [grad_a.to(factors[0].dtype), grad_v.to(factors[1].dtype)]
        with autocast(y.device.type, enabled=False):
            (grad,) = torch.autograd.grad(factors, [alias], grad_outputs)
        return (grad,), ()

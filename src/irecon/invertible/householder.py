"""Orthogonal 1x1 convolution as a product of Householder reflections (i-RIM appendix A).

W = H_1 H_2 ... H_n with H_k = I - 2 v_k v_k^T / (v_k^T v_k). W is orthogonal by construction, so its
inverse is its transpose and reconstruction errors are never amplified. Plain autograd applies W as
one dense 1x1 convolution; :class:`HouseholderOp`'s in-place paths use the compact WY form
W = I - V T V^T (V the C x n vectors, T n x n upper triangular): x <- x - (V T) (V^T x) in place is
two passes over the state whatever n is. The i-RIM's layers never rotate the state in place: they
fold W into their coupling (:class:`irecon.invertible.layers.InvertibleLayer`).
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
    """sum_b g_b s_b^T for (B, C, N) and (B, n, N) tensors, as (C, n): the GEMM s g^T on views, transposed
    (the (n, C) product ran about 1.8x faster than the (C, n) one on the CPU)."""
    return torch.bmm(s, g.transpose(1, 2)).sum(0).t()


def _half_diagonal(square: Tensor) -> Tensor:
    """The upper triangle of a square matrix with its diagonal halved (a new tensor)."""
    upper = square.triu()
    upper.diagonal().mul_(0.5)
    return upper


def wy_factors(vectors: Tensor, transpose: bool) -> tuple[Tensor, Tensor]:
    """(A, V) with W = H_1 ... H_n = I - A V^T (or W^T when ``transpose``) for the (n, C) ``vectors``.

    Compact WY form W = I - V T V^T, A = V T (V T^T for W^T), with T^-1 = M = strict upper triangle of
    V^T V + diag(v_k . v_k) / 2 (Joffrain et al. 2006): A is one small triangular solve, differentiable.
    """
    m = _half_diagonal(vectors @ vectors.t())
    v = vectors.t()
    return torch.linalg.solve_triangular(m.t() if transpose else m, v, upper=not transpose, left=False), v


def wy_factors_backward(vectors: Tensor, transpose: bool, a: Tensor, grad_a: Tensor, grad_v: Tensor) -> Tensor:
    """dL/dvectors from dL/dA and dL/dV of :func:`wy_factors` (A = V M^-1, or V M^-T for W^T), by hand.

    With P = dL/dA M^-T (M^-1 for W^T): dL/dV += P, dL/dM = -A^T P (-P^T A), which reaches the Gram
    matrix through its upper triangle and then V: a few (n, n) and (C, n) products, no autograd graph.
    """
    m = _half_diagonal(vectors @ vectors.t())
    if transpose:
        p = torch.linalg.solve_triangular(m, grad_a, upper=True, left=False)
        grad_m = p.t() @ a
    else:
        p = torch.linalg.solve_triangular(m.t(), grad_a, upper=False, left=False)
        grad_m = a.t() @ p
    grad_gram = _half_diagonal(grad_m)
    return torch.addmm((grad_v + p).t(), grad_gram + grad_gram.t(), vectors, alpha=-1)


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
        return HouseholderOp(((self, transpose),))


Factor = tuple[HouseholderConv, bool]


class HouseholderOp(InvertibleOp):
    """y = M_k ... M_1 x for ``factors`` (conv, transpose) in chain order, M = W or W^T of the conv.

    Several factors are one product of reflections (W^T reverses a conv's vectors), so one WY update
    applies them all.
    """

    def __init__(self, factors: Sequence[Factor]) -> None:
        self.factors = tuple(factors)

    @property
    def op_parameters(self) -> tuple[Tensor, ...]:
        return tuple(conv.vectors for conv, _ in self.factors)

    def _reflections(self, vectors: Sequence[Tensor]) -> tuple[Tensor, bool]:
        """(reflection vectors, transpose) of the op's product for :func:`wy_factors`, from each factor's vectors."""
        if len(self.factors) == 1:
            return vectors[0], self.factors[0][1]
        return torch.cat([v.flip(0) if t else v for (_, t), v in zip(reversed(self.factors), reversed(vectors))]), False

    def _factor_grads(self, grad: Tensor) -> tuple[Tensor, ...]:
        """The gradient of :meth:`_reflections`' vectors split back into one per factor."""
        if len(self.factors) == 1:
            return (grad,)
        sizes = [conv.vectors.shape[0] for conv, _ in reversed(self.factors)]
        parts = [g.flip(0) if t else g for (_, t), g in zip(reversed(self.factors), grad.split(sizes))]
        return tuple(reversed(parts))

    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        with autocast(x.device.type, enabled=False):
            w = None
            for conv, transpose in self.factors:
                m = conv.matrix().t() if transpose else conv.matrix()
                w = m if w is None else m @ w
            assert w is not None
            xf = _flat(x)
            return torch.bmm(w.to(x.dtype).expand(xf.shape[0], -1, -1), xf).view_as(x)

    def _factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(A, V) with the op's map y = x - A V^T x, detached, in ``dtype``."""
        with torch.no_grad():
            return tuple(f.to(dtype) for f in wy_factors(*self._reflections(self.op_parameters)))  # type: ignore[return-value]

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

        x = y - V A^T y; dL/dx = g - V R with R = A^T g; dL/dA = -g S^T and dL/dV = -x R^T, pulled back
        to the vectors by :func:`wy_factors_backward`: seven passes over the state, each a GEMM
        with n rows or columns (S from x rather than from V^T y by an n x n product: GEMMs with an inner
        size of n ran slower than a pass over the state).
        """
        params = self.op_parameters
        wanted = any(p.requires_grad for p in params)
        with torch.no_grad(), autocast(y.device.type, enabled=False):
            vectors, transpose = self._reflections(params)
            a, v = wy_factors(vectors, transpose)
            yf, gf = _flat(y), _flat(grad_y)
            a_state, v_state = a.to(y.dtype), v.to(y.dtype)
            self._update_(y, v_state, a_state)
            s = _apply(v_state.t(), yf)
            r = _apply(a_state.t(), gf)
            pull_a = _pull(gf, s) if wanted else None
            gf.baddbmm_(v_state.expand(gf.shape[0], -1, -1), r, alpha=-1)
            pull_v = _pull(yf, r) if wanted else None
            del r, s
            if pull_a is None or pull_v is None:
                return (None,) * len(params), ()
            # dL/dA = -pull_a and dL/dV = -pull_v; the pull-back is linear, so the sign goes on at the end
            grad = wy_factors_backward(vectors, transpose, a, pull_a.to(a.dtype), pull_v.to(a.dtype)).neg_()
            return tuple(g if p.requires_grad else None for p, g in zip(params, self._factor_grads(grad))), ()

"""Orthogonal 1x1 convolution as a product of Householder reflections (i-RIM appendix A).

W = H_1 H_2 ... H_n with H_k = I - 2 v_k v_k^T / (v_k^T v_k). W is orthogonal by construction, so its
inverse is its transpose and reconstruction errors are never amplified. Plain autograd applies W as
one dense 1x1 convolution; the memory-free path applies the reflections one by one in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from irecon.invertible.engine import Grads, InvertibleOp, autocast


def _flat(x: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, C, N) view of a contiguous state."""
    return x.view(x.shape[0], x.shape[1], -1)


def _project(v: Tensor, xf: Tensor) -> Tensor:
    """v . x at every pixel of a (B, C, N) tensor, as (B, 1, N): one batched (1, C) @ (C, N) product.

    ``torch.matmul(v, xf)`` would copy the whole state into (B, N, C) layout first; bmm reads it in place.
    """
    return torch.bmm(v.view(1, 1, -1).expand(xf.shape[0], 1, -1), xf)


def _pull(p: Tensor, xf: Tensor) -> Tensor:
    """sum_p x_p p_p over the pixels of a (B, C, N) tensor and a (B, 1, N) field, as (C,).

    bmm with the transposed view of ``xf`` runs as a transposed GEMM, without copying the state.
    """
    return torch.bmm(p, xf.transpose(1, 2)).sum((0, 1))


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

    def _order(self, transpose: bool) -> range:
        """Reflection indices in the order they act on x: W x applies H_n first, W^T x applies H_1 first."""
        n = self.vectors.shape[0]
        return range(n) if transpose else range(n - 1, -1, -1)


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

    def _scaled(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(v, c, c v) for every reflection at once, c = 2 / (v.v), in the state's dtype."""
        v = self.conv.vectors.detach().to(dtype)
        c = 2 / torch.stack([torch.dot(u, u) for u in v])
        return v, c, c.unsqueeze(1) * v

    @torch.no_grad()
    def _reflect_all_(self, x: Tensor, order: Sequence[int]) -> None:
        xf = _flat(x)
        with autocast(x.device.type, enabled=False):
            v, _, cv = self._scaled(x.dtype)
            for k in order:
                xf.addcmul_(cv[k].view(1, -1, 1), _project(v[k], xf), value=-1)

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        self._reflect_all_(x, self.conv._order(self.transpose))

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        self._reflect_all_(y, list(reversed(self.conv._order(self.transpose))))

    @torch.no_grad()
    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """Undo each reflection x = H y and pull the gradient back, H being its own inverse.

        For out = x - c v (v.x) with c = 2 / (v.v), r = v.grad_out and s = v.x = -v.out per pixel:
        dL/dv = -c sum_p (grad_out_p s_p + x_p r_p) + c^2 v sum_p r_p s_p,  dL/dx = H grad_out.
        """
        vectors = self.conv.vectors
        yf, gf = _flat(y), _flat(grad_y)
        pulled, rs = [], []
        with autocast(y.device.type, enabled=False):
            v, c, cv = self._scaled(y.dtype)
            order = list(reversed(self.conv._order(self.transpose)))
            for k in order:
                s_out = _project(v[k], yf)
                yf.addcmul_(cv[k].view(1, -1, 1), s_out, value=-1)
                r = _project(v[k], gf)
                if vectors.requires_grad:
                    pulled.append(_pull(r, yf) - _pull(s_out, gf))
                    rs.append(-(r * s_out).sum())
                gf.addcmul_(cv[k].view(1, -1, 1), r, value=-1)
        if not vectors.requires_grad:
            return (None,), ()
        index = torch.tensor(order, device=v.device)
        pulled_k = torch.stack(pulled)
        grads = -c[index, None] * pulled_k + (c[index] ** 2 * torch.stack(rs)).unsqueeze(1) * v[index]
        return (torch.zeros_like(vectors).index_copy_(0, index, grads.to(vectors.dtype)),), ()

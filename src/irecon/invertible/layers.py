"""The i-RIM's invertible layers: U^T o coupling o U, and the data-consistency (gradient) layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from irecon.invertible.coupling import (
    ROTATION_GEMM,
    AdditiveCoupling,
    conv_weight,
    flat_channels,
    patch_image,
    patch_major,
    profiler_label,
    weight_grads,
    weight_originals,
)
from irecon.invertible.engine import Grads, InvertibleOp, autocast, detached_alias, grads_or_none
from irecon.invertible.householder import HouseholderConv, wy_factors, wy_factors_backward


class InvertibleLayer(nn.Module, InvertibleOp):
    """y = U^T C(U x): an additive coupling C conjugated by an orthogonal 1x1 conv U (appendix eqs 1-4).

    With U's rows split like the coupling's channels, U = [Q; R], U^T C(U x) = x + R^T G(Q x) exactly
    (U^T U = I), and Q R^T = 0 keeps Q x fixed. So the in-place paths never rotate the state: Q goes into
    the patchify conv's weight, which reads the whole state, and each group of the GLU's output reaches
    the state through one GEMM with R^T. Plain autograd (:meth:`transform`) runs U, C and U^T as written.
    Every layer is a residual update in the original channel basis, so the image estimate stays in the
    channels where the data-consistency layer reads it.
    """

    def __init__(self, channels: int, hidden: int, stride: int = 1, dims: int = 2, num_reflections: int = 3) -> None:
        super().__init__()
        self.rotation = HouseholderConv(channels, num_reflections)
        self.coupling = AdditiveCoupling(channels, hidden, stride, dims)

    def ops(self) -> list[InvertibleOp]:
        """The layer as one chain step."""
        return [self]

    @property
    def op_parameters(self) -> tuple[Tensor, ...]:
        return (self.rotation.vectors, *self.coupling.op_parameters)

    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        x = self.rotation.op().transform(x, data)
        return self.rotation.op(transpose=True).transform(self.coupling.transform(x, data), data)

    def _rotation_split(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(Q, R^T, A, V) in ``dtype`` (Q and R^T) with U = I - A V^T = [Q; R], from the vectors' WY factors."""
        with autocast(self.rotation.vectors.device.type, enabled=False):
            a, v = wy_factors(self.rotation.vectors, transpose=False)
            u = torch.eye(v.shape[0], dtype=v.dtype, device=v.device).sub_(a @ v.t()).to(dtype)
        split = self.coupling.split
        return u[:split], u[split:].t(), a, v

    @torch.no_grad()
    def _add_g_(self, x: Tensor, sign: int) -> None:
        """x <- x + sign R^T G(Q x), the GLU done in place in each group of G's output channels."""
        block = self.coupling.block
        q, r_t, _, _ = self._rotation_split(x.dtype)
        w = block.weights(fold=q)
        h = block.hidden(x, w)
        flat = x.view(x.shape[0], x.shape[1], -1)
        for lo, hi in block.chunks(h):
            values, gates = block.up_products(h, w.up, lo, hi).chunk(2, dim=1)
            values.mul_(gates.sigmoid_())
            gated = _image_order(values, x.shape[2:], spare=gates).to(x.dtype)
            with profiler_label(ROTATION_GEMM):
                flat.baddbmm_(r_t[:, lo:hi].expand(x.shape[0], -1, -1), gated, alpha=sign)
            del values, gates, gated  # before the next group is computed

    def _fold_grads(
        self, found: dict[int, Tensor], grad_down: Tensor, grad_r: Tensor | None, q: Tensor, a: Tensor, v: Tensor
    ) -> None:
        """Add to ``found`` the gradients of the patchify conv's own weight sources and of the vectors (if
        ``grad_r``), from dL/d(folded weight W' = W Q) (k, C, *patch) and dL/dR (n_out, C); skip frozen ones."""
        block = self.coupling.block
        k, c = grad_down.shape[:2]
        grad_rows = grad_down.transpose(0, 1).reshape(c, -1).to(a.dtype)  # (C, k prod(patch))
        split = q.shape[0]
        if any(t.requires_grad for t in weight_originals(block.down)):  # dL/dW = dL/dW' Q^T
            grad_source = torch.mm(q.to(a.dtype), grad_rows).view(split, k, *grad_down.shape[2:]).transpose(0, 1)
            found.update(weight_grads(block.down, grad_source))
        if grad_r is None:
            return
        source = conv_weight(block.down, {}).to(a.dtype)
        # dL/dQ sums W^T dL/dW' over the hidden channels and the patch; U = [Q; R] = I - A V^T
        grad_q = torch.mm(source.transpose(0, 1).reshape(split, -1), grad_rows.t())
        grad_u = torch.cat([grad_q, grad_r.to(a.dtype)])
        vectors = self.rotation.vectors
        found[id(vectors)] = wy_factors_backward(vectors, False, a, -grad_u @ v, -grad_u.t() @ a).to(vectors.dtype)

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(x, +1)

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(y, -1)

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """G's backward at Q y = Q x (:meth:`ResidualBlock.backward_`) with the GLU's update undone through R^T,
        then the gradients of R^T (GEMMs on the GLU's output) and of the folded patchify weight pulled back to
        the vectors by hand (:func:`wy_factors_backward`)."""
        block = self.coupling.block
        vectors = self.rotation.vectors
        convs = (block.down, block.mix, block.up)
        want_rotation = vectors.requires_grad
        wanted = [any(t.requires_grad for t in weight_originals(conv)) for conv in convs]
        b, c = y.shape[:2]
        with torch.no_grad():
            q, r_t, a, v = self._rotation_split(y.dtype)
            state, grad = y.view(b, c, -1), grad_y.view(b, c, -1)
            grad_r: list[Tensor] = []  # dL/dR, one (c, C) block per group

            def undo_glu(buf: Tensor, lo: int, hi: int) -> None:
                values, gates = buf.chunk(2, dim=1)
                values.mul_(gates.sigmoid_())
                gated = _image_order(values, y.shape[2:]).to(y.dtype)
                with profiler_label(ROTATION_GEMM):
                    state.baddbmm_(r_t[:, lo:hi].expand(b, -1, -1), gated, alpha=-1)
                    if want_rotation:  # sum_b gated_b g_b^T (the faster GEMM of the two orders)
                        grad_r.append(torch.bmm(gated, grad.transpose(1, 2)).sum(0))
                    del gated
                    grad_gated = torch.bmm(r_t[:, lo:hi].t().expand(b, -1, -1), grad)
                grad_gated = grad_gated.view(b, hi - lo, *y.shape[2:])
                grad_gated = patch_major(grad_gated, block.patch).to(buf.dtype)
                values.addcmul_(values, gates, value=-1).mul_(grad_gated)  # dL/db = g a s (1 - s)
                gates.mul_(grad_gated)  # dL/da = g s

            w = block.weights(fold=q)
            found, grad_down = block.backward_(y, w, undo_glu, grad_y, [wanted[0] or want_rotation, *wanted[1:]])
            if grad_down is not None:
                with autocast(y.device.type, enabled=False):
                    whole = (grad_r[0] if len(grad_r) == 1 else torch.cat(grad_r)) if want_rotation else None
                    self._fold_grads(found, grad_down, whole, q, a, v)
        return tuple(found.get(id(p)) if p.requires_grad else None for p in self.op_parameters), ()


def _image_order(products: Tensor, size: Sequence[int], spare: Tensor | None = None) -> Tensor:
    """Patch-major (B, c, *patch, *low) products as (B, c, N) in image order: a view for a one-pixel patch, else
    a copy, written over ``spare`` (the products' shape, no longer needed) when the patches tile the image."""
    m = (products.dim() - 2) // 2
    patch, low = products.shape[2 : 2 + m], products.shape[2 + m :]
    tiled = all(lo * p == s for lo, p, s in zip(low, patch, size))
    if all(p == 1 for p in patch) or spare is None or not tiled:
        return flat_channels(patch_image(products, size))
    b, c = products.shape[:2]
    n = products[0].numel() // c
    target = spare.as_strided((b, c, n), (spare.stride(0), n, 1))
    order = [d for i in range(m) for d in (2 + m + i, 2 + i)]
    target.view(b, c, *(x for pair in zip(low, patch) for x in pair)).copy_(products.permute(0, 1, *order))
    return target


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

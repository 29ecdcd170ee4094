"""The i-RIM's invertible layers: U^T o coupling o U, and the data-consistency (gradient) layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from irecon.invertible.coupling import (
    ROTATION_GEMM,
    AdditiveCoupling,
    glu_grads_,
    profiler_label,
    weight_grads,
    weight_originals,
)
from irecon.invertible.engine import Grads, InvertibleOp, autocast, detached_alias, grads_or_none
from irecon.invertible.householder import HouseholderConv, wy_factors, wy_factors_backward
from irecon.invertible.patches import flat_channels, patch_image, patch_major, write_patch_columns


class InvertibleLayer(nn.Module, InvertibleOp):
    """y = U^T C(U x): an additive coupling C conjugated by an orthogonal 1x1 conv U (appendix eqs 1-4).

    With U's rows split like the coupling's channels, U = [Q; R], U^T C(U x) = x + R^T G(Q x) exactly
    (U^T U = I), and Q R^T = 0 keeps Q x fixed. So the in-place paths never rotate the state: Q goes into
    the patchify conv's weight, which reads the whole state, and G's output g reaches the state through
    R^T. When g is one group (:meth:`ResidualBlock.chunks`), that is one GEMM with R^T. When it comes in
    several, the compact WY form U = I - A V^T (V the n reflection vectors, A = V T) gives
    R^T g = [0; g] - V (A_2^T g), A_2 = A's rows of the conditioned half: each group is added to that
    half where it lies, as in the plain coupling, and one rank-n update x <- x - V S, S = A_2^T g summed
    over the groups, does the rest, so the passes over the whole state do not multiply with the groups.
    Plain autograd (:meth:`transform`) runs U, C and U^T as written.
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

    def _factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(A, V, U): U = I - A V^T = [Q; R] in ``dtype`` from the vectors' WY factors A, V (their dtype)."""
        with autocast(self.rotation.vectors.device.type, enabled=False):
            a, v = wy_factors(self.rotation.vectors, transpose=False)
            u = torch.eye(v.shape[0], dtype=v.dtype, device=v.device).addmm_(a, v.t(), alpha=-1)
        return a, v, u.to(dtype)

    @torch.no_grad()
    def _add_g_(self, x: Tensor, sign: int) -> None:
        """x <- x + sign R^T G(Q x). One group of G's output: one GEMM with R^T on the GLU's output in image order.
        Several: each group added to the conditioned half in place, then the rank-n update x <- x - sign V S."""
        block = self.coupling.block
        split = self.coupling.split
        a, v, u = self._factors(x.dtype)
        w = block.weights(fold=u[:split])
        h = block.hidden(x, w)
        flat = x.view(x.shape[0], x.shape[1], -1)
        projected: Tensor | None = None  # S = A_2^T g, patch-major
        for lo, hi in block.chunks(h):
            values, gates = block.up_products(h, w.up, lo, hi).chunk(2, dim=1)
            values.mul_(gates.sigmoid_())
            if (lo, hi) == (0, block.n_out):
                image = _image_order(values, block.patch, x)
                with profiler_label(ROTATION_GEMM):  # R^T g
                    flat.baddbmm_(u[split:].t().expand(x.shape[0], -1, -1), image, alpha=sign)
                return
            write_patch_columns(
                Tensor.add_, patch_major(x[:, split + lo : split + hi], block.patch), values, alpha=sign
            )
            projected = _project(a[split + lo : split + hi], values, projected)
            del values, gates  # before the next group is computed
        assert projected is not None
        image = _image_order(projected, block.patch, x)
        with profiler_label(ROTATION_GEMM):
            flat.baddbmm_(v.to(x.dtype).expand(x.shape[0], -1, -1), image, alpha=-sign)

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(x, +1)

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(y, -1)

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """G's backward at Q y = Q x (:meth:`ResidualBlock.backward_`) fed dL/dg = R ḡ, the update undone as
        :meth:`_add_g_` made it, and the gradients of A and V (from R and from the folded patchify weight) pulled
        back to the vectors by hand (:func:`wy_factors_backward`).

        One group: R^T's three GEMMs on the whole state (the undo, R ḡ, g ḡ^T). Several: R ḡ = ḡ_2 - A_2 (V^T ḡ)
        and x = y - [0; g] + V S, still three passes over the whole state (V^T ḡ, the rank-n undo, S ḡ^T) however
        many groups there are.
        """
        block = self.coupling.block
        split = self.coupling.split
        want_rotation = self.rotation.vectors.requires_grad
        wanted = block.wanted()
        b, c = y.shape[:2]
        with torch.no_grad():
            a, v, u = self._factors(y.dtype)
            v_state = v.to(y.dtype)
            state, grad = y.view(b, c, -1), grad_y.view(b, c, -1)
            y2, g2 = y[:, split:], grad_y[:, split:]
            pulled: list[Tensor] = []  # V^T ḡ, (B, n, N) patch-major, once the first of several groups comes
            projected: list[Tensor | None] = [None]  # S = A_2^T g, patch-major, summed over the groups
            grad_a: list[Tensor] = []  # dL/dA_2, one (c, n) block per group
            grad_v: list[Tensor] = []  # dL/dV from the rank-n update

            def undo_glu(buf: Tensor, lo: int, hi: int) -> None:
                if (lo, hi) == (0, block.n_out):
                    undo_whole_glu(buf)
                    return
                if not pulled:
                    with profiler_label(ROTATION_GEMM):
                        image = torch.bmm(v_state.t().expand(b, -1, -1), grad).view(b, -1, *y.shape[2:])
                    pulled.append(patch_major(image, block.patch).contiguous().view(b, image.shape[1], -1))
                pulled_flat = pulled[0]
                values, gates = buf.chunk(2, dim=1)
                values.mul_(gates.sigmoid_())  # g = a s
                write_patch_columns(Tensor.sub_, patch_major(y2[:, lo:hi], block.patch), values)
                a_group = a[split + lo : split + hi]
                projected[0] = _project(a_group, values, projected[0])
                flat_values = values.reshape(b, hi - lo, -1)
                grad_g = torch.empty_like(values, memory_format=torch.contiguous_format)
                grad_g.copy_(patch_major(g2[:, lo:hi], block.patch))
                with profiler_label(ROTATION_GEMM):
                    if want_rotation:  # dL/dA_2 = -sum g (V^T ḡ)^T
                        grad_a.append(torch.bmm(flat_values, pulled_flat.transpose(1, 2)).sum(0).neg_())
                    grad_g.view(b, hi - lo, -1).baddbmm_(
                        a_group.to(grad_g.dtype).expand(b, -1, -1), pulled_flat.to(grad_g.dtype), alpha=-1
                    )
                glu_grads_(values, gates, grad_g)  # [dL/db | dL/da]
                if hi == block.n_out:  # the last group: undo the rank-n update while ḡ is still dL/dy
                    image = _image_order(projected[0], block.patch, y)
                    with profiler_label(ROTATION_GEMM):
                        state.baddbmm_(v_state.expand(b, -1, -1), image)
                        if want_rotation:  # dL/dV = -sum ḡ S^T, as the (n, C) product
                            grad_v.append(torch.bmm(image, grad.transpose(1, 2)).sum(0).t().neg_())

            def undo_whole_glu(buf: Tensor) -> None:
                """One group: the update and dL/dg as GEMMs with R^T on the whole state (fewer passes than the rank-n
                form when nothing is repeated per group)."""
                values, gates = buf.chunk(2, dim=1)
                values.mul_(gates.sigmoid_())  # g = a s
                image = _image_order(values, block.patch, y)
                r = u[split:]
                with profiler_label(ROTATION_GEMM):
                    state.baddbmm_(r.t().expand(b, -1, -1), image, alpha=-1)
                    if want_rotation:  # dL/dR = sum g ḡ^T, and R = [0 I] - A_2 V^T
                        grad_r = torch.bmm(image, grad.transpose(1, 2)).sum(0).to(a.dtype)
                        with autocast(y.device.type, enabled=False):
                            grad_a.append(-grad_r @ v)
                            grad_v.append(-grad_r.t() @ a[split:])
                    del image
                    grad_g = torch.bmm(r.expand(b, -1, -1), grad).view(b, block.n_out, *y.shape[2:])
                grad_g = patch_major(grad_g, block.patch).to(buf.dtype)
                glu_grads_(values, gates, grad_g)  # [dL/db | dL/da]

            q = u[:split]
            w = block.weights(fold=q, keep_source=True)
            found, grad_down = block.backward_(y, w, undo_glu, grad_y, [wanted[0] or want_rotation, *wanted[1:]])
            if grad_down is not None:
                with autocast(y.device.type, enabled=False):
                    rank_n = (torch.cat(grad_a), grad_v[0]) if want_rotation else None
                    assert w.down_source is not None
                    self._fold_grads(found, grad_down, rank_n, q, w.down_source, a, v)
        return tuple(found.get(id(p)) if p.requires_grad else None for p in self.op_parameters), ()

    def _fold_grads(
        self,
        found: dict[int, Tensor],
        grad_down: Tensor,
        rank_n: tuple[Tensor, Tensor] | None,
        q: Tensor,
        source: Tensor,
        a: Tensor,
        v: Tensor,
    ) -> None:
        """Add to ``found`` the gradients of the patchify conv's own weight sources and of the vectors (if
        ``rank_n``, the rank-n update's dL/dA_2 and dL/dV), from dL/d(folded weight W' = W Q), W = ``source``; skip
        frozen ones."""
        block = self.coupling.block
        k, c = grad_down.shape[:2]
        grad_rows = grad_down.transpose(0, 1).reshape(c, -1).to(a.dtype)  # (C, k prod(patch))
        split = q.shape[0]
        if any(t.requires_grad for t in weight_originals(block.down)):  # dL/dW = dL/dW' Q^T
            grad_source = torch.mm(q.to(a.dtype), grad_rows).view(split, k, *grad_down.shape[2:]).transpose(0, 1)
            found.update(weight_grads(block.down, grad_source))
        if rank_n is None:
            return
        source = source.to(a.dtype)
        # dL/dQ sums W^T dL/dW' over the hidden channels and the patch; Q = [I 0] - A_1 V^T
        grad_q = torch.mm(source.transpose(0, 1).reshape(split, -1), grad_rows.t())
        grad_a = torch.cat([-grad_q @ v, rank_n[0].to(a.dtype)])
        grad_v = torch.addmm(rank_n[1].to(a.dtype), grad_q.t(), a[:split], alpha=-1)
        vectors = self.rotation.vectors
        found[id(vectors)] = wy_factors_backward(vectors, False, a, grad_a, grad_v).to(vectors.dtype)


def _project(rows: Tensor, values: Tensor, total: Tensor | None) -> Tensor:
    """total + rows^T values for (c, n) ``rows`` and (B, c, ...) ``values``: (B, n, N) in the values' pixel order."""
    b, c = values.shape[:2]
    flat = values.reshape(b, c, -1)
    left = rows.t().to(flat.dtype).expand(b, -1, -1)
    with profiler_label(ROTATION_GEMM):
        return torch.bmm(left, flat) if total is None else total.baddbmm_(left, flat)


def _image_order(projected: Tensor, patch: Sequence[int], like: Tensor) -> Tensor:
    """Patch-major (B, n, N) products over the pixels the patches of ``patch`` cover, as (B, n, N) in the image
    order of ``like`` and in its dtype, zero where no patch reaches (a copy unless the patch is one pixel)."""
    size = like.shape[2:]
    low = [s // p for s, p in zip(size, patch)]
    image = patch_image(projected.view(*projected.shape[:2], *patch, *low), size)
    return flat_channels(image).to(like.dtype)


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

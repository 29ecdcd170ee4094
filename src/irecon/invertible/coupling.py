"""Additive coupling y2 = x2 + G(x1) with the official i-RIM residual block G.

G: strided "patchify" conv (kernel = stride = d) -> ReLU -> 3x3 (3x3x3) conv -> ReLU -> transposed
conv back to the input size -> GLU, all weight-normed. In 3-D the stride is (1, d, d): slices are
never downsampled. Because y1 = x1, G evaluated at the output gives both the inverse and the
vector-Jacobian product, so the memory-free backward evaluates G once per layer and differentiates
it by hand, without an autograd graph (one ``convolution_backward`` for the 3x3 conv, GEMMs for the
others, the weight norms' gradients by formula); parameter hooks run only when the engine returns
the gradients. In 2-D, G's hidden activations are channels last (the 3x3 conv's backward ran ~2x
faster on them).

The in-place paths compute each weight once per call and run the transposed conv and the GLU in
groups of output channels of at most ``group_bytes`` (:data:`GROUP_BYTES`) of values and gates, so a
large G's full-resolution output is never whole in memory; a small one is one group (each group
repeats the up conv's GEMMs and the gate's passes).
The transposed conv (kernel = stride) is one GEMM whose output stays in patch-major order
(B, c, *patch, *low); the GLU reads it and the state through strided views, so no layout copy is
made (torch's own transposed conv copied its full-resolution output, 3x slower than the GEMM).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import _WeightNorm, weight_norm
from torch.profiler import record_function

from irecon.invertible.engine import Grads, InvertibleOp
from irecon.invertible.patches import flat_channels, patch_image, patch_major, write_patch_columns

CONV_GEMM = "irecon::conv_gemm"
"""Profiler label of the GEMMs (and their bias terms) that compute G's patchify and transposed convolutions
(benchmarks/engine.py)."""

ROTATION_GEMM = "irecon::rotation_gemm"
"""Profiler label of the GEMMs that apply a layer's orthogonal 1x1 conv folded into its coupling, and their
gradients (:class:`irecon.invertible.layers.InvertibleLayer`)."""


GROUP_BYTES = 8 * 2**20
"""The most bytes of G's full-resolution output (values and gates) the in-place paths hold at once (8 MiB:
four groups for the paper's 64-channel state at 320x320, one for the tiny presets)."""

NARROW_ROWS = 8
"""Hidden widths k up to which a 2-D block's GEMMs with k values per pixel (the stride-1 patchify conv, the up
conv, their gradients) use (B, k, N) order and a layout copy each way, not the channels-last rows the 3x3 conv
reads. benchmarks/narrow_rows.py prints the figures: on a 2-core AMD EPYC (torch 2.13's MKL), a stride-1
paper-2d layer at 320x320 ran 2.0x (forward) and 2.3x (backward) faster so at k = 8, about as fast at 12 and
slower at 16-32."""

GluStep = Callable[[Tensor, int, int], None]
"""``undo_glu(buf, lo, hi)`` of :meth:`ResidualBlock.backward_`."""


class BlockWeights(NamedTuple):
    """G's effective (weight-normed) convolution weights and biases for one call."""

    down: Tensor
    down_bias: Tensor | None
    mix: Tensor
    mix_bias: Tensor | None
    up: Tensor
    down_source: Tensor | None = None
    """The patchify conv's own weight when ``down`` has another matrix folded into it."""


def conv_weight(conv: nn.Module, swap: Mapping[int, Tensor]) -> Tensor:
    """The conv's weight, through its weight-norm parametrization if any; ``swap`` replaces tensors by id."""
    originals = [swap.get(id(t), t) for t in weight_originals(conv)]
    plist = _weight_parametrizations(conv)
    if plist is None:
        return originals[0]
    first = plist[0]
    if isinstance(first, _WeightNorm) and len(originals) == 2:  # the parametrization's own kernel, called directly
        value = torch._weight_norm(originals[1], originals[0], first.dim)
    else:
        value = first(*originals)
    for extra in list(plist)[1:]:
        value = extra(value)
    return value


class ResidualBlock(nn.Module):
    """G(x1): (B, n_in, [S,] H, W) -> (B, n_out, [S,] H, W) with hidden width k and stride d."""

    def __init__(
        self, n_in: int, n_out: int, hidden: int, stride: int, dims: int = 2, group_bytes: int = GROUP_BYTES
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        conv, conv_t = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        self.patch = (stride, stride) if dims == 2 else (1, stride, stride)
        self.n_out = n_out
        self.group_bytes = group_bytes
        self.conv_fn = F.conv2d if dims == 2 else F.conv3d
        # hidden activations channels last in 2-D; in 3-D the CPU convs return NCDHW whatever the weights' layout
        # while the meta kernels follow the weights, so the shapes-only planner would count other bytes
        self.channels_last = dims == 2
        self.down = weight_norm(conv(n_in, hidden, kernel_size=self.patch, stride=self.patch))
        self.mix = weight_norm(conv(hidden, hidden, kernel_size=3, padding=1))
        self.up = weight_norm(conv_t(hidden, 2 * n_out, kernel_size=self.patch, stride=self.patch, bias=False))

    def weights(
        self, swap: Mapping[int, Tensor] | None = None, fold: Tensor | None = None, keep_source: bool = False
    ) -> BlockWeights:
        """Every weight computed once; ``swap`` maps parameter ids to the tensors to use instead. ``fold``, an
        (n_in, C) matrix, goes into the patchify conv's weight, which then reads ``fold @ x`` from a C-channel x;
        ``keep_source`` keeps the patchify conv's own weight too (``down_source``, for the gradients)."""
        swap = swap or {}
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        source = down = conv_weight(self.down, swap)
        if fold is not None:  # W' = sum_s W[:, s] fold[s]: one (C, s) x (s, k prod(patch)) product
            k, s = down.shape[:2]
            folded = torch.mm(fold.t().to(down.dtype), down.transpose(0, 1).reshape(s, -1))
            down = folded.view(fold.shape[1], k, *down.shape[2:]).transpose(0, 1)
        return BlockWeights(
            down.contiguous(),  # NCHW like the state: a channels-last weight made the strided conv copy its input
            None if self.down.bias is None else swap.get(id(self.down.bias), self.down.bias),
            conv_weight(self.mix, swap).contiguous(memory_format=layout),
            None if self.mix.bias is None else swap.get(id(self.mix.bias), self.mix.bias),
            conv_weight(self.up, swap),
            source if fold is not None and keep_source else None,
        )

    def down_relu(self, x1: Tensor, w: BlockWeights) -> Tensor:
        """The patchify conv and its ReLU; with a one-pixel patch a GEMM that reads x1 where it lies."""
        if any(p != 1 for p in self.patch):  # NCHW weight like x1: x1 is not copied
            if _fused_relu(x1, w.down):
                m = len(self.patch)
                h = torch.ops.mkldnn._convolution_pointwise(
                    x1, w.down, w.down_bias, [0] * m, self.patch, [1] * m, 1, "relu", [], ""
                )
            else:
                h = F.relu(self.conv_fn(x1, w.down, w.down_bias, stride=self.patch), inplace=True)
            return h.contiguous(memory_format=torch.channels_last) if self.channels_last else h
        b, c = x1.shape[:2]
        weight, flat = w.down.reshape(-1, c), x1.reshape(b, c, -1)
        if not self.channels_last:
            with _conv_gemm_label():
                if w.down_bias is None:
                    h = torch.bmm(weight.expand(b, -1, -1), flat).view(b, -1, *x1.shape[2:])
                else:
                    bias = w.down_bias.view(1, -1, 1).expand(b, -1, flat.shape[2])
                    h = torch.baddbmm(bias, weight.expand(b, -1, -1), flat).view(b, -1, *x1.shape[2:])
            return F.relu(h, inplace=True)
        if weight.shape[0] <= NARROW_ROWS:  # (B, k, N) product, then its rows
            with _conv_gemm_label():
                h = torch.bmm(weight.expand(b, -1, -1), flat)
                if w.down_bias is not None:
                    h.add_(w.down_bias.view(1, -1, 1))
            h = F.relu(h, inplace=True).view(b, -1, *x1.shape[2:])
            return h.contiguous(memory_format=torch.channels_last)
        with _conv_gemm_label():
            h = torch.bmm(flat.transpose(1, 2), weight.t().expand(b, -1, -1))
            if w.down_bias is not None:  # faster than baddbmm's copy of the expanded bias, in this layout
                h.add_(w.down_bias)
        return F.relu(h, inplace=True).view(b, *x1.shape[2:], -1).movedim(-1, 1)

    def mix_conv(self, h: Tensor, w: BlockWeights) -> Tensor:
        """The 3x3 (3x3x3) conv and its ReLU at 1/d resolution (one oneDNN kernel where :func:`_fused_relu` says).

        Its output is the up GEMM's operand: with k <= ``NARROW_ROWS`` channels it is copied out of channels
        last into (B, k, N) order.
        """
        if _fused_relu(h, w.mix):
            m = h.dim() - 2
            out = torch.ops.mkldnn._convolution_pointwise(
                h, w.mix, w.mix_bias, [1] * m, [1] * m, [1] * m, 1, "relu", [], ""
            )
        else:
            out = F.relu(self.conv_fn(h, w.mix, w.mix_bias, padding=1), inplace=True)
        return out.contiguous() if out.shape[1] <= NARROW_ROWS else out

    def hidden(self, x1: Tensor, w: BlockWeights) -> Tensor:
        """The two ReLU convs: (B, n_in, ...) -> (B, k, ...) at 1/d resolution."""
        return self.mix_conv(self.down_relu(x1, w), w)

    @torch.no_grad()
    def down_backward_(self, x1: Tensor, down: Tensor, grad: Tensor, grad_x1: Tensor) -> Tensor:
        """Add dL/dx1 of the patchify conv into ``grad_x1`` in place (a GEMM in patch-major order, no
        full-size temporary); return dL/d(its weight). ``grad`` is dL/d(its output)."""
        b, k = grad.shape[:2]
        c = x1.shape[1]
        flat = flat_channels(grad)
        weight = down.reshape(k, c, -1).to(flat.dtype)
        in_place = all(p == 1 for p in self.patch) and grad_x1.dtype == flat.dtype
        if in_place:  # the GEMM adds into grad_x1 where it lies
            with _conv_gemm_label():
                grad_x1.view(b, c, -1).baddbmm_(weight.reshape(k, c).t().expand(b, -1, -1), flat)
        for lo, hi in () if in_place else _halves(c):  # half of x1's size at a time
            pulled = _batched(weight[:, lo:hi].reshape(k, -1).t(), flat)
            target = patch_major(grad_x1[:, lo:hi], self.patch)
            write_patch_columns(Tensor.add_, target, pulled.view(target.shape))
            del pulled
        if all(p == 1 for p in self.patch):
            x1_flat = x1.reshape(b, c, -1).to(flat.dtype)
            with _conv_gemm_label():
                if k <= NARROW_ROWS:  # (k, c) from a copy of the grad in (B, k, N) order
                    return torch.bmm(flat.contiguous(), x1_flat.transpose(1, 2)).sum(0).reshape(down.shape)
                # (c, k) from x1's rows and the channels-last grad's rows (2x faster than the (k, c) product)
                return torch.bmm(x1_flat, flat.transpose(1, 2)).sum(0).t().reshape(down.shape)
        m = len(self.patch)
        mask = [False, True, False]
        weight_grad = torch.ops.aten.convolution_backward(  # all NCHW, as x1 is: no copy of x1
            grad.contiguous(),
            x1.to(grad.dtype),
            down.to(grad.dtype),
            None,
            self.patch,
            [0] * m,
            [1] * m,
            False,
            [0] * m,
            1,
            mask,
        )[1]
        return weight_grad

    def up_weight(self, up: Tensor, lo: int, hi: int) -> Tensor:
        """The up conv's weight for pre-gate channels [values lo:hi | gates lo:hi], (k, 2 (hi - lo), *patch)."""
        n = self.n_out
        return up if (lo, hi) == (0, n) else torch.cat([up[:, lo:hi], up[:, n + lo : n + hi]], dim=1)

    def up_products(self, h: Tensor, up: Tensor, lo: int, hi: int) -> Tensor:
        """Pre-gate channels [values lo:hi | gates lo:hi] as (B, 2 (hi - lo), *patch, *low), patch-major.

        The transposed conv with kernel = stride is one GEMM over the hidden channels; see
        :func:`patch_major` for the state's matching view and :func:`patch_image` for the image.
        """
        up = self.up_weight(up, lo, hi)
        b, k = h.shape[:2]
        products = _batched(up.reshape(k, -1).t(), flat_channels(h))
        return products.view(b, up.shape[1], *up.shape[2:], *h.shape[2:])

    def wanted(self) -> list[bool]:
        """Which of (down, mix, up) need a weight gradient (:meth:`backward_`'s ``wanted``)."""
        return [any(t.requires_grad for t in weight_originals(conv)) for conv in (self.down, self.mix, self.up)]

    def chunks(self, h: Tensor) -> Iterator[tuple[int, int]]:
        """The output-channel ranges [lo, hi) the in-place paths treat one at a time for hidden activations ``h``:
        as few as keep each group's values and gates within ``group_bytes``."""
        per_channel = 2 * h[:, :1].numel() * math.prod(self.patch) * h.element_size()
        groups = min(self.n_out, max(1, math.ceil(self.n_out * per_channel / self.group_bytes)))
        bounds = [round(i * self.n_out / groups) for i in range(groups + 1)]
        return zip(bounds[:-1], bounds[1:])

    @torch.no_grad()
    def backward_(
        self, x1: Tensor, w: BlockWeights, undo_glu: GluStep, grad_x1: Tensor, wanted: Sequence[bool]
    ) -> tuple[dict[int, Tensor], Tensor | None]:
        """G's backward at the input ``x1``, by hand: the up conv and GLU (:meth:`up_backward_`), the 3x3 conv
        (one ``convolution_backward``), then the patchify conv, whose dL/dx1 is added into ``grad_x1`` in place.

        ``undo_glu(buf, lo, hi)`` undoes the GLU's update of the state for output channels [lo, hi) and turns
        ``buf`` = [a | b] into [dL/db | dL/da]; ``wanted`` says which of (down, mix, up) need weight gradients.
        Returns the mix and up weights' source tensors' and the biases' gradients by id, and dL/d(the patchify
        weight in ``w``), None unless wanted.
        """
        h0 = self.down_relu(x1, w)
        h = self.mix_conv(h0, w)
        grad_h, grad_up = self.up_backward_(h, w.up, undo_glu, wanted[2])
        torch.ops.aten.threshold_backward.grad_input(grad_h, h, 0, grad_input=grad_h)  # ReLU, in place
        del h
        grad_h = grad_h.contiguous(memory_format=torch.channels_last) if self.channels_last else grad_h
        mix_bias = self.mix.bias
        mask = [True, wanted[1], mix_bias is not None and mix_bias.requires_grad]
        m = h0.dim() - 2
        bias_sizes = None if mix_bias is None else [mix_bias.shape[0]]  # the meta kernel needs them
        grad_h0, grad_mix, grad_mix_bias = torch.ops.aten.convolution_backward(
            grad_h, h0, w.mix.to(grad_h.dtype), bias_sizes, [1] * m, [1] * m, [1] * m, False, [0] * m, 1, mask
        )
        del grad_h
        torch.ops.aten.threshold_backward.grad_input(grad_h0, h0, 0, grad_input=grad_h0)
        grad_down = self.down_backward_(x1, w.down, grad_h0, grad_x1)
        found: dict[int, Tensor] = {}
        down_bias = self.down.bias
        if down_bias is not None and down_bias.requires_grad:
            # the patchify conv's bias gradient (torch's convolution_backward computes it inside the conv op)
            with _conv_gemm_label():
                found[id(down_bias)] = grad_h0.sum([0, *range(2, grad_h0.dim())]).to(down_bias.dtype)
        if grad_mix_bias is not None and mix_bias is not None:
            found[id(mix_bias)] = grad_mix_bias.to(mix_bias.dtype)
        for conv, grad_w, want in zip((self.mix, self.up), (grad_mix, grad_up), wanted[1:]):
            if grad_w is not None and want:
                found.update(weight_grads(conv, grad_w))
        return found, grad_down if wanted[0] else None

    @torch.no_grad()
    def up_backward_(self, h: Tensor, up: Tensor, undo_glu: GluStep, want_up: bool) -> tuple[Tensor, Tensor | None]:
        """Undo the GLU's update chunk by chunk (``undo_glu``); return dL/dh and dL/d(up weight).

        Both are GEMMs on each chunk's [dL/db | dL/da] in patch-major order: dL/dh = U dL/dP and
        dL/dU = sum_b h_b dL/dP_b^T, with U the chunk's weight as (k, 2 m prod(patch)).
        """
        b, k = h.shape[:2]
        flat_h = flat_channels(h)
        grad_h: Tensor | None = None
        values_grads: list[Tensor] = []
        gates_grads: list[Tensor] = []
        n = self.n_out
        rows = not h.is_contiguous()  # channels last: dL/dh in the same (B, N, k) rows
        for lo, hi in self.chunks(h):
            buf = self.up_products(h, up, lo, hi)
            undo_glu(buf, lo, hi)
            weight = torch.cat([up[:, n + lo : n + hi], up[:, lo:hi]], dim=1)  # buf's order: [dL/db | dL/da]
            flat_buf = buf.view(b, weight[0].numel(), -1)
            left, right = weight.reshape(k, -1).to(flat_buf.dtype).expand(b, -1, -1), flat_buf
            if rows:
                left, right = right.transpose(1, 2), left.transpose(1, 2)
            with _conv_gemm_label():
                grad_h = torch.bmm(left, right) if grad_h is None else grad_h.baddbmm_(left, right)
            if want_up:
                with _conv_gemm_label():
                    pulled = torch.bmm(flat_buf, flat_h.transpose(1, 2)).sum(0).t().reshape(weight.shape)
                gates_grads.append(pulled[:, : hi - lo])
                values_grads.append(pulled[:, hi - lo :])
            del buf, flat_buf, left, right
        assert grad_h is not None
        grad_up = torch.cat(values_grads + gates_grads, dim=1) if want_up else None
        if rows:
            return grad_h.view(b, *h.shape[2:], k).movedim(-1, 1), grad_up
        return grad_h.view(b, k, *h.shape[2:]), grad_up

    def pre_gate(self, x1: Tensor) -> Tensor:
        """Everything up to the GLU: (B, 2 n_out, ...) holding the values, then the gates."""
        w = self.weights()
        return patch_image(self.up_products(self.hidden(x1, w), w.up, 0, self.n_out), x1.shape[2:])

    def forward(self, x1: Tensor) -> Tensor:
        return F.glu(self.pre_gate(x1), dim=1)


class AdditiveCoupling(nn.Module, InvertibleOp):
    """[x1, x2] -> [x1, x2 + G(x1)] on a channel split (first half conditions the second)."""

    def __init__(self, channels: int, hidden: int, stride: int = 1, dims: int = 2) -> None:
        super().__init__()
        self.split = channels // 2
        self.block = ResidualBlock(self.split, channels - self.split, hidden, stride, dims)

    @property
    def op_parameters(self) -> tuple[Tensor, ...]:
        """Each conv's bias and the tensors its weight comes from, read directly (``parameters()`` walks the
        modules: the engine asks twice per step and op)."""
        convs = (self.block.down, self.block.mix, self.block.up)
        return tuple(t for conv in convs for t in (conv.bias, *weight_originals(conv)) if t is not None)

    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        values, gates = self.block.pre_gate(x1).chunk(2, dim=1)
        return torch.cat([x1, torch.addcmul(x2, values, torch.sigmoid(gates))], dim=1)

    @torch.no_grad()
    def _add_g_(self, x: Tensor, sign: int) -> None:
        """x2 <- x2 + sign * G(x1), the GLU done in place in each chunk of G's output."""
        x1, x2 = x[:, : self.split], x[:, self.split :]
        w = self.block.weights()
        h = self.block.hidden(x1, w)
        for lo, hi in self.block.chunks(h):
            values, gates = self.block.up_products(h, w.up, lo, hi).chunk(2, dim=1)
            target = patch_major(x2[:, lo:hi], self.block.patch)
            write_patch_columns(Tensor.addcmul_, target, values, gates.sigmoid_(), value=sign)
            del values, gates  # before the next chunk is computed

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(x, +1)

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(y, -1)

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """G differentiated by hand at y1 = x1, no autograd graph (:meth:`ResidualBlock.backward_`)."""
        block = self.block
        wanted = block.wanted()
        y1, y2 = y[:, : self.split], y[:, self.split :]
        g1, g2 = grad_y[:, : self.split], grad_y[:, self.split :]
        patch = block.patch

        def undo_glu(buf: Tensor, lo: int, hi: int) -> None:
            _glu_grad_(buf, patch_major(y2[:, lo:hi], patch), patch_major(g2[:, lo:hi], patch))

        with torch.no_grad():
            found, grad_down = block.backward_(y1, block.weights(), undo_glu, g1, wanted)
            if grad_down is not None:
                found.update(weight_grads(block.down, grad_down))
        return tuple(found.get(id(p)) if p.requires_grad else None for p in self.op_parameters), ()


def _weight_parametrizations(conv: nn.Module) -> nn.Module | None:
    """The conv's weight's ParametrizationList, or None: read from the module dicts (what
    ``parametrize.is_parametrized`` and attribute access find, without their cost: the engine asks several times
    per op and step)."""
    plists = conv._modules.get("parametrizations")
    return None if plists is None else plists._modules.get("weight")


def weight_originals(conv: nn.Module) -> tuple[Tensor, ...]:
    """The leaf tensors the conv's weight is computed from (a weight norm's g and v, or the weight itself)."""
    plist = _weight_parametrizations(conv)
    if plist is None:
        return (conv._parameters["weight"],)
    found = plist._parameters
    return (found["original0"], found["original1"]) if "original0" in found else (found["original"],)


def weight_grads(conv: nn.Module, grad_w: Tensor) -> dict[int, Tensor]:
    """dL/d(each tensor the conv's weight comes from), keyed by id, from dL/dweight; a dim-0 weight norm
    w = g v / ||v|| by torch's own backward kernel (dL/dg = <G, v> / ||v||, dL/dv = g / ||v|| (G - dL/dg v / ||v||)),
    no autograd graph; other parametrizations by autograd."""
    originals = weight_originals(conv)
    plist = _weight_parametrizations(conv)
    if plist is None:
        return {id(originals[0]): grad_w.to(originals[0].dtype)}
    if len(plist) == 1 and isinstance(plist[0], _WeightNorm) and plist[0].dim == 0 and len(originals) == 2:
        g, v = originals
        with torch.no_grad():
            norm = torch.linalg.vector_norm(v, dim=list(range(1, v.dim())), keepdim=True)
            grad = grad_w if grad_w.dtype == v.dtype else grad_w.to(v.dtype)
            grad_v, grad_g = torch.ops.aten._weight_norm_interface_backward(grad.contiguous(), v, g, norm, 0)
        return {id(g): grad_g, id(v): grad_v}
    aliases = tuple(t.detach().requires_grad_(t.requires_grad) for t in originals)
    wanted = [a for a in aliases if a.requires_grad]
    with torch.enable_grad():
        value = conv_weight(conv, {id(t): a for t, a in zip(originals, aliases)})
        found = iter(torch.autograd.grad(value, wanted, grad_w.to(value.dtype), allow_unused=True))
    grads = {id(t): next(found) for t, a in zip(originals, aliases) if a.requires_grad}
    return {key: grad for key, grad in grads.items() if grad is not None}


FUSED_CONV_RELU = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
"""Whether this torch has oneDNN's convolution with a fused ReLU (the CPU kernel its compiler emits)."""


def _fused_relu(x: Tensor, weight: Tensor) -> bool:
    """Whether relu(conv(x)) runs as one oneDNN kernel: float32 2-D on the CPU, no gradient recorded, input and
    weight both channels last or both contiguous (a ReLU pass less over G's hidden activations; the same values)."""
    layout = torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return (
        FUSED_CONV_RELU
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous(memory_format=layout)
        and weight.is_contiguous(memory_format=layout)
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def profiler_label(name: str) -> contextlib.AbstractContextManager:
    """A profiler label (:data:`CONV_GEMM`, :data:`ROTATION_GEMM`); nothing when no profiler runs (under one, a label
    around a GEMM took tens of microseconds of its own)."""
    return record_function(name) if torch.autograd._profiler_enabled() else contextlib.nullcontext()


def _conv_gemm_label() -> contextlib.AbstractContextManager:
    """The profiler label of a convolution run as a GEMM."""
    return profiler_label(CONV_GEMM)


def _halves(n: int) -> tuple[tuple[int, int], ...]:
    """[0, n) in two ranges (one when n is 1)."""
    return ((0, n),) if n < 2 else ((0, n // 2), (n // 2, n))


def _batched(m: Tensor, x: Tensor) -> Tensor:
    """m @ x_b for every b of a (B, K, N) tensor, contiguous (torch.matmul folds the batch into a transposed,
    non-contiguous result that every later op then pays for)."""
    with _conv_gemm_label():
        return torch.bmm(m.expand(x.shape[0], -1, -1), x)


@torch.no_grad()
def _glu_grad_(buf: Tensor, y2: Tensor, g2: Tensor) -> None:
    """Undo y2 = x2 + a * sigmoid(b) in place and turn buf = [a | b] into [dL/db | dL/da] (note the order).

    With s = sigmoid(b): dL/da = g2 s and dL/db = g2 a s (1 - s); six passes, no temporary.
    """
    values, gates = buf.chunk(2, dim=1)
    values.mul_(gates.sigmoid_())
    write_patch_columns(Tensor.sub_, y2, values)
    glu_grads_(values, gates, g2)


@torch.no_grad()
def glu_grads_(gated: Tensor, gates: Tensor, grad: Tensor) -> None:
    """Turn ``gated`` = a s and ``gates`` = s = sigmoid(b) into dL/db = g a s (1 - s) and dL/da = g s in place,
    for g = ``grad`` = dL/d(a s); three passes."""
    gated.addcmul_(gated, gates, value=-1).mul_(grad)
    gates.mul_(grad)

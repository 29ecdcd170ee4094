"""Additive coupling y2 = x2 + G(x1) with the official i-RIM residual block G.

G: strided "patchify" conv (kernel = stride = d) -> ReLU -> 3x3 (3x3x3) conv -> ReLU -> transposed
conv back to the input size -> GLU, all weight-normed. In 3-D the stride is (1, d, d): slices are
never downsampled. Because y1 = x1, G evaluated at the output gives both the inverse and the
vector-Jacobian product, so the memory-free backward evaluates G once per layer (on detached
aliases of its weights, so hooks on them run only when the engine returns their gradients).

The in-place paths compute each weight once per call and run the transposed conv and the GLU in
``glu_chunks`` groups of output channels, so G's full-resolution output is never whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from irecon.invertible.engine import Grads, InvertibleOp, detached_alias


class BlockWeights(NamedTuple):
    """G's effective (weight-normed) convolution weights and biases for one call."""

    down: Tensor
    down_bias: Tensor | None
    mix: Tensor
    mix_bias: Tensor | None
    up: Tensor


def conv_weight(conv: nn.Module, swap: Mapping[int, Tensor]) -> Tensor:
    """The conv's weight, through its weight-norm parametrization if any; ``swap`` replaces tensors by id."""
    if not parametrize.is_parametrized(conv, "weight"):
        return swap.get(id(conv.weight), conv.weight)
    plist = conv.parametrizations.weight
    originals = (plist.original0, plist.original1) if hasattr(plist, "original0") else (plist.original,)
    value = plist[0](*(swap.get(id(t), t) for t in originals))
    for extra in list(plist)[1:]:
        value = extra(value)
    return value


class ResidualBlock(nn.Module):
    """G(x1): (B, n_in, [S,] H, W) -> (B, n_out, [S,] H, W) with hidden width k and stride d."""

    def __init__(self, n_in: int, n_out: int, hidden: int, stride: int, dims: int = 2, glu_chunks: int = 2) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        conv, conv_t = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        self.patch = (stride, stride) if dims == 2 else (1, stride, stride)
        self.n_out = n_out
        self.glu_chunks = max(1, min(glu_chunks, n_out))
        self.conv_fn = F.conv2d if dims == 2 else F.conv3d
        self.conv_t_fn = F.conv_transpose2d if dims == 2 else F.conv_transpose3d
        self.down = weight_norm(conv(n_in, hidden, kernel_size=self.patch, stride=self.patch))
        self.mix = weight_norm(conv(hidden, hidden, kernel_size=3, padding=1))
        self.up = weight_norm(conv_t(hidden, 2 * n_out, kernel_size=self.patch, stride=self.patch, bias=False))

    def weights(self, swap: Mapping[int, Tensor] | None = None) -> BlockWeights:
        """Every weight computed once; ``swap`` maps parameter ids to the tensors to use instead."""
        swap = swap or {}
        return BlockWeights(
            conv_weight(self.down, swap),
            None if self.down.bias is None else swap.get(id(self.down.bias), self.down.bias),
            conv_weight(self.mix, swap),
            None if self.mix.bias is None else swap.get(id(self.mix.bias), self.mix.bias),
            conv_weight(self.up, swap),
        )

    def hidden(self, x1: Tensor, w: BlockWeights) -> Tensor:
        """The two ReLU convs: (B, n_in, ...) -> (B, k, ...) at 1/d resolution."""
        h = F.relu(self.conv_fn(x1, w.down, w.down_bias, stride=self.patch), inplace=True)
        return F.relu(self.conv_fn(h, w.mix, w.mix_bias, padding=1), inplace=True)

    def up_chunk(self, h: Tensor, up: Tensor, size: Sequence[int], lo: int, hi: int) -> Tensor:
        """Pre-gate channels [values lo:hi | gates lo:hi] of G at spatial ``size``."""
        n = self.n_out
        if (lo, hi) != (0, n):
            up = torch.cat([up[:, lo:hi], up[:, n + lo : n + hi]], dim=1)
        padding = [s - i * p for s, i, p in zip(size, h.shape[2:], self.patch)]
        return self.conv_t_fn(h, up, stride=self.patch, output_padding=padding)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """The output-channel ranges [lo, hi) the in-place paths treat one at a time."""
        bounds = [round(i * self.n_out / self.glu_chunks) for i in range(self.glu_chunks + 1)]
        return zip(bounds[:-1], bounds[1:])

    def pre_gate(self, x1: Tensor) -> Tensor:
        """Everything up to the GLU: (B, 2 n_out, ...) holding the values, then the gates."""
        w = self.weights()
        return self.up_chunk(self.hidden(x1, w), w.up, x1.shape[2:], 0, self.n_out)

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
        return tuple(self.parameters())

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
        for lo, hi in self.block.chunks():
            values, gates = self.block.up_chunk(h, w.up, x1.shape[2:], lo, hi).chunk(2, dim=1)
            x2[:, lo:hi].addcmul_(values, gates.sigmoid_(), value=sign)
            del values, gates  # before the next chunk is computed

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(x, +1)

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(y, -1)

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        params = self.op_parameters
        aliases = tuple(p.detach().requires_grad_(p.requires_grad) for p in params)
        y1, y2 = y[:, : self.split], y[:, self.split :]
        g1, g2 = grad_y[:, : self.split], grad_y[:, self.split :]
        with torch.enable_grad():
            w = self.block.weights({id(p): a for p, a in zip(params, aliases)})
            x1 = detached_alias(y1).requires_grad_()
            h = self.block.hidden(x1, w)
        h_leaf = h.detach().requires_grad_()
        wanted = (h_leaf, w.up) if w.up.requires_grad else (h_leaf,)
        sums: list[Tensor | None] = [None] * len(wanted)
        for lo, hi in self.block.chunks():
            with torch.enable_grad():
                pre = self.block.up_chunk(h_leaf, w.up, x1.shape[2:], lo, hi)
            _glu_grad_(pre.detach(), y2[:, lo:hi], g2[:, lo:hi])
            for i, g in enumerate(torch.autograd.grad(pre, wanted, pre.detach())):
                sums[i] = g if sums[i] is None else sums[i].add_(g)
            del pre
        outputs, grad_outputs = [h, w.up][: len(wanted)], sums
        inputs = [t for t in (x1, *aliases) if t.requires_grad]
        found = iter(torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True))
        grads = tuple(next(found) if t.requires_grad else None for t in (x1, *aliases))
        with torch.no_grad():
            g1.add_(grads[0])
        return grads[1:], ()


@torch.no_grad()
def _glu_grad_(buf: Tensor, y2: Tensor, g2: Tensor) -> None:
    """Undo y2 = x2 + a * sigmoid(b) in place and turn buf = [a | b] into [dL/da | dL/db].

    With s = sigmoid(b): dL/da = g2 s and dL/db = g2 a s (1 - s); one temporary of a's size.
    """
    values, gates = buf.chunk(2, dim=1)
    gates.sigmoid_()
    y2.addcmul_(values, gates, value=-1)
    grad_values = g2 * gates
    gates.addcmul_(gates, gates, value=-1)
    gates.mul_(values).mul_(g2)
    values.copy_(grad_values)

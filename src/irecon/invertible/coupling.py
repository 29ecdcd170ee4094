"""Additive coupling y2 = x2 + G(x1) with the official i-RIM residual block G.

G: strided "patchify" conv (kernel = stride = d) -> ReLU -> 3x3 (3x3x3) conv -> ReLU -> transposed
conv back to the input size -> GLU, all weight-normed. In 3-D the stride is (1, d, d): slices are
never downsampled. Because y1 = x1, G evaluated at the output gives both the inverse and the
vector-Jacobian product, so the memory-free backward evaluates G once per layer (on detached
aliases of its weights, so hooks on them run only when the engine returns their gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from irecon.invertible.engine import Grads, InvertibleOp, call_with_aliases, detached_alias, grads_or_none


class ResidualBlock(nn.Module):
    """G(x1): (B, n_in, [S,] H, W) -> (B, n_out, [S,] H, W) with hidden width k and stride d."""

    def __init__(self, n_in: int, n_out: int, hidden: int, stride: int, dims: int = 2) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        conv, conv_t = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        patch = (stride, stride) if dims == 2 else (1, stride, stride)
        self.n_out = n_out
        self.down = weight_norm(conv(n_in, hidden, kernel_size=patch, stride=patch))
        self.mix = weight_norm(conv(hidden, hidden, kernel_size=3, padding=1))
        self.up = weight_norm(conv_t(hidden, 2 * n_out, kernel_size=patch, stride=patch, bias=False))

    def pre_gate(self, x1: Tensor) -> Tensor:
        """Everything up to the GLU: (B, 2 n_out, ...) holding the values, then the gates."""
        h = F.relu(self.down(x1), inplace=True)
        h = F.relu(self.mix(h), inplace=True)
        return self.up(h, output_size=x1.shape[2:])

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
        """x2 <- x2 + sign * G(x1), with the GLU done in place in G's own output buffer."""
        values, gates = self.block.pre_gate(x[:, : self.split]).chunk(2, dim=1)
        x[:, self.split :].addcmul_(values, gates.sigmoid_(), value=sign)

    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(x, +1)

    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        self._add_g_(y, -1)

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        g1, g2 = grad_y[:, : self.split], grad_y[:, self.split :]
        with torch.enable_grad():
            x1 = detached_alias(y1).requires_grad_()
            pre, aliases = call_with_aliases(self.block, self.op_parameters, self.block.pre_gate, x1)
        with torch.no_grad():
            # Turn G's pre-gate buffer [a | b] into its own gradient [dL/da | dL/db] in place:
            # G = a * s with s = sigmoid(b); dL/da = g2 * s, dL/db = g2 * a * s * (1 - s).
            buf = pre.detach()
            values, gates = buf.chunk(2, dim=1)
            gates.sigmoid_()
            y2.addcmul_(values, gates, value=-1)
            grad_values = g2 * gates
            gates.addcmul_(gates, gates, value=-1)
            gates.mul_(values).mul_(g2)
            values.copy_(grad_values)
            del grad_values
        grads = grads_or_none(pre, (x1, *aliases), buf)
        with torch.no_grad():
            g1.add_(grads[0])
        return grads[1:], ()

"""Memory-free back-propagation through a chain of invertible operations ("invert to learn").

A chain is a flat list of :class:`InvertibleOp`. With ``memory_free=False`` it runs under plain
autograd (the reference). With ``memory_free=True`` every op works in place on one state buffer,
nothing but the chain's output is kept, and the backward pass walks the ops from last to first:
each op turns the output back into its input and the output gradient into the input gradient,
both in place, and returns its own parameter gradients at once (so peak memory does not grow with
depth, and DDP's per-parameter hooks see them like any other gradient).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

Grads = tuple[Tensor | None, ...]


class InvertibleOp(ABC):
    """One exactly invertible map x -> y of a state tensor (B, C, [S,] H, W).

    ``data`` is a tuple of extra tensors (k-space, mask) that some ops read and none change.
    """

    @property
    @abstractmethod
    def op_parameters(self) -> tuple[Tensor, ...]:
        """The parameters the op's output depends on (gradients are returned in this order)."""

    @abstractmethod
    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        """y = f(x), out of place and differentiable by plain autograd."""

    @abstractmethod
    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        """x <- f(x) in place, without autograd."""

    @abstractmethod
    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        """y <- f^-1(y) in place, without autograd."""

    @abstractmethod
    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """In place: y <- x = f^-1(y) and grad_y <- dL/dx; return (parameter grads, data grads).

        Gradients are None for tensors that do not require grad; ops that never read the data may
        return an empty tuple for it.
        """


def detached_alias(t: Tensor) -> Tensor:
    """A tensor over the same memory as ``t`` but with its own version counter.

    Lets an op record ``t`` in a small autograd graph and then update *other* channels of the same
    state buffer in place without autograd mistaking that for a change to ``t``.
    """
    with torch.no_grad():
        return torch.empty(0, dtype=t.dtype, device=t.device).set_(
            t.untyped_storage(), t.storage_offset(), t.size(), t.stride()
        )


def grads_or_none(
    outputs: Tensor, inputs: Sequence[Tensor], grad_outputs: Tensor
) -> tuple[Tensor | None, ...]:
    """torch.autograd.grad over the inputs that require grad; None for the others."""
    wanted = [t for t in inputs if t.requires_grad]
    found = iter(torch.autograd.grad(outputs, wanted, grad_outputs) if wanted else ())
    return tuple(next(found) if t.requires_grad else None for t in inputs)


@dataclass
class _Tape:
    """The reconstructed state and its gradient, shared by the ops of one chain in backward."""

    state: Tensor | None = None
    grad: Tensor | None = None


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _InvertToLearn(torch.autograd.Function):
    """Applies one op in place; its backward reconstructs the op's input from the tape."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, op: InvertibleOp, tape: _Tape, is_first: bool, is_last: bool,
        num_data: int, *tensors: Tensor,
    ) -> Tensor:
        data = tensors[:num_data]
        op.transform_(x, data)
        ctx.mark_dirty(x)
        if is_last:
            ctx.save_for_backward(x)
        ctx.op, ctx.tape, ctx.data = op, tape, data
        ctx.is_first, ctx.is_last = is_first, is_last
        ctx.autocast = _autocast_state(x.device.type)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        tape: _Tape = ctx.tape
        if ctx.is_last:
            (y,) = ctx.saved_tensors
            tape.state = y.detach().clone(memory_format=torch.contiguous_format)
            tape.grad = torch.empty_like(tape.state).copy_(grad_y)
        elif tape.grad is None or tape.state is None:
            raise RuntimeError("memory-free backward reached an op before the chain's last op")
        elif grad_y.data_ptr() != tape.grad.data_ptr():
            tape.grad.copy_(grad_y)
        enabled, dtype = ctx.autocast
        with torch.autocast(tape.state.device.type, dtype=dtype, enabled=enabled):
            param_grads, data_grads = ctx.op.backward_(tape.state, tape.grad, ctx.data)
        data_grads = data_grads or (None,) * len(ctx.data)
        grad_x = tape.grad
        if ctx.is_first:
            tape.state = tape.grad = None
        return (grad_x, None, None, None, None, None, *data_grads, *param_grads)


def _needs_grad(x: Tensor, ops: Sequence[InvertibleOp], data: Sequence[Tensor]) -> bool:
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or any(d.requires_grad for d in data):
        return True
    return any(p.requires_grad for op in ops for p in op.op_parameters)


def invertible_chain(
    x: Tensor,
    ops: Sequence[InvertibleOp],
    data: Sequence[Tensor] = (),
    *,
    memory_free: bool = True,
    inplace: bool = False,
) -> Tensor:
    """Run ``ops`` on ``x`` in order.

    memory_free=False: plain autograd (every intermediate state is kept for backward).
    memory_free=True: only the output is kept; backward recomputes each op's input from its output.
    inplace=True lets the chain overwrite ``x`` (the caller gives up the tensor); otherwise ``x`` is
    never changed.
    """
    data = tuple(data)
    if not memory_free:
        for op in ops:
            x = op.transform(x, data)
        return x
    if not _needs_grad(x, ops, data):
        with torch.no_grad():
            h = x if inplace else x.clone()
            for op in ops:
                op.transform_(h, data)
        return h
    h = x if inplace and not (x.is_leaf and x.requires_grad) else x.clone()
    tape = _Tape()
    last = len(ops) - 1
    for i, op in enumerate(ops):
        h = _InvertToLearn.apply(h, op, tape, i == 0, i == last, len(data), *data, *op.op_parameters)
    return h


@torch.no_grad()
def reverse_chain(
    y: Tensor, ops: Sequence[InvertibleOp], data: Sequence[Tensor] = (), *, inplace: bool = False
) -> Tensor:
    """The exact inverse of :func:`invertible_chain`: the ops' inverses in reverse order."""
    h = y if inplace else y.clone()
    for op in reversed(ops):
        op.invert_(h, tuple(data))
    return h

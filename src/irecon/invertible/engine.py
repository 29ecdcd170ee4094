"""Memory-free back-propagation through a chain of invertible operations ("invert to learn").

A chain is a flat list of :class:`InvertibleOp`. With ``memory_free=False`` it runs under plain
autograd (the reference). With ``memory_free=True`` every op works in place on one state buffer,
nothing but the chain's output is kept, and the backward pass walks the ops from last to first:
each op turns the output back into its input and the output gradient into the input gradient,
both in place, and returns its own parameter and data gradients at once. Those go back to autograd
like any other function's input gradients, so peak memory does not grow with depth, gradients flow
on into whatever graph produced the data, and tensor hooks and DDP's per-parameter hooks run
exactly once per backward.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from irecon.errors import spell_options

Grads = tuple[Tensor | None, ...]

SECOND_ORDER_MESSAGE = spell_options(
    "memory-free training supports first-order gradients only (no create_graph=True, double "
    "backward or gradient penalties); use plain autograd for this: «no_memory_free» on the "
    "command line, memory_free=False in Python"
)


class _Bound(nn.Module):
    """Calls ``fn`` while its owner is a submodule, so functional_call can swap the owner's parameters."""

    def __init__(self, owner: nn.Module, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, *args: Any) -> Tensor:
        return self.fn(*args)


def call_with_aliases(
    owner: nn.Module, params: Sequence[Tensor], fn: Callable[..., Tensor], *args: Any
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(fn(*args), aliases): ``fn`` run with each of ``params`` in ``owner`` replaced by a detached alias.

    Differentiating the result w.r.t. the aliases gives the parameter gradients without touching
    the parameters themselves, so their hooks run only when the engine hands the gradients to
    autograd. Every one of ``params`` must be registered in ``owner`` (weight-norm originals too).
    """
    names = {id(p): name for name, p in owner.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(f"op parameters {missing} are not registered in {type(owner).__name__}")
    aliases = tuple(p.detach().requires_grad_(p.requires_grad) for p in params)
    swapped = {"owner." + names[id(p)]: a for p, a in zip(params, aliases)}
    return torch.func.functional_call(_Bound(owner, fn), swapped, args), aliases


class InvertibleOp(ABC):
    """One exactly invertible map x -> y of a state tensor (B, C, [S,] H, W).

    ``data`` is a tuple of extra tensors (k-space, mask) that some ops read and none change. A new
    op needs ``op_parameters``, ``transform``, ``transform_`` and ``invert_``; ``backward_`` has a
    default (invert, then one vector-Jacobian product of ``transform``) that ops may fuse.
    """

    @property
    @abstractmethod
    def op_parameters(self) -> tuple[Tensor, ...]:
        """The leaf parameters the op's output depends on (gradients are returned in this order)."""

    @abstractmethod
    def transform(self, x: Tensor, data: Sequence[Tensor]) -> Tensor:
        """y = f(x), out of place and differentiable by plain autograd."""

    @abstractmethod
    def transform_(self, x: Tensor, data: Sequence[Tensor]) -> None:
        """x <- f(x) in place, without autograd."""

    @abstractmethod
    def invert_(self, y: Tensor, data: Sequence[Tensor]) -> None:
        """y <- f^-1(y) in place, without autograd."""

    def backward_(self, y: Tensor, grad_y: Tensor, data: Sequence[Tensor]) -> tuple[Grads, Grads]:
        """In place: y <- x = f^-1(y) and grad_y <- dL/dx; return (parameter grads, data grads).

        ``data`` hold no autograd history; gradients are wanted for those that require grad and
        are None for the rest (ops that never read the data may return an empty tuple for it).
        Parameter hooks must not run here. The default inverts ``y`` and then differentiates
        ``transform`` once at the recovered x, the parameters swapped for detached aliases
        (an op with parameters that require grad must then be the nn.Module holding them).
        """
        self.invert_(y, data)
        params = self.op_parameters
        with torch.enable_grad():
            x = y.detach().requires_grad_()
            if isinstance(self, nn.Module):
                out, aliases = call_with_aliases(self, params, self.transform, x, tuple(data))
            elif any(p.requires_grad for p in params):
                raise TypeError(f"{type(self).__name__} must be an nn.Module or override backward_")
            else:
                out, aliases = self.transform(x, data), params
        grads = grads_or_none(out, (x, *aliases, *data), grad_y)
        with torch.no_grad():
            if grads[0] is None:
                grad_y.zero_()
            else:
                grad_y.copy_(grads[0])
        return grads[1 : 1 + len(params)], grads[1 + len(params) :]


def detached_alias(t: Tensor) -> Tensor:
    """A tensor over the same memory as ``t`` but with its own version counter.

    Lets an op record ``t`` in a small autograd graph and then update *other* channels of the same
    state buffer in place without autograd mistaking that for a change to ``t``.
    """
    with torch.no_grad():
        return torch.empty(0, dtype=t.dtype, device=t.device).set_(
            t.untyped_storage(), t.storage_offset(), t.size(), t.stride()
        )


def grads_or_none(outputs: Tensor, inputs: Sequence[Tensor], grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
    """torch.autograd.grad over the inputs that require grad; None for the others and unused ones."""
    wanted = [t for t in inputs if t.requires_grad]
    found = iter(torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True) if wanted else ())
    return tuple(next(found) if t.requires_grad else None for t in inputs)


@dataclass
class _Tape:
    """The reconstructed state and its gradient, shared by the ops of one chain in backward."""

    state: Tensor | None = None
    grad: Tensor | None = None


@dataclass(frozen=True)
class _Step:
    """One op's place in its chain, handed to the autograd function as a single argument."""

    op: InvertibleOp
    tape: _Tape
    is_first: bool
    is_last: bool
    keep_output: bool
    num_data: int


def autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    """Whether autocast is on for ``device_type`` and its dtype; off on devices without autocast (meta)."""
    if not torch.amp.is_autocast_available(device_type):
        return False, None
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def autocast(device_type: str, enabled: bool, dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` that is a no-op where the device has no autocast (meta), if not enabled."""
    if not torch.amp.is_autocast_available(device_type) and not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


class _InvertToLearn(torch.autograd.Function):
    """Applies one op in place; its backward reconstructs the op's input from the tape.

    Data and parameters are saved with save_for_backward (references, no copies), so changing
    one in place before backward raises as it does under plain autograd.
    """

    @staticmethod
    def forward(ctx, x: Tensor, step: _Step, *tensors: Tensor) -> Tensor:  # type: ignore[override]
        step.op.transform_(x, tensors[: step.num_data])
        ctx.mark_dirty(x)
        ctx.save_for_backward(*tensors, *((x,) if step.is_last else ()))
        ctx.kept = x.detach().clone() if step.keep_output and not step.is_last else None
        ctx.step = step
        ctx.autocast = autocast_state(x.device.type)
        return x

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(SECOND_ORDER_MESSAGE)
        step: _Step = ctx.step
        tape = step.tape
        saved = ctx.saved_tensors
        if step.is_last:
            tape.state = saved[-1].detach().clone(memory_format=torch.contiguous_format)
            tape.grad = torch.empty_like(tape.state).copy_(grad_y)
        elif tape.grad is None or tape.state is None:
            raise RuntimeError("memory-free backward reached an op before the chain's last op")
        else:
            if grad_y.data_ptr() != tape.grad.data_ptr():
                tape.grad.copy_(grad_y)
            if ctx.kept is not None:
                tape.state.copy_(ctx.kept)
        wants = ctx.needs_input_grad[2:]
        data = tuple(
            d.detach().requires_grad_() if want else d.detach() for d, want in zip(saved[: step.num_data], wants)
        )
        enabled, dtype = ctx.autocast
        with autocast(tape.state.device.type, enabled, dtype):
            param_grads, data_grads = step.op.backward_(tape.state, tape.grad, data)
        data_grads = data_grads or (None,) * step.num_data
        grad_x = tape.grad
        if step.is_first:
            tape.state = tape.grad = None
        return (grad_x, None, *data_grads, *param_grads)


def _first_recorded(x: Tensor, ops: Sequence[InvertibleOp], data: Sequence[Tensor]) -> int | None:
    """The first op autograd records (the first with an input that requires grad), or None."""
    if not torch.is_grad_enabled():
        return None
    if x.requires_grad or any(d.requires_grad for d in data):
        return 0
    return next((i for i, op in enumerate(ops) if any(p.requires_grad for p in op.op_parameters)), None)


def invertible_chain(
    x: Tensor,
    ops: Sequence[InvertibleOp],
    data: Sequence[Tensor] = (),
    *,
    memory_free: bool = True,
    inplace: bool = False,
    keep: Collection[int] = (),
) -> Tensor:
    """Run ``ops`` on ``x`` in order.

    memory_free=False: plain autograd (every intermediate state is kept for backward).
    memory_free=True: only the output is kept; backward recomputes each op's input from its output.
    ``keep`` (memory-free only) lists positions in ``ops`` whose exact output is also kept, one
    state copy each; backward restarts its reconstruction from those, so float round-off does not
    build up past them. inplace=True lets the chain overwrite ``x`` (the caller gives up the
    tensor); otherwise ``x`` is never changed.
    """
    data = tuple(data)
    if not memory_free:
        for op in ops:
            x = op.transform(x, data)
        return x
    first = _first_recorded(x, ops, data)
    if first is None:
        with torch.no_grad():
            h = x if inplace else x.clone()
            for op in ops:
                op.transform_(h, data)
        return h
    h = x if inplace and not (x.is_leaf and x.requires_grad) else x.clone()
    tape = _Tape()
    last = len(ops) - 1
    # The first recorded op's backward runs last and frees the tape; ops before it need no copies.
    kept = {i for i in keep if i >= first}
    for i, op in enumerate(ops):
        step = _Step(op, tape, i == first, i == last, i in kept, len(data))
        h = _InvertToLearn.apply(h, step, *data, *op.op_parameters)
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

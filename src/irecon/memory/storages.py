"""Tensor storages: the distinct storages an object holds, and their bytes (meta storages by their size).

The storage trackers and the benchmarks size parameters, gradients and optimiser state with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch


def flat_tensors(obj: object, out: list[torch.Tensor]) -> list[torch.Tensor]:
    """Append the tensors in an op's (nested tuple/list/dict) arguments or results to ``out``."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            flat_tensors(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            flat_tensors(item, out)
    return out


def storage_of(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """The tensor's storage, or None for tensors without one (sparse, wrapper subclasses)."""
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def storage_keys(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> set[int]:
    """Identities of the storages of an op's tensor arguments."""
    keys = set()
    for tensor in flat_tensors((args, kwargs), []):
        storage = storage_of(tensor)
        if storage is not None:
            keys.add(id(storage))
    return keys


def storage_nbytes(storage: torch.UntypedStorage, meta: bool = False) -> int | None:
    """Bytes of a storage, or None for one that holds no memory and is not counted.

    Storages without memory have a null data pointer and a nonzero size: meta storages count their
    size when ``meta`` is set (a shapes-only run), other such storages never. Wrapper subclasses
    have storages whose data pointer cannot be read at all.
    """
    try:
        nbytes = storage.nbytes()
        if storage.device.type == "meta":
            return nbytes if meta else None
        if storage.data_ptr() == 0 and nbytes > 0:
            return None
    except (RuntimeError, NotImplementedError):
        return None
    return nbytes


def state_tensors(obj: object, grads: bool, top: bool = True) -> Iterator[torch.Tensor]:
    """Tensors held by a tensor, module, optimiser, mapping or iterable of these.

    Modules give parameters and buffers (and parameter ``.grad`` if ``grads``); optimisers give
    their state tensors. Non-tensor leaves inside containers are skipped; an unsupported object at
    the top level raises ``TypeError``.
    """
    if isinstance(obj, torch.Tensor):
        yield obj
        if grads and obj.is_leaf and obj.grad is not None:
            yield obj.grad
    elif isinstance(obj, torch.nn.Module):
        yield from state_tensors(list(obj.parameters()), grads, top=False)
        yield from obj.buffers()
    elif isinstance(obj, torch.optim.Optimizer):
        yield from state_tensors(list(obj.state.values()), False, top=False)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from state_tensors(value, grads, top=False)
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        for value in obj:
            yield from state_tensors(value, grads, top=False)
    elif top and obj is not None:
        raise TypeError(f"cannot collect tensors from {type(obj).__name__}")


def tensor_bytes(*objs: object, grads: bool = False) -> int:
    """Total bytes of the distinct storages held by ``objs``; meta storages count their size.

    Accepts tensors, modules (parameters and buffers, plus parameter gradients if ``grads``),
    optimisers (state tensors) and containers of these. Shared storages (tied weights, views) are
    counted once. Used to report parameter, gradient and optimiser-state bytes separately from
    activation memory.
    """
    seen: dict[int, torch.UntypedStorage] = {}
    for tensor in (t for obj in objs for t in state_tensors(obj, grads)):
        storage = storage_of(tensor)
        if storage is not None:
            seen.setdefault(id(storage), storage)
    sizes = (storage_nbytes(storage, meta=True) for storage in seen.values())
    return sum(n for n in sizes if n is not None)

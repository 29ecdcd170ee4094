"""Exact peak-memory measurement on CPU, CUDA and the meta device behind one interface.

The selling point of the invertible RIMs is activation memory that does not grow with depth, so
benchmarks need exact, repeatable peak numbers on every device:

* CUDA: the caching allocator already counts every tensor byte
  (``torch.cuda.max_memory_allocated``); :class:`CudaPeakMemoryMeter` is a thin wrapper.
* CPU, tensor level: process RSS is useless once glibc reuses freed memory, so
  :class:`StorageTracker` counts tensor storages itself: a ``TorchDispatchMode`` sees every ATen op
  run inside the ``with`` block (forward, backward, recomputation, optimiser steps) and records the
  storages the outputs own; a weakref on each storage object removes its bytes when it dies.
* CPU, allocator level: torch has no CPU allocator counters, but its profiler receives an event
  for every block c10's CPU allocator hands out or takes back while profiling with
  ``profile_memory``. :class:`CpuAllocatorMeter` replays those events, so it also sees scratch
  memory that kernels allocate and free internally.
* meta: ``StorageTracker("meta")`` counts the storages of a shapes-only run (no data, no kernels),
  which is how the planner predicts any size on any machine.

Three details make :class:`StorageTracker` exact (each was found by testing):

1. ``torch.UntypedStorage.resize_`` does not go through dispatch, but memory-saving code frees and
   refills activations with it, so it is patched while any tracker is active.
2. Storages are keyed on the identity of their Python object (storages have PyObject preservation:
   one object per C++ storage, alive exactly as long as the storage), never on ``data_ptr``, which
   changes when a storage is resized.
3. An op output that aliases an *untracked* input is not new memory (e.g. ``x.t()`` of a tensor that
   existed before tracking), so it is not counted.

:func:`peak_memory_meter` picks the right meter for a device; :func:`tensor_bytes` sizes parameters,
gradients and optimiser state so they can be reported separately from activations.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from irecon.errors import IreconError
from irecon.memory.storages import flat_tensors, state_tensors, storage_keys, storage_nbytes, storage_of, tensor_bytes

__all__ = [
    "ALLOCATOR_METHOD",
    "CUDA_METHOD",
    "METERS",
    "META_METHOD",
    "STORAGE_METHOD",
    "CpuAllocatorMeter",
    "CudaPeakMemoryMeter",
    "PeakMemoryMeter",
    "StorageTracker",
    "peak_memory_meter",
    "tensor_bytes",
]

CUDA_METHOD = "torch.cuda.max_memory_allocated (caching allocator, exact bytes)"
STORAGE_METHOD = "cpu storage tracker, exact tensor bytes"
ALLOCATOR_METHOD = "cpu allocator events (torch.profiler profile_memory), kernel scratch included"
META_METHOD = "meta storage tracker, exact tensor bytes of a shapes-only run"
METERS = ("allocator", "storages")


@runtime_checkable
class PeakMemoryMeter(Protocol):
    """Device-agnostic peak-memory meter used by the benchmarks.

    Use as ``with meter: meter.reset_peak_memory_stats(); step(); meter.max_memory_allocated()``.
    On CUDA the numbers are absolute (everything the allocator holds on the device); on CPU they
    cover storages created inside the ``with`` block plus whatever was registered with
    :meth:`track`, so call ``track(model, optimizer, inputs)`` before measuring when absolute
    numbers are wanted.
    """

    method: str
    device: torch.device | None

    def __enter__(self) -> PeakMemoryMeter: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def memory_allocated(self) -> int: ...

    def max_memory_allocated(self) -> int: ...

    def reset_peak_memory_stats(self) -> None: ...

    def track(self, *objs: object) -> None: ...


class CudaPeakMemoryMeter:
    """CUDA meter: the caching allocator's own counters for one device, read after a synchronize."""

    method = CUDA_METHOD

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> CudaPeakMemoryMeter:
        torch.cuda.synchronize(self.device)
        return self

    def __exit__(self, *exc_info: object) -> None:
        torch.cuda.synchronize(self.device)

    def memory_allocated(self) -> int:
        """Bytes currently held by tensors on the device."""
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device)

    def max_memory_allocated(self) -> int:
        """Peak bytes held by tensors on the device since the last reset."""
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)

    def reset_peak_memory_stats(self) -> None:
        """Set the peak to the current allocation."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def track(self, *objs: object) -> None:
        """No-op: the CUDA allocator already counts every tensor on the device."""


def peak_memory_meter(device: torch.device | str, meter: str = "storages") -> PeakMemoryMeter:
    """Return the peak-memory meter for ``device``.

    CUDA uses ``torch.cuda.{memory_allocated,max_memory_allocated,reset_peak_memory_stats}``; meta
    gets the shapes-only :class:`StorageTracker`; the CPU gets a :class:`StorageTracker`
    (``meter="storages"``) or a :class:`CpuAllocatorMeter` (``meter="allocator"``).
    """
    if meter not in METERS:
        raise IreconError(f"unknown meter '{meter}' (choose from {', '.join(METERS)})")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise IreconError(f"device {dev} requested but torch.cuda.is_available() is False")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return CudaPeakMemoryMeter(dev)
    if dev.type == "meta":
        if meter == "allocator":
            raise IreconError("the meta device has no allocator: a shapes-only run counts storages only")
        return StorageTracker(dev)
    if dev.type != "cpu":
        raise IreconError(f"no memory meter for device {dev} (use cpu, cuda or meta)")
    return CpuAllocatorMeter() if meter == "allocator" else StorageTracker(dev)


_MISSING = object()
_patch_lock = threading.Lock()
_active_trackers: list[StorageTracker] = []
_saved_resize: Any = _MISSING


def _install_resize_patch(tracker: StorageTracker) -> None:
    """Register ``tracker`` for resizes; the first one patches ``UntypedStorage.resize_``."""
    global _saved_resize
    with _patch_lock:
        if not _active_trackers:
            _saved_resize = vars(torch.UntypedStorage).get("resize_", _MISSING)
            original = torch.UntypedStorage.resize_

            @functools.wraps(original)
            def resize_(storage: torch.UntypedStorage, size: int) -> Any:
                result = original(storage, size)
                for active in tuple(_active_trackers):
                    active._storage_resized(storage)
                return result

            torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign]
        _active_trackers.append(tracker)


def _remove_resize_patch(tracker: StorageTracker) -> None:
    """Unregister ``tracker``; restore the original ``resize_`` when no tracker is left."""
    global _saved_resize
    with _patch_lock:
        _active_trackers.remove(tracker)
        if not _active_trackers:
            if _saved_resize is _MISSING:
                del torch.UntypedStorage.resize_
            else:
                torch.UntypedStorage.resize_ = _saved_resize  # type: ignore[method-assign]
            _saved_resize = _MISSING


class StorageTracker(TorchDispatchMode):
    """Exact tensor-storage byte counter: the CPU analogue of the ``torch.cuda`` memory counters.

    Inside ``with tracker:`` every ATen op is seen, including backward ops run by the autograd
    engine (its threads inherit the dispatch mode of the thread that called ``backward``) and
    recomputation inside custom ``autograd.Function.backward``. New output storages are counted
    until they die; :meth:`track` registers tensors that existed before. Frees are seen after the
    block too, so ``memory_allocated`` stays right when results outlive it.

    Not seen: scratch memory a kernel allocates and frees internally, tensors created without
    dispatch (``torch.from_numpy``), growth of *untracked* tensors (``out=`` / ``resize_`` on a
    tensor from before the block), ``UntypedStorage.resize_`` calls after the block, and allocator
    rounding. Storages on other devices than ``device`` (when given) are ignored, and so are meta
    storages, except for ``device="meta"``: then the tracker counts the meta storages of a
    shapes-only run at their size, plus the CPU storages such a run keeps (optimiser step counters).

    An instance may be entered again after it exits (counts continue) but not while it is active:
    nested or concurrent entry of the same instance raises ``RuntimeError``. Distinct trackers
    nest, and each counts everything run inside it.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.device = None if device is None else torch.device(device)
        self._meta = self.device is not None and self.device.type == "meta"
        scope = "all-device" if self.device is None else self.device.type
        self.method = META_METHOD if self._meta else f"{scope} storage tracker, exact tensor bytes"
        self._live: dict[int, list[Any]] = {}
        self._current = 0
        self._peak = 0
        self._active = False
        self._lock = threading.RLock()

    def memory_allocated(self) -> int:
        """Bytes of tracked storages that are alive now."""
        return self._current

    def max_memory_allocated(self) -> int:
        """Largest :meth:`memory_allocated` seen since creation or the last reset."""
        return self._peak

    def reset_peak_memory_stats(self) -> None:
        """Set the peak to the current allocation, like ``torch.cuda.reset_peak_memory_stats``."""
        with self._lock:
            self._peak = self._current

    def track(self, *objs: object) -> None:
        """Count existing tensors, modules (params, buffers, grads) and optimisers (state).

        Makes absolute numbers comparable with CUDA, which counts everything on the device.
        Storages already tracked are not counted twice.
        """
        for tensor in (t for obj in objs for t in state_tensors(obj, grads=True)):
            storage = storage_of(tensor)
            if storage is not None:
                self._record(storage)

    def __enter__(self) -> StorageTracker:
        with self._lock:
            if self._active:
                raise RuntimeError(
                    "StorageTracker is already active; enter a given tracker once at a time "
                    "(use a second StorageTracker to nest measurements)"
                )
            self._active = True
        _install_resize_patch(self)
        try:
            super().__enter__()
        except BaseException:
            _remove_resize_patch(self)
            self._active = False
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            _remove_resize_patch(self)
            self._active = False

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        outputs = (out,) if isinstance(out, torch.Tensor) else flat_tensors(out, [])
        input_keys: set[int] | None = None
        for tensor in outputs:
            storage = storage_of(tensor)
            if storage is None:
                continue
            entry = self._live.get(id(storage))
            if entry is not None and entry[1]() is storage:
                if entry[0] != storage.nbytes():
                    self._storage_resized(storage)
                continue
            if input_keys is None:
                input_keys = storage_keys(args, kwargs)
            if id(storage) not in input_keys:
                self._record(storage)
        return out

    def _wants(self, storage: torch.UntypedStorage) -> bool:
        """Whether the storage lives on the tracked device (meta: on meta or the CPU)."""
        if self.device is None:
            return True
        dev = storage.device
        if self._meta:
            return dev.type in ("meta", "cpu")
        return dev == self.device or (self.device.index is None and dev.type == self.device.type)

    def _bump(self, delta: int) -> None:
        self._current += delta
        if self._current > self._peak:
            self._peak = self._current

    def _record(self, storage: torch.UntypedStorage) -> None:
        """Start counting ``storage`` (or refresh its size if it is already counted)."""
        key = id(storage)
        with self._lock:
            entry = self._live.get(key)
            if entry is not None and entry[1]() is storage:
                self._storage_resized(storage)
                return
            nbytes = storage_nbytes(storage, meta=self._meta)
            if nbytes is None or not self._wants(storage):
                return
            if entry is not None:
                self._current -= entry[0]
            ref = weakref.ref(storage, functools.partial(self._storage_freed, key))
            self._live[key] = [nbytes, ref]
            self._bump(nbytes)

    def _storage_resized(self, storage: torch.UntypedStorage) -> None:
        """Account for a size change of a counted storage (ignored for uncounted ones)."""
        with self._lock:
            entry = self._live.get(id(storage))
            if entry is not None and entry[1]() is storage:
                nbytes = storage.nbytes()
                self._bump(nbytes - entry[0])
                entry[0] = nbytes

    def _storage_freed(self, key: int, ref: weakref.ref) -> None:
        """Weakref callback: the storage died, so its bytes are free."""
        with self._lock:
            entry = self._live.get(key)
            if entry is not None and entry[1] is ref:
                del self._live[key]
                self._current -= entry[0]


def _profiler_config() -> Any:
    """Kineto CPU profiling with ``profile_memory=True`` and nothing else recorded."""
    from torch._C._profiler import _ExperimentalConfig
    from torch.autograd import ProfilerConfig, ProfilerState

    return ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False, _ExperimentalConfig())


def _allocation_events(result: Any) -> list[tuple[int, int, int, int]]:
    """(time ns, order, address, signed size) of every CPU allocation event, in time order."""
    from torch._C._profiler import _ExtraFields_Allocation

    events = []
    stack = list(reversed(result.experimental_event_tree()))
    order = 0
    while stack:
        node = stack.pop()
        fields = node.extra_fields
        if isinstance(fields, _ExtraFields_Allocation) and fields.device.type == "cpu":
            events.append((node.start_time_ns, order, fields.ptr, fields.alloc_size))
        order += 1
        stack.extend(reversed(node.children))
    events.sort()
    return events


class CpuAllocatorMeter:
    """Allocator-level CPU meter: every block c10's CPU allocator hands out or takes back.

    While active, torch's profiler runs with ``profile_memory`` (the low-level calls behind
    ``torch.profiler.profile``, without its slow post-processing) and records each allocation and
    free with its address and size. A reading stops the profiler, replays the events in time order
    and starts it again. :meth:`track` registers blocks that existed before, by address. The
    profiler reports no frees of blocks allocated before it started, so registered blocks stay
    counted until their address is handed out again; frees after the block are not seen.

    Seen beyond :class:`StorageTracker`: scratch buffers that kernels allocate and free inside one
    op, and tensors made without dispatch. Not seen: memory that libraries take from ``malloc``
    themselves (oneDNN and MKL internals, OpenMP), allocations on threads the profiler does not
    follow (intra-op worker threads), alignment slack and heap fragmentation.
    """

    method = ALLOCATOR_METHOD

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self._live: dict[int, int] = {}
        self._current = 0
        self._peak = 0
        self._running = False

    def __enter__(self) -> CpuAllocatorMeter:
        if self._running:
            raise RuntimeError("CpuAllocatorMeter is already active; enter a given meter once at a time")
        if torch.autograd._profiler_enabled():
            raise IreconError("another torch profiler is running; the allocator meter needs its own")
        self._start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._running:
            self._stop()

    def memory_allocated(self) -> int:
        """Bytes of the allocator blocks alive now that were registered or seen allocated."""
        self._flush()
        return self._current

    def max_memory_allocated(self) -> int:
        """Largest :meth:`memory_allocated` since creation or the last reset."""
        self._flush()
        return self._peak

    def reset_peak_memory_stats(self) -> None:
        """Set the peak to the current allocation."""
        self._flush()
        self._peak = self._current

    def track(self, *objs: object) -> None:
        """Register the CPU blocks of existing tensors, modules and optimisers (as StorageTracker.track)."""
        for tensor in (t for obj in objs for t in state_tensors(obj, grads=True)):
            storage = storage_of(tensor)
            if storage is None or storage.device.type != "cpu":
                continue
            nbytes = storage_nbytes(storage)
            if nbytes and storage.data_ptr() not in self._live:
                self._allocated(storage.data_ptr(), nbytes)

    def _start(self) -> None:
        from torch.autograd import ProfilerActivity, _enable_profiler, _prepare_profiler

        os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # kineto prints every start and stop below 6
        config, activities = _profiler_config(), {ProfilerActivity.CPU}
        _prepare_profiler(config, activities)
        _enable_profiler(config, activities)
        self._running = True

    def _stop(self) -> None:
        from torch.autograd import _disable_profiler

        self._running = False
        for _, _, ptr, size in _allocation_events(_disable_profiler()):
            if size > 0:
                self._allocated(ptr, size)
            else:
                self._current -= self._live.pop(ptr, 0)

    def _flush(self) -> None:
        if self._running:
            self._stop()
            self._start()

    def _allocated(self, ptr: int, nbytes: int) -> None:
        """A block at ``ptr``; a block still listed there was freed unseen, so it is dropped."""
        self._current += nbytes - self._live.get(ptr, 0)
        self._live[ptr] = nbytes
        if self._current > self._peak:
            self._peak = self._current

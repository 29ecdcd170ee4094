"""Exact byte counts of irecon.memory.meters against hand-computed sizes (CPU; CUDA only where present)."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torch.utils.checkpoint import checkpoint_sequential

from irecon.errors import IreconError
from irecon.memory.meters import (
    ALLOCATOR_METHOD,
    CUDA_METHOD,
    META_METHOD,
    CpuAllocatorMeter,
    CudaPeakMemoryMeter,
    PeakMemoryMeter,
    StorageTracker,
    peak_memory_meter,
    tensor_bytes,
)

F32 = 4
C, H = 4, 16
ACT = C * H * H * F32  # one 1x4x16x16 fp32 activation: 4096 B
LOSS = 8  # scalars live at the peak: the mean (4 B) and its ones-like gradient (4 B)


def conv_stack(depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [m for _ in range(depth) for m in (nn.Conv2d(C, C, 3, padding=1), nn.ReLU())]
    return nn.Sequential(*layers)


def nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class _Recompute(torch.autograd.Function):
    """y = exp(2x), stored without a graph; backward recomputes and calls torch.autograd.grad."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        with torch.no_grad():
            return torch.exp(x * 2)

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(torch.exp(xr * 2), xr, gy)
        return gx


def test_empty_alloc_free_and_reset():
    mt = StorageTracker()
    with mt:
        t = torch.empty(1000, dtype=torch.float32)
        assert mt.memory_allocated() == 4000
        assert mt.max_memory_allocated() == 4000
        del t
        assert mt.memory_allocated() == 0
        assert mt.max_memory_allocated() == 4000
        u = torch.empty(10, dtype=torch.float64)
        mt.reset_peak_memory_stats()
        assert mt.max_memory_allocated() == mt.memory_allocated() == 80
    del u
    assert mt.memory_allocated() == 0, "frees after the block are still seen"
    assert mt.max_memory_allocated() == 80


def test_plain_autograd_grows_one_activation_per_layer():
    x = torch.randn(1, C, H, H)
    peaks = {}
    for depth in (2, 4, 8):
        model = conv_stack(depth)
        mt = StorageTracker()
        with mt:
            model(x).mean().backward()
        peaks[depth] = mt.max_memory_allocated()
        assert peaks[depth] == (depth + 2) * ACT + LOSS
        assert mt.memory_allocated() == tensor_bytes(model, grads=True) - tensor_bytes(model)
    assert peaks[8] - peaks[4] == 4 * ACT
    assert peaks[4] - peaks[2] == 2 * ACT


def test_no_grad_and_checkpointing_do_not_grow_per_layer():
    x = torch.randn(1, C, H, H)
    for depth in (4, 16):
        model = conv_stack(depth)
        with StorageTracker() as mt, torch.no_grad():
            model(x).mean()
        assert mt.max_memory_allocated() == 2 * ACT
        with StorageTracker() as mt:
            segments = round(math.sqrt(depth))
            checkpoint_sequential(model, segments, x, use_reentrant=False).mean().backward()
        assert mt.max_memory_allocated() == (2 * segments + 1) * ACT + LOSS


def test_views_are_not_double_counted():
    with StorageTracker() as mt:
        t = torch.empty(100, 10)
        views = [t.t(), t[3:], t.view(10, 100), t.reshape(-1), t.transpose(0, 1)[1]]
        assert mt.memory_allocated() == 4000
        del t
        assert mt.memory_allocated() == 4000, "the views keep the storage alive"
        del views
        assert mt.memory_allocated() == 0


def test_view_of_untracked_tensor_is_not_counted():
    before = torch.empty(100, 10)
    a = torch.randn(64, 64, requires_grad=True)
    b = torch.randn(64, 64)
    with StorageTracker() as mt:
        views = [before.t(), before[1:], before.view(-1)]
        before.add_(1.0)
        assert mt.memory_allocated() == 0
        loss = (a @ b).sum()  # mm backward takes b.t(), a view of an untracked tensor
        loss.backward()
    assert mt.memory_allocated() == nbytes(a.grad) + F32
    del views


def test_untyped_storage_resize_is_tracked():
    with StorageTracker() as mt:
        t = torch.empty(1000)
        st = t.untyped_storage()
        old_ptr = st.data_ptr()
        st.resize_(0)
        assert (mt.memory_allocated(), mt.max_memory_allocated()) == (0, 4000)
        st.resize_(8000)
        assert (mt.memory_allocated(), mt.max_memory_allocated()) == (8000, 8000)
        assert st.data_ptr() != old_ptr
        view = t[10:]
        t.add_(0.0)
        assert mt.memory_allocated() == 8000, "a new data_ptr does not create a new entry"
        del t, st, view
        assert mt.memory_allocated() == 0


def test_tensor_resize_through_dispatch_is_tracked():
    with StorageTracker() as mt:
        t = torch.empty(10)
        t.resize_(1000)
        assert mt.memory_allocated() == 4000


def test_resize_of_tracked_and_untracked_storages():
    tracked, untracked = torch.empty(1000), torch.empty(1000)
    mt = StorageTracker()
    mt.track(tracked)
    assert mt.memory_allocated() == 4000
    with mt:
        tracked.untyped_storage().resize_(0)
        untracked.untyped_storage().resize_(0)
        assert mt.memory_allocated() == 0
        untracked.untyped_storage().resize_(4000)
        assert mt.memory_allocated() == 0
    assert mt.max_memory_allocated() == 4000


def test_memory_free_chain_frees_intermediate_with_resize():
    x = torch.randn(1000)
    with StorageTracker() as mt:
        h = x * 2
        y = h * 3
        h.untyped_storage().resize_(0)
        assert (mt.memory_allocated(), mt.max_memory_allocated()) == (4000, 8000)
        h.untyped_storage().resize_(4000)
        h.copy_(y / 3)
        assert mt.memory_allocated() == 8000
        assert mt.max_memory_allocated() == 12000  # h, y and the temporary y / 3


def test_backward_inside_the_block_is_counted():
    w = torch.randn(1000, requires_grad=True)
    with StorageTracker() as forward_only:
        loss = w.exp().sum()
    assert forward_only.max_memory_allocated() == 4000 + F32  # exp result (saved) + loss
    del loss
    with StorageTracker() as full:
        loss = w.exp().sum()
        loss.backward()
    # exp result + loss + ones_like gradient + w.grad = grad * result
    assert full.max_memory_allocated() == 4000 + F32 + F32 + 4000
    assert full.max_memory_allocated() > forward_only.max_memory_allocated()
    assert full.memory_allocated() == nbytes(w.grad) + F32


def test_custom_function_backward_with_autograd_grad_is_counted():
    x = torch.randn(1000, requires_grad=True)
    with StorageTracker() as mt:
        y = _Recompute.apply(x)
        assert (mt.memory_allocated(), mt.max_memory_allocated()) == (4000, 8000)
        mt.reset_peak_memory_stats()
        loss = y.sum()
        loss.backward()
    # y + loss + ones_like + recomputed exp(2x) + exp backward (gy * e) + mul backward (* 2)
    assert mt.max_memory_allocated() == 4000 + F32 + F32 + 4000 + 4000 + 4000
    assert mt.memory_allocated() == 4000 + F32 + nbytes(x.grad)
    torch.testing.assert_close(x.grad, 2 * torch.exp(2 * x.detach()))


def test_backward_ops_run_under_the_mode():
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

        @staticmethod
        def backward(ctx, g: torch.Tensor) -> torch.Tensor:
            seen.append((threading.get_ident(), _get_current_dispatch_mode()))
            return g

    x = torch.randn(10, requires_grad=True)
    with StorageTracker() as mt:
        Probe.apply(x).sum().backward()
    assert seen and all(mode is mt for _, mode in seen)


def test_free_on_another_thread_is_seen():
    with StorageTracker() as mt:
        box = [torch.empty(1000)]
    worker = threading.Thread(target=box.clear)
    worker.start()
    worker.join()
    assert (mt.memory_allocated(), mt.max_memory_allocated()) == (0, 4000)


def test_track_module_and_optimizer_adds_exact_state_bytes():
    model = nn.Linear(10, 5)
    param_bytes = (10 * 5 + 5) * F32
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 10)).sum().backward()
    opt.step()
    state_bytes = 2 * param_bytes + 2 * F32  # exp_avg, exp_avg_sq, and a float32 step per param
    mt = StorageTracker()
    mt.track(model)
    assert mt.memory_allocated() == 2 * param_bytes
    mt.track(opt, model, list(model.parameters()))
    assert mt.memory_allocated() == 2 * param_bytes + state_bytes
    with mt:
        t = torch.empty(25)
    assert mt.max_memory_allocated() == 2 * param_bytes + state_bytes + 100
    del t
    model.zero_grad(set_to_none=True)
    assert mt.memory_allocated() == param_bytes + state_bytes


def test_tensor_bytes_hand_counts():
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5))
    params = (10 * 5 + 5 + 5 + 5) * F32
    buffers = (5 + 5) * F32 + 8  # running mean/var and an int64 batch counter
    assert tensor_bytes(model) == params + buffers
    assert tensor_bytes(model, grads=True) == params + buffers
    model(torch.randn(4, 10)).sum().backward()
    assert tensor_bytes(model, grads=True) == 2 * params + buffers
    assert tensor_bytes(model.parameters()) == params
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    assert tensor_bytes(opt) == params
    x = torch.empty(100, 10)
    assert tensor_bytes(x, x.t(), x[5:], {"v": [x.view(-1)]}) == 4000
    assert tensor_bytes(x, None, torch.empty(3, dtype=torch.float16)) == 4006
    with pytest.raises(TypeError):
        tensor_bytes(3)


def test_tied_weights_are_counted_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleList([emb, head])
    assert tensor_bytes(model) == 40 * F32
    mt = StorageTracker()
    mt.track(emb, head, model)
    assert mt.memory_allocated() == 40 * F32


def test_tensors_without_real_storage_are_ignored():
    with StorageTracker() as mt:
        sparse = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1.0, 2.0]), (3,), check_invariants=True)
        meta = torch.empty(1000, device="meta")
        _ = meta * 2 + sparse.to_dense().sum()
    assert tensor_bytes(sparse) == 0
    assert tensor_bytes(meta) == 4000, "meta storages count the bytes they describe"
    assert mt.memory_allocated() == 0
    mt.track(sparse, meta)
    assert mt.memory_allocated() == 0


def test_wrapper_subclass_storage_is_ignored():
    class Wrapper(torch.Tensor):
        @staticmethod
        def __new__(cls, elem: torch.Tensor) -> Wrapper:
            return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype)

        def __init__(self, elem: torch.Tensor) -> None:
            self.elem = elem

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            return NotImplemented

    w = Wrapper(torch.ones(3))
    assert tensor_bytes(w) == 0
    mt = StorageTracker()
    mt.track(w)
    assert mt.memory_allocated() == 0


def test_resize_patch_is_restored_after_exit_and_exception():
    original = torch.UntypedStorage.resize_
    assert "resize_" not in vars(torch.UntypedStorage)
    mt = StorageTracker()
    with mt:
        assert torch.UntypedStorage.resize_ is not original
    assert torch.UntypedStorage.resize_ is original
    assert "resize_" not in vars(torch.UntypedStorage)
    with pytest.raises(ValueError, match="boom"):
        with mt:
            raise ValueError("boom")
    assert torch.UntypedStorage.resize_ is original
    assert _get_current_dispatch_mode() is None
    kept = torch.empty(1000)
    assert mt.memory_allocated() == 0, "nothing is counted once the tracker has exited"
    del kept


def test_same_tracker_cannot_be_entered_twice():
    mt = StorageTracker()
    with mt:
        a = torch.empty(10)
        with pytest.raises(RuntimeError, match="already active"):
            with mt:
                pass
        b = torch.empty(10)
        assert mt.memory_allocated() == 80
    assert torch.UntypedStorage.resize_ is torch._C.StorageBase.resize_
    with mt:
        c = torch.empty(10)
    assert mt.memory_allocated() == 120, "a tracker can be re-entered after exit"
    del a, b, c


def test_distinct_trackers_nest_without_double_counting():
    outer, inner = StorageTracker(), StorageTracker()
    with outer:
        a = torch.empty(1000)
        with inner:
            b = torch.empty(500)
            c = b[1:] * 1  # 499 floats
        b.untyped_storage().resize_(0)
        # resizes after a tracker's block are not seen by it (its patch is gone)
        assert (inner.memory_allocated(), inner.max_memory_allocated()) == (3996, 3996)
        assert (outer.memory_allocated(), outer.max_memory_allocated()) == (5996, 7996)
    assert torch.UntypedStorage.resize_ is torch._C.StorageBase.resize_
    del a, b, c
    assert outer.memory_allocated() == inner.memory_allocated() == 0


def test_device_filter_ignores_other_devices():
    mt = StorageTracker("cuda")
    with mt:
        kept = torch.empty(10)
        _ = torch.empty(10, device="meta")
    assert mt.memory_allocated() == mt.max_memory_allocated() == 0
    del kept


def test_meta_tracker_counts_shapes_and_host_tensors():
    mt = StorageTracker("meta")
    assert mt.method == META_METHOD
    with mt:
        a = torch.empty(1000, device="meta")
        b = a[10:] * 2  # 990 floats
        host = torch.zeros(3)  # e.g. an optimiser step counter
        assert mt.memory_allocated() == 4000 + 3960 + 12
        del a
        assert mt.memory_allocated() == 3960 + 12
        b.untyped_storage().resize_(0)
        assert mt.memory_allocated() == 12
    assert mt.max_memory_allocated() == 4000 + 3960 + 12
    del b, host
    assert mt.memory_allocated() == 0


def test_peak_memory_meter_cpu():
    meter = peak_memory_meter("cpu")
    assert isinstance(meter, StorageTracker)
    assert isinstance(meter, PeakMemoryMeter)
    assert "cpu storage tracker, exact tensor bytes" in meter.method
    assert meter.device == torch.device("cpu")
    with meter:
        meter.reset_peak_memory_stats()
        t = torch.empty(250)
    assert meter.max_memory_allocated() == meter.memory_allocated() == 1000
    del t


def test_peak_memory_meter_picks_by_device_and_meter():
    assert isinstance(peak_memory_meter("cpu", "allocator"), CpuAllocatorMeter)
    meta = peak_memory_meter("meta")
    assert isinstance(meta, StorageTracker) and meta.method == META_METHOD


def test_peak_memory_meter_rejects_unusable_devices():
    with pytest.raises(IreconError, match="no allocator"):
        peak_memory_meter("meta", "allocator")
    with pytest.raises(IreconError, match="unknown meter"):
        peak_memory_meter("cpu", "rss")
    with pytest.raises(IreconError, match="no memory meter"):
        peak_memory_meter("mps")
    if not torch.cuda.is_available():
        with pytest.raises(IreconError, match="cuda"):
            peak_memory_meter("cuda")


def test_allocator_meter_counts_blocks_exactly():
    meter = CpuAllocatorMeter()
    assert isinstance(meter, PeakMemoryMeter) and meter.method == ALLOCATOR_METHOD
    with meter:
        t = torch.empty(1000)
        assert meter.memory_allocated() == meter.max_memory_allocated() == 4000
        del t
        assert meter.memory_allocated() == 0 and meter.max_memory_allocated() == 4000
        u = torch.empty(10, dtype=torch.float64)
        meter.reset_peak_memory_stats()
        assert meter.max_memory_allocated() == meter.memory_allocated() == 80
        big = torch.empty(500)
        del big
    assert meter.max_memory_allocated() == 80 + 2000
    del u


def test_allocator_meter_registered_blocks_are_a_base():
    registered, unknown = torch.empty(100), torch.empty(200)
    with CpuAllocatorMeter() as meter:
        meter.track(registered, registered)
        assert meter.memory_allocated() == 400, "registered once, by address"
        del unknown  # allocated before and never registered: not part of the count
        assert meter.memory_allocated() == 400
        inside = torch.empty(50)
        meter.track(inside)  # already seen allocated: not counted twice
        assert meter.memory_allocated() == 600
        del inside
        assert meter.memory_allocated() == 400
        del registered  # the profiler reports no frees of blocks from before it started
        assert meter.memory_allocated() == 400


def test_allocator_meter_sees_kernel_scratch_the_tracker_cannot():
    torch.manual_seed(0)
    x = torch.randn(1, C, 32, 32, requires_grad=True)
    conv = nn.Conv2d(C, 8, 3, padding=1)
    with StorageTracker("cpu") as tracker, CpuAllocatorMeter() as meter:
        for m in (tracker, meter):
            m.track(x, conv)
            m.reset_peak_memory_stats()
        conv(x).relu().sum().backward()
        storage_peak, allocator_peak = tracker.max_memory_allocated(), meter.max_memory_allocated()
    assert allocator_peak > storage_peak > 0
    assert meter.memory_allocated() >= tracker.memory_allocated()


def test_allocator_meter_needs_the_profiler_to_itself():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        with pytest.raises(IreconError, match="another torch profiler"):
            with CpuAllocatorMeter():
                pass
    meter = CpuAllocatorMeter()
    with meter:
        with pytest.raises(RuntimeError, match="already active"):
            meter.__enter__()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_meter_cuda():
    meter = peak_memory_meter("cuda")
    assert isinstance(meter, CudaPeakMemoryMeter)
    assert isinstance(meter, PeakMemoryMeter)
    assert meter.method == CUDA_METHOD
    assert meter.device.type == "cuda" and meter.device.index is not None
    with meter:
        meter.reset_peak_memory_stats()
        base = meter.memory_allocated()
        t = torch.empty(1 << 20, dtype=torch.float32, device=meter.device)
        assert meter.memory_allocated() - base == 4 << 20
        del t
        assert meter.memory_allocated() == base
        assert meter.max_memory_allocated() - base == 4 << 20
        meter.reset_peak_memory_stats()
        assert meter.max_memory_allocated() == base

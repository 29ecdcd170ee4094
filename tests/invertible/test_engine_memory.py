import torch

from irecon.invertible.engine import invertible_chain
from irecon.memory import StorageTracker, tensor_bytes

from .conftest import make_chain


def _training_peak(steps: int, memory_free: bool) -> tuple[int, int]:
    """(peak bytes of one forward+backward from a clean start, bytes of the parameter gradients)."""
    chain = make_chain(2, steps=steps, channels=8, spatial=(32, 32), batch=1, dtype=torch.float32)
    x = torch.randn(chain.shape)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(*chain.data, x)
        base = tracker.memory_allocated()
        tracker.reset_peak_memory_stats()
        invertible_chain(x, chain.ops, chain.data, memory_free=memory_free).square().sum().backward()
        peak = tracker.max_memory_allocated() - base
    return peak, tensor_bytes(*[p.grad for p in chain.modules.parameters()])


def test_memory_free_peak_grows_only_by_parameter_gradients() -> None:
    peak_l, grads_l = _training_peak(2, memory_free=True)
    peak_4l, grads_4l = _training_peak(8, memory_free=True)
    assert peak_4l - peak_l == grads_4l - grads_l


def test_plain_autograd_grows_with_depth() -> None:
    peak_l, grads_l = _training_peak(2, memory_free=False)
    peak_4l, grads_4l = _training_peak(8, memory_free=False)
    state = 8 * 32 * 32 * 4
    assert (peak_4l - grads_4l) - (peak_l - grads_l) > 6 * 4 * state  # several states per added layer
    free, _ = _training_peak(8, memory_free=True)
    assert peak_4l > 3 * free

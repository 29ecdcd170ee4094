import torch

from irecon.invertible.engine import invertible_chain
from irecon.memory.meters import StorageTracker, tensor_bytes

from .conftest import make_chain


def _training_peak(steps: int, memory_free: bool, keep_steps: bool = False) -> tuple[int, int]:
    """(peak bytes of one forward+backward from a clean start, bytes of the parameter gradients)."""
    chain = make_chain(2, steps=steps, channels=8, spatial=(32, 32), batch=1, dtype=torch.float32)
    x = torch.randn(chain.shape)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(*chain.data, x)
        base = tracker.memory_allocated()
        tracker.reset_peak_memory_stats()
        keep = [i for i, op in enumerate(chain.ops) if op is chain.ops[0]] if keep_steps else ()
        invertible_chain(x, chain.ops, chain.data, memory_free=memory_free, keep=keep).square().sum().backward()
        peak = tracker.max_memory_allocated() - base
    return peak, tensor_bytes(*[p.grad for p in chain.modules.parameters()])


def test_memory_free_peak_grows_only_by_parameter_gradients() -> None:
    """At most by them: the peak may come early in backward, before every gradient exists."""
    peak_l, grads_l = _training_peak(2, memory_free=True)
    peak_4l, grads_4l = _training_peak(8, memory_free=True)
    assert 0 <= peak_4l - peak_l <= grads_4l - grads_l


def _peak_with_gradients_allocated(steps: int) -> int:
    """Peak bytes of one memory-free forward+backward into gradient buffers that already exist (as in
    training, where zero_grad keeps them): activations only."""
    chain = make_chain(2, steps=steps, channels=8, spatial=(32, 32), batch=1, dtype=torch.float32)
    for p in chain.modules.parameters():
        p.grad = torch.zeros_like(p)
    x = torch.randn(chain.shape)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(*chain.data, x)
        base = tracker.memory_allocated()
        tracker.reset_peak_memory_stats()
        invertible_chain(x, chain.ops, chain.data).square().sum().backward()
        return tracker.max_memory_allocated() - base


def test_memory_free_activation_peak_is_the_same_at_every_depth() -> None:
    """Nothing per layer (a weight or factor kept from forward for backward) outlives its op."""
    assert _peak_with_gradients_allocated(2) == _peak_with_gradients_allocated(8)


def test_plain_autograd_grows_with_depth() -> None:
    peak_l, grads_l = _training_peak(2, memory_free=False)
    peak_4l, grads_4l = _training_peak(8, memory_free=False)
    state = 8 * 32 * 32 * 4
    assert (peak_4l - grads_4l) - (peak_l - grads_l) > 6 * 4 * state  # several states per added layer
    free, _ = _training_peak(8, memory_free=True)
    assert peak_4l > 3 * free


def test_keeping_step_states_costs_one_state_per_step() -> None:
    state = 8 * 32 * 32 * 4
    kept, _ = _training_peak(4, memory_free=True, keep_steps=True)
    free, _ = _training_peak(4, memory_free=True)
    # The DC output before each step but the first: nothing before the first DC is differentiated,
    # and the last output is kept anyway.
    assert kept - free == 3 * state


def test_nothing_but_gradients_outlives_backward() -> None:
    """The first op (DC, no parameters, nothing requiring grad) is not recorded; the tape is freed anyway."""
    chain = make_chain(2, steps=2, channels=8, spatial=(32, 32), batch=1, dtype=torch.float32)
    x = torch.randn(chain.shape)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(*chain.data, x)
        base = tracker.memory_allocated()
        loss = invertible_chain(x, chain.ops, chain.data).square().sum()
        loss.backward()
        alive = tracker.memory_allocated() - base
    assert alive == tensor_bytes(loss, *[p.grad for p in chain.modules.parameters()])

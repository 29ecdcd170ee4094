"""The official i-RIM code's paper-2d configuration, rebuilt from irecon's own modules for a like-for-like comparison.

Single-coil 320x320, batch 1, float32; a 64-channel state [Re, Im of the std-normalised zero-filled
image | 2 gradient-accumulator channels | 60 zeros]; per step 10 layers (Householder 1x1 with 3
reflections -> additive coupling 32|32 with G strides (1,1,2,2,4,4,2,2,1,1) and widths
(8,8,32,32,128,128,32,32,8,8) -> transposed Householder); DC before the first step and after each;
no output head; loss = MSE of the last state's two image channels; Adam (lr 1e-3) with gradient
buffers kept allocated (zero_grad(set_to_none=False)).

Prints, with the CPU storage tracker's exact bytes: the activation peak of a training step (peak
minus what was allocated before the step) at several depths, the growth of the peak per step beyond
parameters + gradients + Adam state, the inference activation peak, and the memory-free / plain
step-time ratio on the same model in the same run.

    python benchmarks/official_config.py [--steps 1 2 4 8 16 40] [--size 320] [--timing-steps 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from irecon.memory.meters import StorageTracker, tensor_bytes
from irecon.models.irim import IRIM

OFFICIAL = {"train_activation": 225_021_188, "inference_activation": 117_964_800, "ratio": 1.33}
MIB = 2**20


def build(steps: int, memory_free: bool = True) -> IRIM:
    torch.manual_seed(0)
    return IRIM(
        coils=1, dims=2, n_latent=64, multiplicity=1, steps=steps, parametric_output=False, memory_free=memory_free
    )


def make_inputs(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 1, size, size, dtype=torch.complex64, generator=generator)
    mask = (torch.rand(1, 1, 1, size, generator=generator) < 0.3).float()
    mask[..., size // 2 - 12 : size // 2 + 12] = 1
    kspace = image * mask
    target = torch.randn(1, 2, size, size, generator=generator)
    return kspace, mask, target


def train_step(model: IRIM, optimizer: torch.optim.Optimizer, inputs: tuple[torch.Tensor, ...]) -> None:
    kspace, mask, target = inputs
    optimizer.zero_grad(set_to_none=False)
    state, _, _ = model.run_state(kspace, mask)
    F.mse_loss(state[:, :2], target).backward()
    optimizer.step()


def prepared(steps: int, size: int) -> tuple[IRIM, torch.optim.Optimizer, tuple[torch.Tensor, ...]]:
    """A model whose gradients and Adam state already exist (one warm-up step)."""
    model = build(steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = make_inputs(size)
    train_step(model, optimizer, inputs)
    return model, optimizer, inputs


def training_figures(steps: int, size: int, batches: int = 2) -> dict[str, int]:
    model, optimizer, inputs = prepared(steps, size)
    state_bytes = tensor_bytes(model, grads=True) + tensor_bytes(optimizer)
    peaks = []
    with StorageTracker(device="cpu") as tracker:
        tracker.track(model, optimizer, *inputs)
        for _ in range(batches):
            before = tracker.memory_allocated()
            tracker.reset_peak_memory_stats()
            train_step(model, optimizer, inputs)
            peaks.append((tracker.max_memory_allocated(), before))
    peak, before = min(peaks)
    return {"peak": peak, "activation": peak - before, "state": state_bytes, "before": before}


def inference_activation(steps: int, size: int) -> int:
    model = build(steps).eval()
    kspace, mask, _ = make_inputs(size)
    with StorageTracker(device="cpu") as tracker:
        tracker.track(model, kspace, mask)
        before = tracker.memory_allocated()
        tracker.reset_peak_memory_stats()
        with torch.no_grad():
            model.run_state(kspace, mask)
        return tracker.max_memory_allocated() - before


def step_seconds(model: IRIM, optimizer: torch.optim.Optimizer, inputs: tuple, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_step(model, optimizer, inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timing_ratio(steps: int, size: int, repeats: int) -> tuple[float, float]:
    """Median step time memory-free and plain, alternating so both see the same machine load."""
    model, optimizer, inputs = prepared(steps, size)
    free, plain = [], []
    for _ in range(repeats):
        model.memory_free = True
        free.append(step_seconds(model, optimizer, inputs, 1))
        model.memory_free = False
        plain.append(step_seconds(model, optimizer, inputs, 1))
    return statistics.median(free), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 40])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--timing-steps", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print(
        f"paper-2d official form, single-coil {args.size}x{args.size}, batch 1, float32; "
        "cpu storage tracker, exact tensor bytes"
    )
    print(f"{'layers':>7} {'activation peak (B)':>20} {'MiB':>8} {'params+grads+Adam (B)':>22} {'peak - that (B)':>16}")
    rows = []
    for steps in args.steps:
        fig = training_figures(steps, args.size)
        rows.append((steps, fig))
        print(
            f"{10 * steps:>7} {fig['activation']:>20,} {fig['activation'] / MIB:>8.1f} "
            f"{fig['state']:>22,} {fig['peak'] - fig['state']:>16,}"
        )
    activations = [fig["activation"] for _, fig in rows]
    first, last = rows[0], rows[-1]
    growth = ((last[1]["peak"] - last[1]["state"]) - (first[1]["peak"] - first[1]["state"])) / max(
        1, last[0] - first[0]
    )
    inference = inference_activation(args.steps[-1], args.size)
    free, plain = timing_ratio(args.timing_steps, args.size, args.repeats)
    print()
    print(
        f"training activation peak: {max(activations):,} B = {max(activations) / MIB:.1f} MiB "
        f"(official {OFFICIAL['train_activation'] / MIB:.1f} MiB; ratio {max(activations) / OFFICIAL['train_activation']:.3f}); "
        f"spread over depths {max(activations) - min(activations):,} B"
    )
    print(f"growth of the peak per step beyond params + grads + Adam: {growth:+,.0f} B/step (official +3.1 MiB)")
    print(
        f"inference activation peak: {inference:,} B = {inference / MIB:.1f} MiB "
        f"(official {OFFICIAL['inference_activation'] / MIB:.1f} MiB; ratio {inference / OFFICIAL['inference_activation']:.3f})"
    )
    print(
        f"training step time at {10 * args.timing_steps} layers: memory-free {free:.3f} s, plain {plain:.3f} s, "
        f"ratio {free / plain:.3f} (official {OFFICIAL['ratio']})"
    )


if __name__ == "__main__":
    main()

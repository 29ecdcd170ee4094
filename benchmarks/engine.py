"""Invertible-engine figures: float32 round-trip error against depth, and memory-free / plain speed.

Round trip: reverse(forward(x)) of the paper-2d invertible chain (64 channels, 10 layers per step)
at several depths, relative max error in float32 (float64 is asserted exact by the tests).
Speed: training step (forward, loss, backward, Adam) of the same model with memory_free on and off,
alternating in one run so both see the same machine load; the ratio of the medians.

For repeatable CPU timings run with glibc's allocator told not to hand large blocks back to the OS
(otherwise glibc returns freed activations to the OS and plain autograd pays page faults on every
large activation it allocates again):
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/engine.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from irecon.invertible.engine import invertible_chain, reverse_chain
from irecon.models.irim import IRIM


def model_and_inputs(steps: int, size: int) -> tuple[IRIM, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = IRIM(coils=1, n_latent=64, steps=steps, parametric_output=False)
    generator = torch.Generator().manual_seed(1)
    mask = (torch.rand(1, 1, 1, size, generator=generator) < 0.3).float()
    kspace = torch.randn(1, 1, size, size, dtype=torch.complex64, generator=generator) * mask
    target = torch.randn(1, 2, size, size, generator=generator)
    return model, kspace, mask, target


@torch.no_grad()
def round_trip_error(steps: int, size: int) -> float:
    model, kspace, mask, _ = model_and_inputs(steps, size)
    x, scaled, _ = model.initial_state(kspace, mask)
    x[:, 4:] = torch.randn_like(x[:, 4:])  # exercise every channel, not only the image
    ops = model.ops()
    y = invertible_chain(x, ops, (scaled, mask))
    restored = reverse_chain(y, ops, (scaled, mask), inplace=True)
    return ((restored - x).abs().max() / x.abs().max()).item()


def step_time_ratio(steps: int, size: int, repeats: int) -> tuple[float, float]:
    model, kspace, mask, target = model_and_inputs(steps, size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        state, _, _ = model.run_state(kspace, mask)
        F.mse_loss(state[:, :2], target).backward()
        optimizer.step()
        return time.perf_counter() - start

    step()
    free, plain = [], []
    for _ in range(repeats):
        model.memory_free = True
        free.append(step())
        model.memory_free = False
        plain.append(step())
    return statistics.median(free), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--round-trip-steps", type=int, nargs="+", default=[1, 10, 40])
    parser.add_argument("--timing-steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"paper-2d invertible chain, 64 channels, {args.size}x{args.size}, float32, {torch.get_num_threads()} threads"
    )
    for steps in args.round_trip_steps:
        print(
            f"round trip at {10 * steps:>4} coupling layers: max |x - reverse(forward(x))| / max |x| = "
            f"{round_trip_error(steps, args.size):.2e}"
        )
    for steps in args.timing_steps:
        free, plain = step_time_ratio(steps, args.size, args.repeats)
        print(
            f"training step at {10 * steps:>4} layers: memory-free {free:.3f} s, plain {plain:.3f} s, "
            f"memory-free / plain = {free / plain:.3f}"
        )


if __name__ == "__main__":
    main()

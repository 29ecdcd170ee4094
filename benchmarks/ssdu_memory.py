"""Peak memory of one self-supervised (SSDU) training step on a whole 3-D volume, memory-free vs plain autograd.

Usage: python benchmarks/ssdu_memory.py --model tiny-3d --size 96 96 --slices 6 --device cpu
       python benchmarks/ssdu_memory.py --model paper-3d --size 640 368 --slices 40 --device meta
The step is the training loop's SSDU step: :func:`irecon.training.selfsup.heldout_loss` (Λ and Θ terms, seen
weight 0.1), ``zero_grad``, backward, Adam step, on random single-coil k-space under a 4x mask split with rho
0.4. Weights, gradients, Adam state and the batch are alive before the step and counted, as the planner
(:mod:`irecon.planning.peaks`) counts a supervised step: meta is its shapes-only ``StorageTracker`` (exact tensor
bytes), cpu its allocator meter (``--meter storages`` for tensor storages), cuda ``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from irecon.data.masks import MaskSpec, make_mask
from irecon.data.splits import SplitSpec, split_mask
from irecon.memory.meters import StorageTracker
from irecon.models.presets import preset
from irecon.planning.peaks import device_meter
from irecon.text import human_bytes
from irecon.training.selfsup import heldout_loss


def step_peak(
    name: str, size: tuple[int, int], slices: int, device: torch.device, memory_free: bool, meter: str | None
) -> int:
    """Peak bytes of one SSDU training step of ``name`` on one (1, 1, slices, H, W) volume, after one warm-up."""
    meta = device.type == "meta"
    with torch.random.fork_rng(devices=[]), torch.device("meta") if meta else contextlib.nullcontext():
        torch.manual_seed(0)
        model = preset(name).build(memory_free=memory_free)
    model = model.to(device).train()
    mask, _ = make_mask(MaskSpec("random", (0.08,), (4,)), size[1], 0)
    theta, loss_set = (torch.from_numpy(m).reshape(1, 1, 1, 1, -1).to(device) for m in split_mask(mask, SplitSpec(), 0))
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, 1, slices, *size, dtype=torch.complex64, generator=generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = heldout_loss(model, kspace, theta, loss_set, seen_weight=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if meta:  # zeros stand for the warm-up's gradients, as the planner does
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
    else:
        step()
    with StorageTracker("meta") if meta else device_meter(device, meter) as watching:
        watching.track(model, optimizer, kspace, theta, loss_set)
        watching.reset_peak_memory_stats()
        step()
        return watching.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-3d")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96))
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meter", choices=("allocator", "storages"), default=None)
    parser.add_argument("--skip-plain", action="store_true", help="measure memory-free only")
    args = parser.parse_args()
    device = torch.device(args.device)
    peaks = {}
    for memory_free in (True,) if args.skip_plain else (True, False):
        peak = step_peak(args.model, tuple(args.size), args.slices, device, memory_free, args.meter)
        peaks[memory_free] = peak
        print(
            f"{args.model} SSDU step, 1 x {args.slices} x {args.size[0]} x {args.size[1]} single-coil, "
            f"{'memory-free' if memory_free else 'plain autograd'}: peak {human_bytes(peak)} ({peak:,} B) on {device}"
        )
    if len(peaks) == 2:
        print(f"plain / memory-free: {peaks[False] / peaks[True]:.2f}")


if __name__ == "__main__":
    main()

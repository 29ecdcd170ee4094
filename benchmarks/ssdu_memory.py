"""Peak memory of one self-supervised (SSDU) training step on a whole 3-D volume, memory-free vs plain autograd.

Usage: python benchmarks/ssdu_memory.py --model tiny-3d --size 96 96 --slices 8 --device cpu
       python benchmarks/ssdu_memory.py --model paper-3d --size 640 368 --slices 40 --device meta
The step is :func:`irecon.training.selfsup.heldout_loss` (Λ and Θ terms) and its backward pass, on
random single-coil k-space under a 4x mask split with rho 0.4; the peak is read with
:func:`irecon.memory.meters.peak_memory_meter` (the CPU storage tracker, or the meta planner: exact
tensor bytes either way), weights included, as ``irecon bench-memory`` counts a training peak.
"""

from __future__ import annotations

import argparse

import torch

from irecon.data.masks import MaskSpec, make_mask
from irecon.data.splits import SplitSpec, split_mask
from irecon.memory.meters import peak_memory_meter
from irecon.models.presets import preset
from irecon.text import human_bytes
from irecon.training.selfsup import heldout_loss


def step_peak(model_name: str, size: tuple[int, int], slices: int, device: str, memory_free: bool) -> int:
    """Peak bytes of one SSDU forward + backward of ``model_name`` on one (1, 1, slices, H, W) volume."""
    torch.manual_seed(0)
    mask, _ = make_mask(MaskSpec("random", (0.08,), (4,)), size[1], 0)
    theta, loss_set = (torch.from_numpy(m).reshape(1, 1, 1, 1, -1) for m in split_mask(mask, SplitSpec(), 0))
    with peak_memory_meter(device, "storages") as meter:
        model = preset(model_name).build(memory_free=memory_free).to(device)
        kspace = torch.randn(1, 1, slices, *size, dtype=torch.complex64, device=device)
        theta, loss_set = theta.to(device), loss_set.to(device)
        heldout_loss(model, kspace * (theta + loss_set), theta, loss_set, seen_weight=1.0).backward()
        return meter.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-3d")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96))
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-plain", action="store_true", help="measure memory-free only")
    args = parser.parse_args()
    peaks = {}
    for memory_free in (True, False) if not args.skip_plain else (True,):
        peaks[memory_free] = step_peak(args.model, tuple(args.size), args.slices, args.device, memory_free)
        name = "memory-free" if memory_free else "plain autograd"
        print(
            f"{args.model} SSDU step, 1 x {args.slices} x {args.size[0]} x {args.size[1]} single-coil, "
            f"{name}: peak {human_bytes(peaks[memory_free])} ({peaks[memory_free]:,} B) on {args.device}"
        )
    if len(peaks) == 2:
        print(f"plain / memory-free: {peaks[False] / peaks[True]:.2f}")


if __name__ == "__main__":
    main()

"""Which layout a 2-D block's GEMMs should use at k hidden channels: the figures behind ``coupling.NARROW_ROWS``.

A 2-D block keeps its hidden activations channels last, which the 3x3 conv's backward wants. Its GEMMs can
either read and write those activations as k-wide pixel rows, or work in (B, k, N) order and pay one layout
copy each way. Blocks with k <= ``NARROW_ROWS`` use (B, k, N) order. For each k this prints, in one process:

* a stride-1 folded layer (the paper's 64-channel state) at the given size, forward (``transform_``) and
  backward (``backward_``), on each side of the threshold (the threshold moved for the run), medians of
  interleaved repeats;
* the stride-1 patchify GEMM alone, x1ᵀWᵀ written as rows against W x1 and its copy into rows;
* the 3x3 conv's backward on NCHW against channels-last activations (why the conv stays channels last).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/narrow_rows.py --hidden 8 12 16 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from irecon.invertible import coupling
from irecon.invertible.layers import InvertibleLayer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, run as a script or imported
from engine import describe_machine  # noqa: E402


def _median_ms(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable in ms, the callables taking turns (one warm-up call each)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _layer_ms(k: int, channels: int, size: tuple[int, int], repeats: int) -> dict[str, float]:
    """A stride-1 folded layer's forward and backward with the GEMMs in rows and in (B, k, N) order."""
    torch.manual_seed(0)
    layer = InvertibleLayer(channels, hidden=k, stride=1)
    x = torch.randn(1, channels, *size)
    grad = torch.randn_like(x)
    default = coupling.NARROW_ROWS

    def run(threshold: int, backward: bool) -> Callable[[], object]:
        def step() -> object:
            coupling.NARROW_ROWS = threshold
            try:
                if backward:
                    return layer.backward_(x.clone(), grad.clone(), ())
                return layer.transform_(x.clone(), ())
            finally:
                coupling.NARROW_ROWS = default

        return step

    return _median_ms(
        {
            "forward rows": run(k - 1, False),
            "forward (B,k,N)": run(k, False),
            "backward rows": run(k - 1, True),
            "backward (B,k,N)": run(k, True),
        },
        repeats,
    )


def _gemm_and_conv_ms(k: int, channels: int, size: tuple[int, int], repeats: int) -> dict[str, float]:
    """The patchify GEMM in both orders and the 3x3 conv's backward in both layouts."""
    n = size[0] * size[1]
    x1 = torch.randn(1, channels, n)
    weight = torch.randn(k, channels)
    h = torch.randn(1, k, *size)
    mix = torch.randn(k, k, 3, 3)
    grad_h = torch.randn_like(h)
    last = torch.channels_last

    def conv_backward(layout: torch.memory_format) -> Callable[[], object]:
        h_l, mix_l, grad_l = (t.contiguous(memory_format=layout) for t in (h, mix, grad_h))
        return lambda: torch.ops.aten.convolution_backward(
            grad_l, h_l, mix_l, [k], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]
        )

    return _median_ms(
        {
            "patchify GEMM rows": lambda: torch.bmm(x1.transpose(1, 2), weight.t().expand(1, -1, -1)),
            "patchify GEMM (B,k,N) + copy": lambda: (
                torch.bmm(weight.expand(1, -1, -1), x1).view(1, k, *size).contiguous(memory_format=last)
            ),
            "3x3 conv backward NCHW": conv_backward(torch.contiguous_format),
            "3x3 conv backward channels last": conv_backward(last),
        },
        repeats,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[8, 12, 16, 32])
    parser.add_argument("--channels", type=int, default=64, help="the state's channels (the paper's 64)")
    parser.add_argument("--size", type=int, nargs=2, default=[320, 320], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    size = (args.size[0], args.size[1])
    print(
        f"stride-1 folded layer, {args.channels} channels, {size[0]}x{size[1]}, batch 1, float32, "
        f"{torch.get_num_threads()} thread(s); NARROW_ROWS = {coupling.NARROW_ROWS}; medians of {args.repeats} "
        f"interleaved runs, ms\n  on {describe_machine()}"
    )
    for k in args.hidden:
        figures = _layer_ms(k, args.channels, size, args.repeats) | _gemm_and_conv_ms(
            k, args.channels, size, args.repeats
        )
        print(f"k = {k}")
        for first, second in zip(list(figures)[::2], list(figures)[1::2]):
            a, b = figures[first], figures[second]
            print(f"  {first:<32} {a:8.2f}   {second:<34} {b:8.2f}   ratio {a / b:5.2f}")


if __name__ == "__main__":
    main()

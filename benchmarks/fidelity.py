"""Float32 fidelity of the memory-free engine at depth, against a float64 plain-autograd reference.

For the paper-2d i-RIM (64 channels, 10 layers per step, parametric output head) at several total
layer counts, on one set of float32 weights and random single-coil data (the float64 reference
uses the exact upcast of both):

* round trip: max |reverse_state(run_state(x0)) - x0| / max |x0| in float32, x0 the model's own
  initial state;
* gradient error: ||g - g64|| / ||g64|| over all parameter gradients of an MSE loss on the output
  image, and the worst single parameter tensor, for float32 plain autograd (float32's own floor),
  memory-free float32, and memory-free float32 keeping the exact state at every step boundary.

    python benchmarks/fidelity.py [--size 64 64] [--layers 10 40 100 400] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from irecon.models.irim import IRIM
from irecon.models.presets import preset
from irecon.physics import forward_operator, root_sum_of_squares_image

LAYERS_PER_STEP = 10


@dataclass
class Row:
    """One depth's measurements (relative errors; ``worst_*`` over single parameter tensors)."""

    layers: int
    steps: int
    round_trip: float
    plain32: float
    worst_plain32: float
    free32: float
    worst_free32: float
    kept32: float
    worst_kept32: float
    seconds: float


def inputs(size: tuple[int, int], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(k-space, mask, target) in float32: a random image's k-space under a 30% column mask with a
    4-column centre, and the image's magnitude."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    image = torch.randn(1, 2, h, w, generator=generator)
    mask = (torch.rand(1, 1, 1, w, generator=generator) < 0.3).float()
    mask[..., w // 2 - 2 : w // 2 + 2] = 1
    return forward_operator(image, mask), mask, root_sum_of_squares_image(image)


def gradients(model: IRIM, kspace: Tensor, mask: Tensor, target: Tensor) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    F.mse_loss(model(kspace, mask)[-1], target).backward()
    return [p.grad.detach().double() for p in model.parameters()]


def errors(grads: list[Tensor], reference: list[Tensor]) -> tuple[float, float]:
    """(relative error over all parameters, worst relative error of one parameter tensor)."""
    total = sum(((g - r).norm() ** 2 for g, r in zip(grads, reference)), torch.zeros((), dtype=torch.float64))
    norm = sum((r.norm() ** 2 for r in reference), torch.zeros((), dtype=torch.float64))
    worst = max(((g - r).norm() / r.norm()).item() for g, r in zip(grads, reference) if r.norm() > 0)
    return (total.sqrt() / norm.sqrt()).item(), worst


@torch.no_grad()
def round_trip(model: IRIM, kspace: Tensor, mask: Tensor) -> float:
    x0, scaled, _ = model.initial_state(kspace, mask)
    state, _, _ = model.run_state(kspace, mask)
    restored = model.reverse_state(state, scaled, mask)
    return ((restored - x0).abs().max() / x0.abs().max()).item()


def measure(layers: int, size: tuple[int, int], seed: int, log: Callable[[str], None]) -> Row:
    start = time.perf_counter()
    steps = layers // LAYERS_PER_STEP
    torch.manual_seed(seed)
    model32 = preset("paper-2d", steps=steps).build(memory_free=True)
    model64 = copy.deepcopy(model32).double()
    model64.memory_free = False
    kspace, mask, target = inputs(size, seed)
    data64 = (kspace.to(torch.complex128), mask.double(), target.double())

    reference = gradients(model64, *data64)
    del model64
    log(f"{layers} layers: float64 reference done")
    row_round_trip = round_trip(model32, kspace, mask)
    free = errors(gradients(model32, kspace, mask, target), reference)
    model32.keep_step_states = True
    kept = errors(gradients(model32, kspace, mask, target), reference)
    model32.keep_step_states = False
    model32.memory_free = False
    plain = errors(gradients(model32, kspace, mask, target), reference)
    return Row(layers, steps, row_round_trip, *plain, *free, *kept, time.perf_counter() - start)


def table(rows: list[Row]) -> str:
    lines = [
        "| layers | steps | round trip f32 | plain f32 | worst param | memory-free f32 | worst param "
        "| memory-free f32, step states kept | worst param |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.layers} | {r.steps} | {r.round_trip:.1e} | {r.plain32:.1e} | {r.worst_plain32:.1e} "
            f"| {r.free32:.1e} | {r.worst_free32:.1e} | {r.kept32:.1e} | {r.worst_kept32:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 40, 100, 400])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    size = (args.size[0], args.size[1])
    if any(n < LAYERS_PER_STEP or n % LAYERS_PER_STEP for n in args.layers):
        parser.error(f"--layers takes multiples of {LAYERS_PER_STEP}, got {args.layers}")
    log = (lambda _: None) if args.quiet else (lambda line: print(line, flush=True))
    rows = [measure(layers, size, args.seed, log) for layers in args.layers]
    print(
        f"paper-2d i-RIM, {size[0]}x{size[1]}, batch 1, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; gradient errors are ||g - g64|| / ||g64|| "
        "against float64 plain autograd"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)


if __name__ == "__main__":
    main()

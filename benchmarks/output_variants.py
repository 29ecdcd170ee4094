"""Train ``tiny-2d`` with each i-RIM output (official, residual, residual-rss) and print each epoch's validation.

One JSON line per run: output, seed, loss, lr, seconds and per epoch (epoch, train loss, val NMSE,
PSNR, SSIM at the first acceleration). The measurements behind docs/compare.md's output section:

    OMP_NUM_THREADS=1 python benchmarks/output_variants.py TRAIN VAL --out OUT --outputs residual official --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from irecon.models import presets
from irecon.models.irim import OUTPUTS
from irecon.training.loop import train
from irecon.training.options import TrainOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("val", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--outputs", nargs="+", choices=OUTPUTS, default=list(OUTPUTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--loss", default="ssim")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    base = presets.PRESETS["tiny-2d"][0]
    for output in args.outputs:
        name = f"tiny-2d-{output}"
        presets.PRESETS[name] = (replace(base, output=output), f"tiny-2d with the {output} output")
        for seed in args.seeds:
            options = TrainOptions(
                args.train,
                args.val,
                name,
                args.out / f"{output}-{args.loss}-{args.lr:g}-seed{seed}",
                epochs=100_000,
                max_steps=args.steps,
                batch_size=2,
                accelerations=(4, 8),
                center_fractions=(0.08, 0.04),
                seed=seed,
                device="cpu",
                loss=args.loss,
                lr=args.lr,
                overwrite=True,
            )
            started = time.perf_counter()
            result = train(options, console=Console(stderr=True, quiet=True))
            history = [
                [
                    r["epoch"],
                    round(r["train_loss"], 4),
                    round(r["val_nmse"], 4),
                    round(r["val_psnr"], 2),
                    round(r["val_ssim"], 4),
                ]
                for r in result.history
            ]
            record = {"output": output, "seed": seed, "loss": args.loss, "lr": args.lr}
            print(json.dumps({**record, "s": round(time.perf_counter() - started), "history": history}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One validated epoch of each training run (metrics.jsonl) as a markdown table row, zero-filled first.

Usage: python benchmarks/ssdu_table.py [--select heldout] [--epoch N] RUN_DIR...
The last epoch by default (``--epoch N``: epoch N, or the last before it); with ``--select heldout`` a
self-supervised run's epoch with the lowest held-out k-space loss (a choice made without targets;
supervised runs keep their last epoch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", choices=("last", "heldout"), default="last")
    parser.add_argument("--epoch", type=int, default=None)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | steps | val SSIM | val PSNR | held-out k-space loss |")
    print("|---|---:|---:|---:|---:|")
    for index, run in enumerate(args.runs):
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        history = [r for r in history if args.epoch is None or r["epoch"] <= args.epoch]
        chosen = history[-1]
        if args.select == "heldout" and history[-1].get("val_kspace_loss") is not None:
            chosen = min(history, key=lambda r: r["val_kspace_loss"])
        if index == 0:
            print(f"| zero-filled | | {chosen['zero_filled_ssim']:.4f} | {chosen['zero_filled_psnr']:.2f} | |")
        heldout = chosen.get("val_kspace_loss")
        print(
            f"| {run.parent.name}/{run.name} | {chosen['global_step']} | {chosen['val_ssim']:.4f} | "
            f"{chosen['val_psnr']:.2f} | {'' if heldout is None else f'{heldout:.4f}'} |"
        )


if __name__ == "__main__":
    main()

"""The last validated epoch of each training run (metrics.jsonl) as a markdown table row, zero-filled first.

Usage: python benchmarks/ssdu_table.py RUN_DIR...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    rows = [json.loads(Path(run, "metrics.jsonl").read_text().splitlines()[-1]) for run in sys.argv[1:]]
    print("| run | steps | val SSIM | val PSNR | held-out k-space loss |")
    print("|---|---:|---:|---:|---:|")
    print(f"| zero-filled | | {rows[0]['zero_filled_ssim']:.4f} | {rows[0]['zero_filled_psnr']:.2f} | |")
    for run, r in zip(sys.argv[1:], rows):
        heldout = r.get("val_kspace_loss")
        print(
            f"| {Path(run).parent.name}/{Path(run).name} | {r['global_step']} | {r['val_ssim']:.4f} | {r['val_psnr']:.2f} | "
            f"{'' if heldout is None else f'{heldout:.4f}'} |"
        )


if __name__ == "__main__":
    main()

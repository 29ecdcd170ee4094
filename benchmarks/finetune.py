"""How many steps ``irecon train --init default`` saves against training from scratch, on data the bundled weights never saw.

New synthetic phantoms (seeds 200-201) at another matrix (192x160 k-space, 128x128 targets) and
2.5x synth's default k-space noise (one of the bundled models' four training levels). The same ``tiny-2d`` trains from
scratch and from the bundled single-coil weights for the same steps (seed 0, one thread); the
table gives the validation SSIM and PSNR after each epoch, and the steps the scratch run needed
to reach the fine-tuned run's first-epoch SSIM:

    python benchmarks/finetune.py [--out finetune-output] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SIZE = ["--kspace-size", "192", "160", "--recon-size", "128", "128", "--noise", "0.05"]
VOLUMES, SLICES, BATCH = 8, 8, 2
STEPS_PER_EPOCH = VOLUMES * SLICES // BATCH


def irecon(*args: object) -> None:
    """Run one irecon command in a fresh process, echoing it; stop on failure."""
    words = [str(a) for a in args]
    print(f"\n$ irecon {' '.join(words)}", flush=True)
    if subprocess.run([sys.executable, "-m", "irecon.cli", *words]).returncode != 0:
        sys.exit(f"irecon {words[0]} failed")


def history(run: Path) -> list[dict]:
    """The run's per-epoch records (metrics.jsonl)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("finetune-output"))
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    train, val = args.out / "data" / "train", args.out / "data" / "val"
    irecon("synth", train, "--volumes", VOLUMES, "--slices", SLICES, *SIZE, "--seed", 200, "--overwrite")
    irecon("synth", val, "--split", "val", "--volumes", 3, "--slices", SLICES, *SIZE, "--seed", 201, "--overwrite")
    steps = args.epochs * STEPS_PER_EPOCH
    common = ["--val", val, "--epochs", args.epochs, "--max-steps", steps, "--batch-size", BATCH, "--seed", 0]
    runs = {"scratch": ["--model", "tiny-2d"], "fine-tuned": ["--init", "default"]}
    for name, start in runs.items():
        irecon("train", train, *start, "--out", args.out / name, *common, "--threads", 1, "--overwrite")
    curves = {name: history(args.out / name) for name in runs}
    print(
        f"\nvalidation after each epoch ({STEPS_PER_EPOCH} steps, batch {BATCH}); zero-filled SSIM "
        f"{curves['scratch'][0]['zero_filled_ssim']:.4f}, PSNR {curves['scratch'][0]['zero_filled_psnr']:.2f}"
    )
    print("| steps | scratch SSIM | scratch PSNR | fine-tuned SSIM | fine-tuned PSNR |\n|---:|---:|---:|---:|---:|")
    for scratch, tuned in zip(curves["scratch"], curves["fine-tuned"]):
        print(
            f"| {scratch['global_step']} | {scratch['val_ssim']:.4f} | {scratch['val_psnr']:.2f} | "
            f"{tuned['val_ssim']:.4f} | {tuned['val_psnr']:.2f} |"
        )
    goal = curves["fine-tuned"][0]["val_ssim"]
    reached = [r["global_step"] for r in curves["scratch"] if r["val_ssim"] >= goal]
    saved = f"after {reached[0]} steps" if reached else f"not within {steps} steps"
    print(f"\nthe fine-tuned run's SSIM after {STEPS_PER_EPOCH} steps ({goal:.4f}) is reached from scratch {saved}")


if __name__ == "__main__":
    main()

"""``make pretrained``: train, score and install the bundled i-RIM weights, reproducibly.

For each bundled model: ``irecon synth`` makes its training, validation and held-out data (fixed
seeds), ``irecon train`` trains it for a fixed number of steps on one thread (fixed seed), its best
epoch (chosen on the validation volumes) is stripped to config + weights and installed as package
data in ``src/irecon/models/pretrained/`` with its sha256 in ``manifest.json``, and ``irecon
reconstruct`` scores it against zero-filled under the same file-seeded masks on held-out data it
never saw: synthetic volumes and twixtools' real ``gre.dat`` (retrospectively undersampled).
Every step is the real command, printed before it runs; figures go to ``pretrained-output/``.

    python benchmarks/pretrained.py [--only irim-singlecoil] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from irecon.files import sha256_of, write_json
from irecon.models.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("pretrained-output")
PACKAGE_DATA = ROOT / "src" / "irecon" / "models" / "pretrained"
GRE = ROOT / ".cache" / "twixtools" / "twixtools-0.24" / "example_data" / "gre.dat"
TRAIN_SIZE = ["--kspace-size", "160", "128", "--recon-size", "96", "96"]
# Held out at a second, larger matrix: the weights must not depend on the training size.
LARGE_SIZE = ["--kspace-size", "320", "256", "--recon-size", "192", "192"]
MASKS = {4: 0.08, 8: 0.04}
MAX_FILE_BYTES = 2 * 1024 * 1024
PRESET = "tiny-2d"
SEED = 0
# Training k-space noise, relative to its RMS: synth's default 0.02 up to gre.dat's measured ~0.2, 12 volumes each,
# so the models learn to keep a noisy background instead of blacking it out.
TRAIN_NOISE = (0.02, 0.05, 0.1, 0.2)
TRAIN_VOLUMES = 48
STEPS_PER_EPOCH = TRAIN_VOLUMES * 8 // 2  # 48 volumes x 8 slices at batch 2
STEPS = 6 * STEPS_PER_EPOCH  # whole epochs, so the last step is a validated (selectable) epoch


@dataclass(frozen=True)
class Bundle:
    """One bundled model: its name, preset, data and recipe."""

    name: str
    challenge: str
    coils: int
    virtual_coils: int | None
    steps: int
    accelerations: tuple[int, ...]

    def synth(self) -> list[str]:
        extra = ["--coils", str(self.coils)] if self.challenge == "multicoil" else []
        return ["--challenge", self.challenge, *extra]


BUNDLES = (
    Bundle("irim-singlecoil", "singlecoil", 1, None, steps=STEPS, accelerations=(4, 8)),
    Bundle("irim-multicoil", "multicoil", 8, 2, steps=STEPS, accelerations=(4,)),
)


def irecon(*args: object) -> float:
    """Run one irecon command in a fresh process, echoing it; stop on failure. Returns its seconds."""
    words = [str(a) for a in args]
    print(f"\n$ irecon {' '.join(words)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "irecon.cli", *words])
    if result.returncode != 0:
        sys.exit(f"irecon {words[0]} failed with exit status {result.returncode}")
    return time.perf_counter() - started


def make_data(bundle: Bundle, data: Path) -> dict[str, Path]:
    """Training (seeds 110-140, one per noise level), validation and held-out volumes (seeds 101-103), gre.dat imported."""
    train = data / bundle.challenge / "train"
    shutil.rmtree(train, ignore_errors=True)  # the noise levels are several synth runs into one folder
    per_level = TRAIN_VOLUMES // len(TRAIN_NOISE)
    for level, noise in enumerate(TRAIN_NOISE, start=1):
        args = ["--volumes", per_level, "--slices", "8", *TRAIN_SIZE, "--noise", noise, "--seed", 100 + 10 * level]
        irecon("synth", train, *bundle.synth(), *args)
    folders = {"train": train}
    sets = {
        "val": (["--split", "val", "--volumes", "4", "--slices", "8", *TRAIN_SIZE], 101),
        "held-out": (["--split", "val", "--volumes", "6", "--slices", "8", *TRAIN_SIZE], 102),
        "held-out-large": (["--split", "val", "--volumes", "3", "--slices", "4", *LARGE_SIZE], 103),
    }
    for name, (args, seed) in sets.items():
        folders[name] = data / bundle.challenge / name
        irecon("synth", folders[name], *bundle.synth(), *args, "--seed", seed, "--overwrite")
    if GRE.is_file():
        folders["gre.dat"] = data / "real"
        irecon("import", GRE, "--out", folders["gre.dat"], "--overwrite")
    else:
        print(f"{GRE} missing (make test-tools fetches it): the real-scan scores are skipped")
    return folders


def install(bundle: Bundle, run: Path, steps_done: int, seconds: float) -> Path:
    """The best epoch (the last model for a trial shorter than an epoch) as config + weights, as package data."""
    payload = load_checkpoint(run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt")
    bundled = {
        "model_config": payload["model_config"],
        "model": {k: v.to(torch.float32) for k, v in payload["model"].items()},
        "preset": PRESET,
        "virtual_coils": payload.get("virtual_coils"),
        "bundled": {"name": bundle.name, "steps": steps_done, "train_seconds": round(seconds)},
    }
    PACKAGE_DATA.mkdir(parents=True, exist_ok=True)
    path = PACKAGE_DATA / f"{bundle.name}.pt"
    save_checkpoint(path, bundled)
    if path.stat().st_size > MAX_FILE_BYTES:
        sys.exit(f"{path}: {path.stat().st_size} bytes, over the 2 MiB package-data limit")
    return path


def score(bundle: Bundle, weights: Path, folder: Path, acceleration: int, out: Path) -> dict[str, float]:
    """The model and zero-filled on ``folder`` at ``acceleration`` under the same file-seeded masks (reconstruct's JSON)."""
    report = out / f"{folder.name}-{acceleration}x.json"
    extra = ["--virtual-coils", "1"] if bundle.challenge == "singlecoil" and folder.name == "real" else []
    irecon(
        "reconstruct", folder, "--checkpoint", weights, "--out", out / f"{folder.name}-{acceleration}x",
        "--acceleration", acceleration, "--center-fraction", MASKS[acceleration], "--threads", "1",
        "--json", report, "--overwrite", *extra,
    )  # fmt: skip
    mean = json.loads(report.read_text())["mean"]
    model, zero = mean["metrics"], mean["zero_filled"]
    return {
        **{k: round(model[k], 4) for k in ("ssim", "psnr", "nmse")},
        **{f"zero_filled_{k}": round(zero[k], 4) for k in ("ssim", "psnr", "nmse")},
        "volumes": mean["scored_volumes"],
    }


def build(bundle: Bundle, steps: int, retrain: bool = True) -> tuple[dict, dict]:
    """Data, training (unless ``retrain`` is False: the run's best.pt is reused), installation and held-out scores.

    Returns the manifest entry and the scores on every held-out set.
    """
    folders = make_data(bundle, OUT / "data")
    run = OUT / "runs" / bundle.name
    coils = ["--virtual-coils", bundle.virtual_coils] if bundle.virtual_coils else []
    if not retrain:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        seconds = next(r["wall_time_s"] for r in records if r["global_step"] == steps)
    else:
        seconds = irecon(
            "train", folders["train"], "--val", folders["val"], "--model", PRESET, "--out", run, "--epochs", "1000",
            "--max-steps", steps, "--batch-size", "2", "--seed", SEED, "--threads", "1", "--loss", "ssim-l1",
            "--overwrite", *coils,
        )  # fmt: skip
    weights = install(bundle, run, steps, seconds)
    scored = {}
    for name in ("held-out", "held-out-large", "gre.dat"):
        if name in folders:
            scored[name] = {
                str(a): score(bundle, weights, folders[name], a, OUT / "scores" / bundle.name)
                for a in bundle.accelerations
            }
    return {
        "name": bundle.name,
        "file": weights.name,
        "sha256": sha256_of(weights),
        "preset": PRESET,
        "coils": 1 if bundle.challenge == "singlecoil" else bundle.virtual_coils,
        "virtual_coils": bundle.virtual_coils,
        "trained_on": (
            f"irecon synth {bundle.challenge}"
            + (f" ({bundle.coils} coils -> {bundle.virtual_coils} virtual)" if bundle.virtual_coils else "")
            + f", {TRAIN_VOLUMES} volumes x 8 slices, 160x128 k-space, noise {'/'.join(map(str, TRAIN_NOISE))}; {steps} steps, seed {SEED}, 1 thread, {seconds:.0f} s"
        ),
        "steps": steps,
        "recipe": "make pretrained",
        "scores": scored["held-out"],
    }, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[b.name for b in BUNDLES], action="append", help="build only these")
    parser.add_argument("--steps", type=int, help="override every bundle's steps (trials; not for shipping)")
    parser.add_argument(
        "--no-train", action="store_true", help="reuse the runs already in pretrained-output/runs (install and score)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest_path = PACKAGE_DATA / "manifest.json"
    for bundle in BUNDLES:
        if args.only and bundle.name not in args.only:
            continue
        entry, held_out = build(bundle, args.steps or bundle.steps, retrain=not args.no_train)
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": []}
        manifest["models"] = [m for m in manifest["models"] if m["name"] != bundle.name] + [entry]
        manifest["models"].sort(key=lambda m: m["name"])
        write_json(manifest_path, manifest)
        write_json(OUT / f"{bundle.name}.json", {**entry, "held_out": held_out})
        print(json.dumps(held_out, indent=1))


if __name__ == "__main__":
    main()

"""``make demo``: the main job end to end on built-in synthetic data, as a new user would run it.

synth (train / val / test-style volumes) -> train a tiny-2d i-RIM -> reconstruct the validation and
test-style volumes with previews -> a short bench-memory sweep -> i-RIM, RIM and U-Net trained for
the same steps and scored next to zero-filled -> i-RIM against zero-filled.
Every step is the real ``irecon`` command, printed before it runs. Outputs go to ``demo-output/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

OUT = Path("demo-output")
DATA = OUT / "data"
SIZE = ["--kspace-size", "160", "128", "--recon-size", "96", "96"]
EPOCHS = "12"

console = Console()


def irecon(*args: object) -> None:
    """Run one irecon command in a fresh process, echoing it like a shell would."""
    words = [str(a) for a in args]
    console.print(f"\n[bold]$ irecon {' '.join(words)}[/bold]")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "irecon.cli", *words])
    if result.returncode != 0:
        console.print(f"[red]irecon {words[0]} failed with exit status {result.returncode}[/red]")
        sys.exit(result.returncode)
    console.print(f"[dim]({time.perf_counter() - started:.0f} s)[/dim]")


def comparison(report_path: Path) -> Table:
    """i-RIM against zero-filled under the same masks, from the reconstruct JSON report."""
    report = json.loads(report_path.read_text())
    mean = report["mean"]
    table = Table(title=f"validation volumes ({mean['scored_volumes']}), same file-seeded masks")
    for column in ("model", "NMSE", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, scores in (("zero-filled", mean["zero_filled"]), ("i-RIM tiny-2d", mean["metrics"])):
        table.add_row(name, f"{scores['nmse']:.4f}", f"{scores['psnr']:.2f}", f"{scores['ssim']:.4f}")
    return table


COMPARE_SCRIPT = Path(__file__).resolve().parent / "compare.py"
DEMO_BUDGET_S = 15 * 60
COMPARE_COST_S = 4 * 60  # what the comparison below took at most on a loaded 2-core CPU


def compare(started: float) -> None:
    """i-RIM vs RIM vs U-Net vs zero-filled at equal steps, if the demo's 15 minutes allow it."""
    left = DEMO_BUDGET_S - (time.perf_counter() - started)
    if not COMPARE_SCRIPT.is_file():
        console.print("[dim]benchmarks/compare.py is not here (not a source checkout); comparison skipped[/dim]")
        return
    steps = 36 if left > COMPARE_COST_S else 12
    # The demo's 16 training volumes: on 4, the i-RIM overfits within 3 epochs (docs/compare.md).
    select = ["--split", "val", "--volumes", 2, "--slices", 6, *SIZE, "--seed", 3, "--overwrite"]
    irecon("synth", DATA / "compare-select", *select)
    words = [
        str(COMPARE_SCRIPT),
        DATA / "train",
        DATA / "val",
        "--select",
        DATA / "compare-select",
        "--out",
        OUT / "compare",
        "--steps",
        steps,
        "--accelerations",
        4,
        "--device",
        "cpu",
        "--overwrite",
    ]
    console.print(f"\n[bold]$ python benchmarks/compare.py {' '.join(str(w) for w in words[1:])}[/bold]")
    result = subprocess.run([sys.executable, *map(str, words)])
    if result.returncode != 0:
        console.print(f"[red]compare failed with exit status {result.returncode}[/red]")
        sys.exit(result.returncode)


def main() -> None:
    started = time.perf_counter()
    irecon("synth", DATA / "train", "--volumes", 16, "--slices", 6, *SIZE, "--seed", 0, "--overwrite")
    irecon("synth", DATA / "val", "--split", "val", "--volumes", 3, "--slices", 6, *SIZE, "--seed", 1, "--overwrite")
    irecon("synth", DATA / "test", "--split", "test", "--volumes", 2, "--slices", 6, *SIZE, "--seed", 2, "--overwrite")
    irecon("check", DATA / "train", DATA / "val", DATA / "test", "--no-values")
    irecon(
        "train",
        DATA / "train",
        "--val",
        DATA / "val",
        "--model",
        "tiny-2d",
        "--out",
        OUT / "run",
        "--epochs",
        EPOCHS,
        "--lr-step",
        4,
        "--accelerations",
        4,
        "--center-fractions",
        0.08,
        "--batch-size",
        2,
        "--overwrite",
    )
    irecon(
        "reconstruct",
        DATA / "val",
        "--checkpoint",
        OUT / "run" / "best.pt",
        "--out",
        OUT / "recon" / "val",
        "--preview",
        OUT / "previews" / "val",
        "--json",
        OUT / "recon" / "val.json",
        "--overwrite",
    )
    irecon(
        "reconstruct",
        DATA / "test",
        "--checkpoint",
        OUT / "run" / "best.pt",
        "--out",
        OUT / "recon" / "test",
        "--preview",
        OUT / "previews" / "test",
        "--overwrite",
    )
    irecon(
        "bench-memory",
        "--model",
        "tiny-2d",
        "--steps",
        1,
        "--steps",
        4,
        "--steps",
        16,
        "--size",
        160,
        128,
        "--batches",
        3,
        "--timing-batches",
        1,
        "--compare-plain",
        "--with-rim",
        "--device",
        "cpu",
        "--json",
        OUT / "bench-memory.json",
        "--plot",
        OUT / "bench-memory.png",
    )
    compare(started)
    console.print()
    console.print(comparison(OUT / "recon" / "val.json"))
    console.print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min; outputs:")
    for path, what in (
        (DATA, "synthetic fastMRI volumes (train / val / test-style)"),
        (OUT / "run", "checkpoints (last.pt, best.pt), metrics.jsonl, training_curve.png"),
        (OUT / "recon", "reconstructions (fastMRI format) and val.json scores"),
        (OUT / "previews", "PNG previews: zero-filled | i-RIM | target, and their error maps"),
        (OUT / "bench-memory.png", "peak memory against depth (bench-memory.json: the figures)"),
        (OUT / "compare", "i-RIM vs RIM vs U-Net vs zero-filled: compare.md, compare.json, compare.png"),
    ):
        console.print(f"  {path}: {what}")


if __name__ == "__main__":
    main()

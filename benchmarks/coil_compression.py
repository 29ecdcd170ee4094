"""What coil compression costs: SSIM of zero-filled RSS with and without ``--virtual-coils N``.

Each run is the real ``irecon reconstruct --model zero-filled`` on synthetic multi-coil volumes
(``irecon synth``: smooth coil sensitivities, 2% k-space noise), fully sampled (``--acceleration 1``,
the cost of compression alone) and at 4x (random mask, 8% centre; the compression is calibrated on
the mask's centre lines), scored against the RSS of all physical coils, and, when the twixtools
example data is there, on the real Siemens GRE scan (2 coils) imported by ``irecon import``.

    python benchmarks/coil_compression.py [--coils 16] [--virtual 8 4 2 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path

from click.testing import CliRunner

from irecon.cli import main

GRE = Path(__file__).resolve().parents[1] / ".cache/twixtools/twixtools-0.24/example_data/gre.dat"


def irecon(*args: object) -> str:
    """Run one irecon command in-process; stop with its output when it fails."""
    words = [str(a) for a in args]
    result = CliRunner().invoke(main, words, terminal_width=200)
    if result.exit_code != 0:
        raise SystemExit(f"$ irecon {shlex.join(words)}\n{result.output}")
    return result.output


def zero_filled_ssim(data: Path, out: Path, acceleration: int, virtual: int | None) -> float:
    """Mean SSIM of zero-filled RSS on ``data``, from reconstruct's JSON report."""
    extra = [] if virtual is None else ["--virtual-coils", virtual]
    report = out / "report.json"
    irecon(
        "reconstruct", data, "--model", "zero-filled", "--acceleration", acceleration, "--out", out, "--json", report,
        "--overwrite", "--threads", 1, *extra,
    )  # fmt: skip
    return json.loads(report.read_text())["mean"]["metrics"]["ssim"]


def table(data: Path, work: Path, virtual: list[int | None], accelerations: tuple[int, ...]) -> list[str]:
    lines = ["| virtual coils | " + " | ".join(f"SSIM at {r}x" for r in accelerations) + " |"]
    lines.append("|---|" + "---|" * len(accelerations))
    for count in virtual:
        scores = [zero_filled_ssim(data, work / f"{count}-{r}", r, count) for r in accelerations]
        lines.append(
            f"| {'none (all coils)' if count is None else count} | " + " | ".join(f"{s:.4f}" for s in scores) + " |"
        )
    return lines


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coils", type=int, default=16)
    parser.add_argument("--virtual", type=int, nargs="+", default=[8, 4, 2, 1])
    parser.add_argument("--size", type=int, nargs=2, default=[320, 256], metavar=("H", "W"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="coil-compression-"))
    synth = work / "synth"
    recon = (args.size[0] // 2, args.size[1] // 2)
    irecon(
        "synth", synth, "--split", "val", "--challenge", "multicoil", "--coils", args.coils, "--volumes", 2,
        "--slices", 4, "--kspace-size", *args.size, "--recon-size", *recon, "--seed", 5, "--overwrite",
    )  # fmt: skip
    print(f"synthetic: 2 volumes x 4 slices, {args.coils} coils, k-space {args.size[0]}x{args.size[1]}")
    print("\n".join(table(synth, work, [None, *args.virtual], (1, 4))))
    if GRE.is_file():
        irecon("import", GRE, "--out", work / "gre", "--overwrite")
        print("\nreal Siemens GRE phantom (twixtools example_data/gre.dat), 2 coils, k-space 320x160")
        print("\n".join(table(work / "gre", work / "gre-recon", [None, 1], (1, 4))))
    else:
        print(f"\n{GRE} absent (make test-tools fetches it): the real-data rows are left out")


if __name__ == "__main__":
    main_()

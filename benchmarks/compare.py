"""Train i-RIM, RIM and U-Net presets on the same data and score them next to zero-filled.

Table 1 gives every model the same optimizer steps and batch size; table 2 (with --time-budget)
the same wall-clock budget per run, validation included. Each run's best.pt (last.pt when no epoch
was validated) is scored on every validation volume at each acceleration with file-seeded masks.
Writes OUT/compare.md, OUT/compare.json and OUT/compare.png; the runs go to OUT/<table>/<model>/:

    OMP_NUM_THREADS=1 python benchmarks/compare.py TRAIN VAL --out OUT --steps 240 --time-budget 60s
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from matplotlib.figure import Figure
from rich.console import Console

from irecon import __version__
from irecon.errors import IreconError
from irecon.figures import save_png
from irecon.files import write_bytes, write_json
from irecon.metrics import Scores
from irecon.models.presets import preset
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.run import reconstruct
from irecon.training.loop import train
from irecon.training.options import TrainOptions
from irecon.values import parse_duration

DEFAULT_MODELS = ("tiny-2d", "tiny-rim", "tiny-unet")
# fastMRI's pairs; other accelerations need --center-fractions.
CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
UNLIMITED_EPOCHS = 100_000
METRICS = ("nmse", "psnr", "ssim")
HISTORY_KEYS = ("epoch", "global_step", "train_loss", "val_nmse", "val_psnr", "val_ssim", "wall_time_s")


@dataclass
class Run:
    """One trained model of one table and its scores per acceleration."""

    model: str
    kind: str
    parameters: int
    steps: int
    epochs: int
    wall_time_s: float
    checkpoint: str
    scored_epoch: int | None
    history: list[dict[str, Any]]
    scores: dict[int, Scores] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "parameters": self.parameters,
            "steps": self.steps,
            "epochs": self.epochs,
            "wall_time_s": self.wall_time_s,
            "checkpoint": self.checkpoint,
            "scored_epoch": self.scored_epoch,
            "history": self.history,
            "scores": {str(a): s.as_dict() for a, s in self.scores.items()},
        }


@dataclass
class Table:
    """Runs trained under one rule: ``steps`` (same optimizer steps) or ``time`` (same budget)."""

    name: str
    title: str
    runs: list[Run] = field(default_factory=list)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are IreconErrors (one ``error:`` line, exit status 1)."""

    def error(self, message: str) -> NoReturn:
        raise IreconError(message)


def duration(text: str) -> float:
    """Seconds from ``90s``, ``5m`` or ``1h30m`` (argparse type)."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path, help="folder of training volumes")
    parser.add_argument("val", type=Path, help="folder of validation volumes (with targets)")
    parser.add_argument("--out", type=Path, required=True, help="folder for runs, tables and plot")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="presets to train")
    parser.add_argument("--steps", type=int, default=240, help="optimizer steps per model in table 1")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--time-budget", type=duration, help="wall-clock budget per model for table 2")
    parser.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    parser.add_argument(
        "--center-fractions", type=float, nargs="+", help="one per acceleration (default 0.08 for 4x, 0.04 for 8x)"
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier comparison")
    args = parser.parse_args(argv)
    args.center_fractions = center_fractions(args.accelerations, args.center_fractions)
    check_args(args)
    return args


def center_fractions(accelerations: list[int], given: list[float] | None) -> list[float]:
    """The centre fraction of each acceleration: the given ones, or fastMRI's 0.08 / 0.04."""
    if given is not None:
        if len(given) != len(accelerations):
            raise IreconError(f"--center-fractions needs one value per acceleration ({len(accelerations)})")
        return given
    unknown = [a for a in accelerations if a not in CENTER_FRACTIONS]
    if unknown:
        raise IreconError(f"no default centre fraction for {unknown}x; pass --center-fractions")
    return [CENTER_FRACTIONS[a] for a in accelerations]


def check_args(args: argparse.Namespace) -> None:
    """What argparse does not check: counts, duplicates and trainable presets."""
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            raise IreconError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if len(set(args.models)) != len(args.models) or len(set(args.accelerations)) != len(args.accelerations):
        raise IreconError("--models and --accelerations must not repeat a value")
    for name in args.models:
        if not preset(name).learned:
            raise IreconError("zero-filled is always scored; leave it out of --models")


def train_options(args: argparse.Namespace, table: str, model: str) -> TrainOptions:
    """The run of ``model`` for ``table``: it stops after ``--steps`` steps or at ``--time-budget``."""
    options = TrainOptions(
        args.train,
        args.val,
        model,
        args.out / table / model,
        epochs=UNLIMITED_EPOCHS,
        batch_size=args.batch_size,
        accelerations=tuple(args.accelerations),
        center_fractions=tuple(args.center_fractions),
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
    )
    if table == "time":
        return replace(options, time_budget_s=args.time_budget)
    return replace(options, max_steps=args.steps)


def score(args: argparse.Namespace, checkpoint: Path | None, out: Path) -> dict[int, Scores]:
    """Mean scores over the validation volumes per acceleration (zero-filled without a checkpoint)."""
    scores = {}
    for acceleration, fraction in zip(args.accelerations, args.center_fractions):
        report = reconstruct(
            ReconstructOptions(
                inputs=[args.val],
                out_dir=out / f"recon-{acceleration}x",
                checkpoint=checkpoint,
                model=None if checkpoint else "zero-filled",
                acceleration=acceleration,
                center_fraction=fraction,
                device=args.device,
                overwrite=args.overwrite,
            )
        )
        if report.failed:
            raise IreconError(report.failed[0].error or "reconstruction failed")
        mean = report.mean_metrics()
        if mean is None:
            raise IreconError("no validation volume has a target to score against", args.val)
        scores[acceleration] = mean
    return scores


def run_model(args: argparse.Namespace, options: TrainOptions, console: Console) -> Run:
    """Train one model, then score its best.pt (last.pt when no epoch was validated)."""
    result = train(options, console=console)
    checkpoint = options.out / ("best.pt" if (options.out / "best.pt").exists() else "last.pt")
    history = [{k: r[k] for k in HISTORY_KEYS} for r in result.history]
    run = Run(
        model=options.model,
        kind=result.config.kind,
        parameters=sum(p.numel() for p in result.model.parameters()),
        steps=result.global_step,
        epochs=result.epochs_done,
        wall_time_s=result.wall_time_s,
        checkpoint=checkpoint.name,
        scored_epoch=result.best_epoch if checkpoint.name == "best.pt" else None,
        history=history,
    )
    run.scores = score(args, checkpoint, options.out)
    return run


def markdown(table: Table, zero_filled: dict[int, Scores], accelerations: Sequence[int]) -> str:
    """The table as Markdown: one row per model and a zero-filled row."""
    header = ["model", "parameters", "steps", "wall time", "scored"]
    header += [f"{a}x {m.upper() if m != 'psnr' else 'PSNR (dB)'}" for a in accelerations for m in METRICS]
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    rows = [
        [
            run.model,
            f"{run.parameters:,}",
            str(run.steps),
            f"{run.wall_time_s:.0f} s",
            f"{run.checkpoint} (epoch {run.scored_epoch})" if run.scored_epoch else run.checkpoint,
            *cells(run.scores, accelerations),
        ]
        for run in table.runs
    ]
    rows.append(["zero-filled", "0", "-", "-", "-", *cells(zero_filled, accelerations)])
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cells(scores: dict[int, Scores], accelerations: Sequence[int]) -> list[str]:
    """NMSE, PSNR and SSIM per acceleration, formatted for the table."""
    return [
        text
        for a in accelerations
        for text in (f"{scores[a].nmse:.4f}", f"{scores[a].psnr:.2f}", f"{scores[a].ssim:.4f}")
    ]


def ssim_bars(tables: Sequence[Table], zero_filled: dict[int, Scores], accelerations: Sequence[int]) -> Figure:
    """Validation SSIM per model (bars) per acceleration (groups), one panel per table."""
    figure = Figure(figsize=(5.5 * len(tables), 4), layout="constrained")
    axes = figure.subplots(1, len(tables), squeeze=False)[0]
    for ax, table in zip(axes, tables):
        series = [(run.model, run.scores) for run in table.runs] + [("zero-filled", zero_filled)]
        width = 0.8 / len(series)
        for index, (name, scores) in enumerate(series):
            xs = [a + (index - (len(series) - 1) / 2) * width for a in range(len(accelerations))]
            values = [scores[a].ssim for a in accelerations]
            bars = ax.bar(xs, values, width, label=name, color="0.6" if name == "zero-filled" else None)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
        ax.set_xticks(range(len(accelerations)), [f"{a}x" for a in accelerations])
        ax.set(ylabel="validation SSIM", ylim=(0, 1.1), title=table.title)
        ax.legend(fontsize=8, loc="lower right")
    return figure


def describe(args: argparse.Namespace) -> list[str]:
    """The setup lines above the tables."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return [
        f"train: {args.train}, validation: {args.val}; batch {args.batch_size}, "
        f"seed {args.seed}, device {device}, {torch.get_num_threads()} thread(s), irecon {__version__}",
        "scores: mean over validation volumes of fastmri.evaluate NMSE / PSNR / SSIM, file-seeded masks "
        "(centre fractions "
        + ", ".join(f"{a}x {f}" for a, f in zip(args.accelerations, args.center_fractions))
        + "); best.pt is chosen on the validation SSIM at the first acceleration",
    ]


def compare(args: argparse.Namespace, console: Console) -> tuple[list[str], list[Table], dict[int, Scores]]:
    """The setup lines, every run of every table, and zero-filled; earlier runs are kept only with --overwrite."""
    plans = [("steps", f"same optimizer steps ({args.steps}, batch {args.batch_size})")]
    if args.time_budget is not None:
        plans.append(("time", f"same wall-clock budget ({args.time_budget:.0f} s per model, batch {args.batch_size})"))
    options = {(table, model): train_options(args, table, model) for table, _ in plans for model in args.models}
    earlier = [o.out for o in options.values() if (o.out / "last.pt").exists() or (o.out / "best.pt").exists()]
    if earlier and not args.overwrite:
        raise IreconError("holds runs of an earlier comparison; pass --overwrite to replace them", args.out)
    tables = []
    for name, title in plans:
        table = Table(name, title)
        for model in args.models:
            console.print(f"{name}: training {model}", markup=False, highlight=False)
            table.runs.append(run_model(args, options[(name, model)], console))
        tables.append(table)
    zero_filled = score(args, None, args.out / "zero-filled")
    return describe(args), tables, zero_filled


def main(argv: Sequence[str] | None = None) -> int:
    console = Console(stderr=True)
    try:
        args = parse_args(argv)
        setup, tables, zero_filled = compare(args, console)
    except IreconError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    text = "\n\n".join(markdown(t, zero_filled, args.accelerations) for t in tables)
    write_bytes(args.out / "compare.md", ("\n\n".join(setup) + "\n\n" + text + "\n").encode())
    write_json(
        args.out / "compare.json",
        {
            "irecon_version": __version__,
            "setup": setup,
            "models": args.models,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "time_budget_s": args.time_budget,
            "seed": args.seed,
            "accelerations": args.accelerations,
            "center_fractions": args.center_fractions,
            "threads": torch.get_num_threads(),
            "zero_filled": {str(a): s.as_dict() for a, s in zero_filled.items()},
            "tables": [{"name": t.name, "title": t.title, "runs": [r.to_dict() for r in t.runs]} for t in tables],
        },
    )
    save_png(ssim_bars(tables, zero_filled, args.accelerations), args.out / "compare.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

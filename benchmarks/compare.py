"""Train i-RIM, RIM and U-Net presets on the same data, over seeds, and score them next to zero-filled.

Table 1 gives every model the same optimizer steps and batch size; table 2 (with --time-budget)
the same wall-clock budget per run, validation included; table 3 (with --memory-budget) the same
planned training memory and wall time (``--tables`` picks among them). Every model trains once per seed; its
untrained weights, its last model and (with --select) its best epoch, chosen on the SELECT volumes,
are scored on the VAL volumes with ``irecon evaluate`` at each acceleration with file-seeded masks.
Tables give the mean ± sd over seeds. Writes OUT/compare.md, OUT/compare.json and OUT/compare.png;
the runs go to OUT/<table>/<model>/seed<N>/:

    OMP_NUM_THREADS=1 python benchmarks/compare.py TRAIN VAL --select SELECT --out OUT --steps 60 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from matplotlib.figure import Figure
from rich.console import Console

from irecon import __version__
from irecon.errors import IreconError
from irecon.evaluate.options import EvaluateOptions
from irecon.evaluate.run import evaluate, mean_and_sd
from irecon.figures import save_png
from irecon.files import write_bytes, write_json
from irecon.metrics import Scores
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.run import reconstruct
from irecon.training.loop import train
from irecon.training.options import TrainOptions
from irecon.training.plan import build_seeded
from irecon.values import parse_bytes, parse_duration

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, run as a script or imported
from compare_memory import MAX_STEPS, Sized, size_models  # noqa: E402

DEFAULT_MODELS = ("tiny-2d", "tiny-rim", "tiny-unet")
# fastMRI's pairs; other accelerations need --center-fractions.
CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
UNLIMITED_EPOCHS = 100_000
METRICS = ("nmse", "psnr", "ssim")
HISTORY_KEYS = ("epoch", "global_step", "train_loss", "val_nmse", "val_psnr", "val_ssim", "wall_time_s")
# What each run scores: its seed's untrained weights, its last model, its best epoch on --select.
CHECKPOINTS = ("untrained", "last", "best")
TABLES = ("steps", "time", "memory")


@dataclass
class Run:
    """One model trained with one seed under one table's rule, and its scores per checkpoint and acceleration."""

    model: str
    seed: int
    kind: str
    parameters: int
    steps: int
    epochs: int
    wall_time_s: float
    best_epoch: int | None
    history: list[dict[str, Any]]
    scores: dict[str, dict[int, Scores]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "seed": self.seed,
            "kind": self.kind,
            "parameters": self.parameters,
            "steps": self.steps,
            "epochs": self.epochs,
            "wall_time_s": self.wall_time_s,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "scores": {c: {str(a): s.as_dict() for a, s in by.items()} for c, by in self.scores.items()},
        }


@dataclass
class Table:
    """Runs trained under one rule: ``steps`` (same optimizer steps) or ``time`` (same budget)."""

    name: str
    title: str
    runs: list[Run] = field(default_factory=list)

    def of(self, model: str) -> list[Run]:
        """The runs of one model, one per seed."""
        return [run for run in self.runs if run.model == model]


@dataclass(frozen=True)
class Summary:
    """Mean and sd over seeds of one model's scores at one checkpoint and acceleration."""

    mean: Scores
    sd: Scores


def summarize(runs: Sequence[Run], checkpoint: str, acceleration: int) -> Summary | None:
    """Mean ± sample sd over the runs' seeds (None when no run has that checkpoint)."""
    scores = [r.scores[checkpoint][acceleration] for r in runs if checkpoint in r.scores]
    return Summary(*mean_and_sd(scores)) if scores else None


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
    parser.add_argument("val", type=Path, help="folder of the scored volumes (with targets)")
    parser.add_argument(
        "--select", type=Path, required=True, help="validation volumes for the best epoch (not the scored ones)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for runs, tables and plot")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="presets to train")
    parser.add_argument("--steps", type=int, default=240, help="optimizer steps per model in table 1")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--loss", default=TrainOptions.loss, help="training loss of every model (irecon train --loss)")
    parser.add_argument("--time-budget", type=duration, help="wall-clock budget per model for table 2")
    parser.add_argument(
        "--memory-budget",
        type=parse_bytes,
        help="table 3: each model grown in T to this planned training peak (batch 1), trained for --time-budget",
    )
    parser.add_argument(
        "--max-depth",
        type=int,
        default=MAX_STEPS,
        help="largest T the memory table grows a model to (the memory-free i-RIM would otherwise reach it at once)",
    )
    parser.add_argument(
        "--tables",
        nargs="+",
        choices=TABLES,
        help="tables to run (default: steps, and time / memory when their budgets are given)",
    )
    parser.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    parser.add_argument(
        "--center-fractions", type=float, nargs="+", help="one per acceleration (default 0.08 for 4x, 0.04 for 8x)"
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per model per seed")
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
    for name in ("steps", "batch_size", "max_depth"):
        if getattr(args, name) < 1:
            raise IreconError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("models", "accelerations", "seeds"):
        if len(set(getattr(args, name))) != len(getattr(args, name)):
            raise IreconError(f"--{name} must not repeat a value")
    if args.memory_budget is not None and args.time_budget is None:
        raise IreconError("--memory-budget trains every model for the same wall time: give --time-budget too")
    if args.select.resolve() == args.val.resolve():
        raise IreconError("--select must not be the scored folder: the best epoch would be picked on the scores")
    for name in args.models:
        if not preset(name).learned:
            raise IreconError("zero-filled is always scored; leave it out of --models")
    needs = {"time": ("--time-budget", args.time_budget), "memory": ("--memory-budget", args.memory_budget)}
    if args.tables is None:
        args.tables = [t for t in TABLES if t not in needs or needs[t][1] is not None]
    for table in args.tables:
        if table in needs and needs[table][1] is None:
            raise IreconError(f"--tables {table} needs {needs[table][0]}")


def train_options(
    args: argparse.Namespace, table: str, model: str, seed: int, sized: dict[str, Sized] | None = None
) -> TrainOptions:
    """The run of ``model`` with ``seed`` for ``table``: it stops after ``--steps`` steps or at ``--time-budget``.

    The ``memory`` table's runs take the time steps ``sized`` found for the budget.
    """
    options = TrainOptions(
        args.train,
        args.select,
        model,
        args.out / table / model / f"seed{seed}",
        epochs=UNLIMITED_EPOCHS,
        batch_size=args.batch_size,
        loss=args.loss,
        accelerations=tuple(args.accelerations),
        center_fractions=tuple(args.center_fractions),
        seed=seed,
        device=args.device,
        overwrite=args.overwrite,
    )
    if table == "memory" and sized is not None:
        return replace(
            options, time_budget_s=args.time_budget, steps=sized[model].steps, unet_chans=sized[model].unet_chans
        )
    if table == "time":
        return replace(options, time_budget_s=args.time_budget)
    return replace(options, max_steps=args.steps)


def score(args: argparse.Namespace, checkpoint: Path | None, out: Path) -> dict[int, Scores]:
    """Mean scores over the scored volumes per acceleration, by ``irecon evaluate`` (zero-filled without a checkpoint)."""
    scores = {}
    for acceleration, fraction in zip(args.accelerations, args.center_fractions):
        recon = out / f"recon-{acceleration}x"
        report = reconstruct(
            ReconstructOptions(
                inputs=[args.val],
                out_dir=recon,
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
        evaluation = evaluate(
            EvaluateOptions(recon, args.val, json=out / f"scores-{acceleration}x.json", overwrite=args.overwrite)
        )
        scores[acceleration] = evaluation.groups[-1].mean
    return scores


def run_model(args: argparse.Namespace, options: TrainOptions, console: Console) -> Run:
    """Train one model with one seed, then score its untrained weights, last.pt and best.pt."""
    result = train(options, console=console)
    untrained = options.out / "untrained.pt"
    save_checkpoint(
        untrained,
        {"model_config": result.config.to_dict(), "model": build_seeded(result.config, options).state_dict()},
    )
    history = [{k: r.get(k) for k in HISTORY_KEYS} for r in result.history]
    run = Run(
        model=options.model,
        seed=options.seed,
        kind=result.config.kind,
        parameters=sum(p.numel() for p in result.model.parameters()),
        steps=result.global_step,
        epochs=result.epochs_done,
        wall_time_s=result.wall_time_s,
        best_epoch=result.best_epoch if (options.out / "best.pt").exists() else None,
        history=history,
    )
    for name in CHECKPOINTS:
        path = untrained if name == "untrained" else options.out / f"{name}.pt"
        if path.exists():
            run.scores[name] = score(args, path, options.out / name)
    return run


def markdown(table: Table, zero_filled: dict[int, Scores], args: argparse.Namespace) -> str:
    """The table as Markdown: one row per model (mean ± sd over seeds) and a zero-filled row."""
    checkpoints = [c for c in ("last", "best") if any(c in r.scores for r in table.runs)]
    header = ["model", "parameters", "seeds", "steps", "wall time"]
    for a in args.accelerations:
        header.append(f"{a}x untrained SSIM")
        header += [f"{a}x {c} {m}" for c in checkpoints for m in ("NMSE", "PSNR (dB)", "SSIM")]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for model in args.models:
        runs = table.of(model)
        row = [
            model,
            f"{runs[0].parameters:,}",
            str(len(runs)),
            "/".join(sorted({str(r.steps) for r in runs}, key=int)),
            f"{np.mean([r.wall_time_s for r in runs]):.0f} s",
        ]
        for a in args.accelerations:
            untrained = summarize(runs, "untrained", a)
            row.append("-" if untrained is None else f"{untrained.mean.ssim:.3f} ± {untrained.sd.ssim:.3f}")
            for checkpoint in checkpoints:
                row += cells(summarize(runs, checkpoint, a))
        lines.append("| " + " | ".join(row) + " |")
    zero = ["zero-filled", "0", "-", "-", "-"]
    for a in args.accelerations:
        zero.append(f"{zero_filled[a].ssim:.3f}")
        zero += [text for _ in checkpoints for text in cells(Summary(zero_filled[a], Scores(0.0, 0.0, 0.0)))]
    lines.append("| " + " | ".join(zero) + " |")
    return "\n".join(lines)


def cells(summary: Summary | None) -> list[str]:
    """NMSE, PSNR and SSIM as mean ± sd, formatted for the table."""
    if summary is None:
        return ["-", "-", "-"]
    m, d = summary.mean, summary.sd
    return [f"{m.nmse:.4f} ± {d.nmse:.4f}", f"{m.psnr:.2f} ± {d.psnr:.2f}", f"{m.ssim:.3f} ± {d.ssim:.3f}"]


def ssim_bars(tables: Sequence[Table], zero_filled: dict[int, Scores], args: argparse.Namespace) -> Figure:
    """Scored SSIM of the last model per model (bars, mean ± sd over seeds) per acceleration, one panel per table."""
    figure = Figure(figsize=(5.5 * len(tables), 4), layout="constrained")
    axes = figure.subplots(1, len(tables), squeeze=False)[0]
    accelerations = args.accelerations
    for ax, table in zip(axes, tables):
        series = [(m, [summarize(table.of(m), "last", a) for a in accelerations]) for m in args.models]
        series.append(("zero-filled", [Summary(zero_filled[a], Scores(0.0, 0.0, 0.0)) for a in accelerations]))
        width = 0.8 / len(series)
        for index, (name, summaries) in enumerate(series):
            xs = [a + (index - (len(series) - 1) / 2) * width for a in range(len(accelerations))]
            values = [s.mean.ssim if s else 0.0 for s in summaries]
            errors = [s.sd.ssim if s else 0.0 for s in summaries]
            bars = ax.bar(
                xs, values, width, yerr=errors, capsize=2, label=name, color="0.6" if name == "zero-filled" else None
            )
            ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
        ax.set_xticks(range(len(accelerations)), [f"{a}x" for a in accelerations])
        title = textwrap.fill(f"{table.title}, seeds {args.seeds}", 60)
        ax.set(ylabel="scored SSIM, last model", ylim=(0, 1.1), title=title)
        ax.legend(fontsize=8, loc="lower right")
    return figure


def describe(args: argparse.Namespace) -> list[str]:
    """The setup lines above the tables."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    selection = f"best epoch chosen on the validation SSIM of {args.select} at the first acceleration"
    return [
        f"train: {args.train}, scored: {args.val}; loss {args.loss}, batch {args.batch_size}, seeds {' '.join(map(str, args.seeds))}, "
        f"device {device}, {torch.get_num_threads()} thread(s), irecon {__version__}",
        "scores: irecon evaluate (fastmri.evaluate NMSE / PSNR / SSIM per volume, mean over the scored volumes), "
        "file-seeded masks (centre fractions "
        + ", ".join(f"{a}x {f}" for a, f in zip(args.accelerations, args.center_fractions))
        + f"); mean ± sample sd over seeds; {selection}",
    ]


def compare(args: argparse.Namespace, console: Console) -> tuple[list[str], list[Table], dict[int, Scores]]:
    """The setup lines, every run of every table, and zero-filled; earlier runs are kept only with --overwrite."""
    plans = [("steps", f"same optimizer steps ({args.steps}, batch {args.batch_size})")]
    if args.time_budget is not None:
        plans.append(("time", f"same wall-clock budget ({args.time_budget:.0f} s per model, batch {args.batch_size})"))
    sized: dict[str, Sized] = {}
    if args.memory_budget is not None:
        sized = {s.model: s for s in size_models(args.models, args.memory_budget, args.train, args.max_depth)}
        for s in sized.values():
            console.print(
                f"memory: {s.model} with "
                + (f"T={s.steps}" if s.unet_chans is None else f"{s.unet_chans} channels")
                + f", {s.parameters:,} parameters, planned training peak "
                f"{s.planned_peak_bytes / 2**20:.0f} MiB (budget {args.memory_budget / 2**20:.0f} MiB)",
                markup=False,
                highlight=False,
            )
        plans.append(
            (
                "memory",
                f"same training memory ({args.memory_budget / 2**30:.2f} GiB planned, batch 1) and wall time "
                f"({args.time_budget:.0f} s per model, batch {args.batch_size})",
            )
        )
    args.sized = sized
    plans = [(name, title) for name, title in plans if name in args.tables]
    options = {
        (table, model, seed): train_options(args, table, model, seed, sized)
        for table, _ in plans
        for model in args.models
        for seed in args.seeds
    }
    earlier = [o.out for o in options.values() if (o.out / "last.pt").exists() or (o.out / "best.pt").exists()]
    if earlier and not args.overwrite:
        raise IreconError("holds runs of an earlier comparison; pass --overwrite to replace them", args.out)
    tables = []
    for name, title in plans:
        table = Table(name, title)
        for model in args.models:
            for seed in args.seeds:
                console.print(f"{name}: training {model}, seed {seed}", markup=False, highlight=False)
                table.runs.append(run_model(args, options[(name, model, seed)], console))
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
    text = "\n\n".join(markdown(t, zero_filled, args) for t in tables)
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
            "seeds": args.seeds,
            "select": str(args.select),
            "accelerations": args.accelerations,
            "center_fractions": args.center_fractions,
            "threads": torch.get_num_threads(),
            "zero_filled": {str(a): s.as_dict() for a, s in zero_filled.items()},
            "memory_budget_bytes": args.memory_budget,
            "sized": [s.to_dict() for s in args.sized.values()],
            "tables": [{"name": t.name, "title": t.title, "runs": [r.to_dict() for r in t.runs]} for t in tables],
        },
    )
    save_png(ssim_bars(tables, zero_filled, args), args.out / "compare.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``irecon bench-memory``: options from :class:`BenchOptions`; the sweep from :func:`irecon.bench.sweep.run_bench`,
the budget search from :func:`irecon.bench.budget.run_budget`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from irecon.bench.options import DEFAULT_STEPS, METERS, BenchOptions
from irecon.cli.options import ListCommand, default_of, stdout_console, threads_option
from irecon.errors import IreconError
from irecon.text import plural, say

if TYPE_CHECKING:
    from irecon.bench.budget import Depth
    from irecon.bench.records import Measurement
    from irecon.memory.budget import Fit

MODES = {"train": ("train",), "inference": ("inference",), "both": ("train", "inference")}


def _default(name: str) -> Any:
    return default_of(BenchOptions, name)


def _mode_name(modes: tuple[str, ...]) -> str:
    return next(name for name, value in MODES.items() if value == tuple(modes))


@click.command("bench-memory", cls=ListCommand)
@click.option("--model", default=_default("model"), show_default=True, help="preset to measure")
@click.option(
    "--steps",
    multiple=True,
    type=int,
    help=f"time steps T to sweep: --steps 1 2 4 (or the option repeated)  "
    f"[default: {' '.join(map(str, DEFAULT_STEPS))}; a U-Net has none]",
)
@click.option("--layers", multiple=True, type=int, help="invertible layers per step to sweep (i-RIM)")
@click.option(
    "--size",
    type=(int, int),
    default=_default("size"),
    show_default=True,
    metavar="H W",
    help="image size of the input",
)
@click.option("--slices", type=int, default=_default("slices"), show_default=True, help="slab depth for 3-D models")
@click.option("--coils", type=int, help="receiver coils of the input  [default: the preset's]")
@click.option("--batches", type=int, help="mini-batches; the minimum peak is reported  [default: 10; 1 on meta]")
@click.option(
    "--device",
    default=None,
    metavar="DEVICE",
    help="cpu, cuda, cuda:N, or meta: the planner, shapes only  [default: cuda if available, else cpu]",
)
@click.option(
    "--meter",
    type=click.Choice(METERS),
    help="CPU figure reported as the peak; both are recorded  [default: allocator]",
)
@click.option(
    "--mode", type=click.Choice(list(MODES)), help=f"[default: {_mode_name(_default('modes'))}; train with --budget]"
)
@click.option("--compare-plain", is_flag=True, help="also measure plain autograd on the same model")
@click.option("--with-rim", is_flag=True, help="also measure the RIM baseline at the same step counts")
@click.option(
    "--timing-batches",
    type=int,
    default=_default("timing_batches"),
    show_default=True,
    help="untracked batches timed per setting",
)
@click.option(
    "--budget",
    metavar="SIZE",
    help="plan on meta: the deepest T whose training/inference peak fits, e.g. 24GiB or 40GB",
)
@click.option(
    "--max-steps",
    type=int,
    default=_default("max_steps"),
    show_default=True,
    help="deepest T the --budget search tries",
)
@click.option(
    "--world-size",
    type=int,
    default=_default("world_size"),
    show_default=True,
    help="DDP ranks: report each rank's Adam state and peak (training)",
)
@click.option("--shard-optimizer", is_flag=True, help="with --world-size: Adam sharded as train --shard-optimizer does")
@threads_option
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write one record per measurement (per search with --budget)",
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="PNG of peak memory against depth"
)
@click.option("--log-scale", is_flag=True, help="draw --plot with a logarithmic memory axis")
def bench_memory(steps: tuple[int, ...], layers: tuple[int, ...], mode: str | None, **params: Any) -> None:
    """Peak memory of training and inference, measured as the i-RIM paper's appendix C prescribes.

    With --device meta the same protocol runs on shapes only (the planner); --budget then finds
    the deepest T that fits, memory-free and with plain autograd.
    """
    from irecon.bench.budget import run_budget
    from irecon.bench.records import ratios, two_figures
    from irecon.bench.sweep import run_bench
    from irecon.values import parse_bytes

    if params["budget"] is not None:
        params["budget"] = parse_bytes(params["budget"])
    modes = MODES[mode] if mode else ("train",) if params["budget"] is not None else _default("modes")
    options = BenchOptions(steps=steps or None, layers=layers or None, modes=tuple(modes), **params)
    console = stdout_console()
    if options.budget is not None:
        if options.plot_path is not None:
            raise IreconError("--plot draws a depth sweep; leave it out with --budget")
        started = time.perf_counter()
        fits = run_budget(
            options, report=lambda f: say(console, fit_line(f)), tried=lambda d: say(console, depth_line(d))
        )
        say(console, f"method: {fits[0].method}; planner answered in {time.perf_counter() - started:.1f} s")
        if options.json_path is not None:
            say(console, f"wrote {options.json_path}")
        return
    records = run_bench(
        options,
        report=lambda m: say(console, progress_line(m)),
        starting=lambda name, mode, free, steps: say(
            console, f"measuring {name} {mode} {'memory-free' if free else 'plain'}{_depth(steps)} ..."
        ),
    )
    both = any(r.allocator_peak_bytes is not None for r in records)
    table = _table(both)
    for record in records:
        table.add_row(*_row(record, both))
    console.print(table)
    first = records[0]
    batches = f"{first.batches} mini-batch{'es' if first.batches != 1 else ''}"
    say(console, f"peak: {first.method}; min over {batches} (batch size 1)")
    if both:
        other = ("storages", first.storage_method) if first.method != first.storage_method else None
        other = other or ("allocator", first.allocator_method)
        say(console, f"{other[0]} column: {other[1] or '-'}")
    if any(r.step_seconds_all for r in records):
        timed = max(len(r.step_seconds_all) for r in records)
        say(console, f"s/batch: median (min-max) of {timed} timed mini-batch{'es' if timed != 1 else ''}, unmetered")
    for description, value in ratios(records):
        shown = two_figures(value) if description.startswith("step time") else f"{value:.3f}"
        say(console, f"{description}: {shown}")
    for line in rank_lines(records):
        say(console, line)
    for path in (options.json_path, options.plot_path):
        if path is not None:
            say(console, f"wrote {path}")


def rank_lines(records: list[Measurement]) -> list[str]:
    """Per-rank weights and peak of each training record, when more than one rank was asked for."""
    from irecon.bench.records import format_bytes

    lines = []
    for m in records:
        if m.world_size < 2 or not m.rank_optimizer_bytes:
            continue
        how = "Adam sharded" if m.shard_optimizer else "Adam on every rank"
        weights = max(m.rank_weight_bytes)
        peak = f", peak {format_bytes(max(m.rank_peak_bytes))} MiB" if m.rank_peak_bytes else ""
        lines.append(
            f"per rank, {plural(m.world_size, 'rank')} ({how}): {m.model} {m.mode} "
            f"{'memory-free' if m.memory_free else 'plain'}{_depth(m.steps)}: weights "
            f"{format_bytes(weights)} MiB{peak} (largest rank; one process: "
            f"{format_bytes(m.param_bytes + m.grad_bytes + m.optimizer_bytes)} MiB)"
        )
    return lines


def _table(both: bool) -> Table:
    table = Table(title="peak memory in MiB (weights = parameters + gradients + optimiser state)")
    columns = ["model", "mode", "engine", "T", "layers", "peak", "activ.", "weights", "s/batch"]
    if both:
        columns[6:6] = ["storages", "allocator"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "mode", "engine") else "right")
    return table


def _row(m: Measurement, both: bool = False) -> list[str]:
    from irecon.bench.records import format_bytes, format_seconds

    engine = "free" if m.memory_free else "plain"
    mode = "infer" if m.mode == "inference" else m.mode
    head = [m.model, mode, engine, _count(m.steps), _count(m.layers_total)]
    if m.skipped:
        return [*head, "skipped", *(["", ""] if both else []), m.skipped, "", ""]
    cpu = [format_bytes(m.storage_peak_bytes), format_bytes(m.allocator_peak_bytes)] if both else []
    seconds = format_seconds(m.step_seconds_all)
    return [
        *head,
        format_bytes(m.peak_bytes),
        *cpu,
        format_bytes(m.activation_bytes),
        format_bytes(m.param_bytes + m.grad_bytes + m.optimizer_bytes),
        seconds,
    ]


def progress_line(m: Measurement) -> str:
    """The line printed as each measurement finishes (the meters are named once, after the table)."""
    from irecon.bench.records import format_bytes

    engine = "memory-free" if m.memory_free else "plain"
    layers = "" if m.layers_total is None else f" ({m.layers_total} layers)"
    head = f"measured {m.model} {m.mode} {engine}{_depth(m.steps)}{layers}"
    if m.skipped:
        return f"{head}: skipped ({m.skipped})"
    line = f"{head}: peak {format_bytes(m.peak_bytes)} MiB"
    if m.storage_peak_bytes is not None and m.allocator_peak_bytes is not None:
        line += f" (storages {format_bytes(m.storage_peak_bytes)}, allocator {format_bytes(m.allocator_peak_bytes)})"
    return line


def depth_line(d: Depth) -> str:
    """One depth the --budget search measured, printed as it finishes."""
    from irecon.text import human_bytes

    engine = "memory-free" if d.memory_free else "plain"
    verdict = "fits" if d.fits else "over budget"
    return (
        f"  tried {d.model} {d.mode} {engine} T={d.steps}: {human_bytes(d.peak_bytes)}, {verdict} ({d.seconds:.1f} s)"
    )


def _depth(steps: int | None) -> str:
    return "" if steps is None else f" T={steps}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def fit_line(f: Fit) -> str:
    """One budget answer: the deepest T, its peak, and the peak one step deeper."""
    from irecon.text import human_bytes

    engine = "memory-free" if f.memory_free else "plain"
    head = f"planned {f.model} {f.mode} {engine}, budget {human_bytes(f.budget_bytes)} ({f.budget_bytes:,} B)"
    if f.steps == 0:
        return f"{head}: nothing fits, T=1 needs {human_bytes(f.peaks[1])} ({f.seconds:.1f} s)"
    answer = f"{head}: deepest T={f.steps}, peak {human_bytes(f.peak_bytes or 0)}"
    if f.limit_reached:
        answer += f" (the search stops at --max-steps {f.max_steps})"
    else:
        answer += f", T={f.steps + 1} needs {human_bytes(f.next_peak_bytes or 0)}"
    return f"{answer} ({len(f.peaks)} depths, {f.seconds:.1f} s)"


COMMANDS = (bench_memory,)

"""``irecon bench-memory``: options from :class:`BenchOptions`, the sweep from :func:`irecon.bench.run_bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from irecon.bench import BenchOptions, Measurement, format_bytes, ratios, run_bench
from irecon.cli.options import ListCommand, default_of, device_option, say, stdout_console

MODES = {"train": ("train",), "inference": ("inference",), "both": ("train", "inference")}


def _default(name: str) -> Any:
    return default_of(BenchOptions, name)


def _mode_name(modes: tuple[str, ...]) -> str:
    return next(name for name, value in MODES.items() if value == tuple(modes))


@click.command("bench-memory", cls=ListCommand)
@click.option("--model", default=_default("model"), show_default=True, help="preset to measure")
@click.option("--steps", multiple=True, type=int, default=_default("steps"), show_default=True,
              help="time steps T to sweep: --steps 1 2 4 (or the option repeated)")
@click.option("--layers", multiple=True, type=int, default=_default("layers"), help="invertible layers per step to sweep (i-RIM)")
@click.option("--size", type=(int, int), default=_default("size"), show_default=True, metavar="H W")
@click.option("--slices", type=int, default=_default("slices"), show_default=True, help="slab depth for 3-D models")
@click.option("--batches", type=int, default=_default("batches"), show_default=True,
              help="mini-batches; the minimum peak is reported")
@device_option
@click.option("--mode", type=click.Choice(list(MODES)), default=_mode_name(_default("modes")), show_default=True)
@click.option("--compare-plain", is_flag=True, help="also measure plain autograd on the same model")
@click.option("--with-rim", is_flag=True, help="also measure the RIM baseline at the same step counts")
@click.option("--timing-batches", type=int, default=_default("timing_batches"), show_default=True,
              help="untracked batches timed per setting")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write one record per measurement")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG of peak memory against depth")
def bench_memory(steps: tuple[int, ...], layers: tuple[int, ...], mode: str, **params: Any) -> None:
    """Peak memory of training and inference, measured as the i-RIM paper's appendix C prescribes."""
    options = BenchOptions(steps=steps, layers=layers or None, modes=MODES[mode], **params)
    console = stdout_console()
    records = run_bench(options, report=lambda m: say(console, progress_line(m)))
    table = _table()
    for record in records:
        table.add_row(*_row(record))
    console.print(table)
    say(console, f"method: {records[0].method}; peak = min over {options.batches} mini-batches (batch size 1)")
    for description, value in ratios(records):
        say(console, f"{description}: {value:.3f}")
    for path in (options.json_path, options.plot_path):
        if path is not None:
            say(console, f"wrote {path}")


def _table() -> Table:
    table = Table(title="peak memory in MiB (weights = parameters + gradients + optimiser state)")
    for column in ("model", "mode", "engine", "T", "layers", "peak", "activ.", "weights", "s/batch"):
        table.add_column(column, justify="left" if column in ("model", "mode", "engine") else "right")
    return table


def _row(m: Measurement) -> list[str]:
    engine = "free" if m.memory_free else "plain"
    mode = "infer" if m.mode == "inference" else m.mode
    if m.skipped:
        return [m.model, mode, engine, str(m.steps), str(m.layers_total), "skipped", m.skipped, "", ""]
    return [
        m.model, mode, engine, str(m.steps), str(m.layers_total), format_bytes(m.peak_bytes),
        format_bytes(m.activation_bytes), format_bytes(m.param_bytes + m.grad_bytes + m.optimizer_bytes),
        f"{m.step_seconds:.3f}",
    ]


def progress_line(m: Measurement) -> str:
    """The line printed as each measurement finishes."""
    row = _row(m)
    result = f"skipped ({m.skipped})" if m.skipped else f"peak {row[5]} MiB"
    engine = "memory-free" if m.memory_free else "plain"
    return f"measured {row[0]} {m.mode} {engine} T={row[3]} ({row[4]} layers): {result}"


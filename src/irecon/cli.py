"""The irecon command line: parses options and calls one library function per command."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from irecon import __version__
from irecon.errors import IreconError


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an IreconError into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IreconError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return wrapper


def _console() -> Console:
    """A rich console; wide enough for the tables when the output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=160)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="irecon")
def main() -> None:
    """Reconstruct undersampled MRI with memory-free invertible RIMs (i-RIM)."""



@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--challenge", type=click.Choice(["singlecoil", "multicoil"]), default="singlecoil", show_default=True)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="train/val: full k-space + target; test: undersampled k-space + mask, no target")
@click.option("--volumes", type=int, default=4, show_default=True)
@click.option("--slices", type=int, default=8, show_default=True)
@click.option("--coils", type=int, default=4, show_default=True, help="multi-coil only")
@click.option("--kspace-size", type=(int, int), default=(640, 368), show_default=True, metavar="H W")
@click.option("--recon-size", type=(int, int), default=(320, 320), show_default=True, metavar="H W")
@click.option("--acceleration", type=int, default=4, show_default=True, help="test split only")
@click.option("--center-fraction", type=float, default=0.08, show_default=True, help="test split only")
@click.option("--mask-type", default="random", show_default=True, help="test split only")
@click.option("--noise", type=float, default=0.02, show_default=True, help="k-space noise, relative to its RMS")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace existing files")
@user_errors
def synth(out_dir: str, **options: Any) -> None:
    """Write realistic synthetic fastMRI-format volumes into OUT_DIR."""
    from irecon.data.synth import synthesize

    paths = synthesize(out_dir, **options)
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo(f"{len(paths)} {options['challenge']} {options['split']} volume(s) in {out_dir}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--no-values", is_flag=True, help="skip the NaN/Inf scan (which reads every file whole)")
@user_errors
def check(paths: tuple[str, ...], no_values: bool) -> None:
    """Validate fastMRI files and folders; exit 0 only when every volume is valid."""
    from irecon.check import check_paths, summary_table

    result = check_paths(paths, check_values=not no_values)
    for note in result.notes:
        click.echo(f"note: {note}")
    for problem in result.problems:
        click.echo(f"error: {problem}", err=True)
    if result.files:
        _console().print(summary_table(result))
    click.echo(f"{len(result.files)} valid volume(s), {len(result.problems)} problem(s)")
    sys.exit(0 if result.ok else 1)


@main.command()
def models() -> None:
    """List the model presets: kind, dimensionality, steps, layers per step, parameters (docs/presets.md has their sources)."""
    from irecon.models.presets import PRESETS, count_parameters

    table = Table(title="irecon model presets")
    for column in ("preset", "kind", "dims", "steps", "layers", "parameters"):
        table.add_column(column, justify="right" if column in ("steps", "layers", "parameters") else "left")
    for name, (config, _) in PRESETS.items():
        irim = config.kind == "irim"
        table.add_row(
            name, config.kind, f"{config.dims}D",
            str(config.steps) if config.kind in ("irim", "rim") else "-",
            str(config.layers) if irim else "-",
            f"{count_parameters(config):,}",
        )
    _console().print(table)



@main.command("bench-memory")
@click.option("--model", "model_name", default="paper-2d", show_default=True, help="preset to measure")
@click.option("--steps", multiple=True, type=int, help="time steps T to sweep (repeat the option) [default: 1 2 4]")
@click.option("--layers", multiple=True, type=int, help="invertible layers per step to sweep (i-RIM)")
@click.option("--size", type=(int, int), default=(320, 320), show_default=True, metavar="H W")
@click.option("--slices", type=int, default=8, show_default=True, help="slab depth for 3-D models")
@click.option("--batches", type=int, default=10, show_default=True, help="mini-batches; the minimum peak is reported")
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda if available, else cpu]")
@click.option("--mode", type=click.Choice(["train", "inference", "both"]), default="both", show_default=True)
@click.option("--compare-plain", is_flag=True, help="also measure plain autograd on the same model")
@click.option("--with-rim", is_flag=True, help="also measure the RIM baseline at the same step counts")
@click.option("--timing-batches", type=int, default=3, show_default=True, help="untracked batches timed per setting")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write one record per measurement")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG of peak memory against depth")
@user_errors
def bench_memory(model_name: str, steps: tuple[int, ...], layers: tuple[int, ...], mode: str,
                 json_path: str | None, plot_path: str | None, **options: Any) -> None:
    """Peak memory of training and inference, measured as the i-RIM paper's appendix C prescribes."""
    from irecon.bench import BenchOptions, plot, ratios, run_bench, write_json

    bench_options = BenchOptions(
        model=model_name, steps=steps or (1, 2, 4), layers=layers or None,
        modes=("train", "inference") if mode == "both" else (mode,), **options,
    )
    console = _console()
    table = _bench_table()
    records = run_bench(bench_options, report=lambda m: console.print(_bench_line(m)))
    for record in records:
        table.add_row(*_bench_row(record))
    console.print(table)
    console.print(f"method: {records[0].method}; peak = min over {bench_options.batches} mini-batches (batch size 1)")
    for description, value in ratios(records):
        console.print(f"{description}: {value:.3f}")
    if json_path:
        write_json(json_path, records)
        console.print(f"wrote {json_path}")
    if plot_path:
        plot(plot_path, records)
        console.print(f"wrote {plot_path}")


def _bench_table() -> Table:
    table = Table(title="peak memory in MiB (weights = parameters + gradients + optimiser state)")
    for column in ("model", "mode", "engine", "T", "layers", "peak", "activ.", "weights", "s/batch"):
        table.add_column(column, justify="left" if column in ("model", "mode", "engine") else "right")
    return table


def _bench_row(m: Any) -> list[str]:
    from irecon.bench import format_bytes

    engine = "free" if m.memory_free else "plain"
    mode = "infer" if m.mode == "inference" else m.mode
    if m.skipped:
        return [m.model, mode, engine, str(m.steps), str(m.layers_total), "skipped", m.skipped, "", ""]
    return [
        m.model, mode, engine, str(m.steps), str(m.layers_total), format_bytes(m.peak_bytes),
        format_bytes(m.activation_bytes), format_bytes(m.param_bytes + m.grad_bytes + m.optimizer_bytes),
        f"{m.step_seconds:.3f}",
    ]


def _bench_line(m: Any) -> str:
    row = _bench_row(m)
    result = f"skipped ({m.skipped})" if m.skipped else f"peak {row[5]} MiB"
    return f"measured {row[0]} {m.mode} {'memory-free' if m.memory_free else 'plain'} T={row[3]} ({row[4]} layers): {result}"


def _register_commands() -> None:
    """Commands whose work and options live in their own module."""
    from irecon.reconstruct import reconstruct_command
    from irecon.train import train_command

    main.add_command(train_command)
    main.add_command(reconstruct_command)


_register_commands()

if __name__ == "__main__":
    main()

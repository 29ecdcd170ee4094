"""``irecon bench-memory`` output checks through the real ``main`` group."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from irecon.cli import main

TINY = [
    "--model",
    "tiny-2d",
    "--steps",
    "1",
    "2",
    "--size",
    "16",
    "16",
    "--batches",
    "1",
    "--timing-batches",
    "1",
    "--device",
    "cpu",
]


def test_json_into_a_missing_folder_is_refused_before_the_sweep(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["bench-memory", *TINY, "--json", str(tmp_path / "missing" / "x.json")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "missing: no such folder" in result.output and "measured" not in result.output
    assert time.perf_counter() - started < 10


def test_plot_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(main, ["bench-memory", *TINY, "--plot", str(tmp_path / "file" / "p.png")])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_steps_take_a_list_or_the_repeated_option() -> None:
    listed = CliRunner().invoke(main, ["bench-memory", *TINY, "--mode", "inference"])
    repeated = CliRunner().invoke(
        main,
        [
            "bench-memory",
            "--model",
            "tiny-2d",
            "--steps",
            "1",
            "--steps",
            "2",
            "--size",
            "16",
            "16",
            "--batches",
            "1",
            "--timing-batches",
            "1",
            "--device",
            "cpu",
            "--mode",
            "inference",
        ],
    )
    assert listed.exit_code == repeated.exit_code == 0, listed.output + repeated.output
    for output in (listed.output, repeated.output):
        assert "T=1 " in output and "T=2 " in output


def test_the_meter_names_on_the_command_line_are_the_library_s() -> None:
    from irecon.cli.bench import METERS as CLI_METERS
    from irecon.memory.meters import METERS

    assert CLI_METERS == METERS


def test_world_size_reports_each_rank_s_adam_bytes_and_peak() -> None:
    from irecon.bench.options import BenchOptions
    from irecon.bench.sweep import run_bench

    common = dict(model="tiny-2d", steps=(1,), size=(16, 16), device="meta", modes=("train",))
    (one,) = run_bench(BenchOptions(**common))
    assert one.rank_optimizer_bytes == [one.optimizer_bytes] and one.rank_peak_bytes == [one.peak_bytes]
    (whole,) = run_bench(BenchOptions(**common, world_size=2))
    (sharded,) = run_bench(BenchOptions(**common, world_size=2, shard_optimizer=True))
    assert whole.rank_optimizer_bytes == [one.optimizer_bytes] * 2
    moments = [b for b in sharded.rank_optimizer_bytes]
    assert sum(moments) == one.optimizer_bytes and max(moments) < one.optimizer_bytes
    assert [p - sharded.peak_bytes for p in sharded.rank_peak_bytes] == [b - one.optimizer_bytes for b in moments]
    result = CliRunner().invoke(
        main,
        [
            "bench-memory",
            "--model",
            "tiny-2d",
            "--steps",
            "1",
            "--size",
            "16",
            "16",
            "--device",
            "meta",
            "--mode",
            "train",
            "--world-size",
            "2",
            "--shard-optimizer",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "per rank, 2 ranks (Adam sharded): tiny-2d train memory-free T=1: weights" in result.output


def test_bad_bench_options_are_one_line_errors() -> None:
    for extra, message in (
        (["--timing-batches", "0"], "--timing-batches must be at least 1, got 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--model", "tiny-3d", "--slices", "0"], "--slices must be at least 1, got 0"),
        (["--world-size", "0"], "--world-size must be at least 1, got 0"),
    ):
        result = CliRunner().invoke(main, ["bench-memory", *TINY, *extra])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert message in result.output


def test_a_unet_has_no_time_steps_anywhere(tmp_path: Path) -> None:
    refused = CliRunner().invoke(main, ["bench-memory", *TINY, "--model", "tiny-unet", "--mode", "inference"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "error: " in refused.output and "without time steps: leave out --steps" in refused.output
    args = ["--size", "16", "16", "--batches", "1", "--timing-batches", "1", "--device", "cpu", "--mode", "inference"]
    path = tmp_path / "unet.json"
    result = CliRunner().invoke(
        main, ["bench-memory", "--model", "tiny-unet", *args, "--json", str(path)], terminal_width=160
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("measured tiny-unet inference") == 1 and "T=" not in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ tiny-unet"))
    assert [cell.strip() for cell in row.split("│")[4:6]] == ["-", "-"], row  # T and layers
    (record,) = json.loads(path.read_text())
    assert record["steps"] is None and record["layers_total"] is None and record["peak_bytes"] > 0


def test_each_measurement_is_announced_before_it_runs() -> None:
    result = CliRunner().invoke(main, ["bench-memory", *TINY, "--mode", "inference"])
    lines = result.output.splitlines()
    first = lines.index(next(x for x in lines if x.startswith("measuring tiny-2d inference memory-free T=1")))
    assert lines[first + 1].startswith("measured tiny-2d inference memory-free T=1")


def test_the_sweep_plot_is_drawn_against_layers_with_the_weights_stack(tmp_path: Path) -> None:
    from irecon.bench.options import BenchOptions
    from irecon.bench.plot import memory_sweep
    from irecon.bench.sweep import run_bench

    records = run_bench(
        BenchOptions(
            model="tiny-2d",
            steps=(1,),
            layers=(2, 4),
            size=(16, 16),
            device="meta",
            modes=("train",),
            compare_plain=True,
        )
    )
    axis = memory_sweep(records, log_scale=True).axes[0]
    free = next(line for line in axis.get_lines() if line.get_label() == "tiny-2d memory-free")
    assert list(free.get_xdata()) == [2, 4]  # coupling layers, not a vertical line at T=1
    assert list(axis.get_xticks()) == [2, 4]  # ticks at the measured depths only
    assert axis.get_yscale() == "log" and axis.get_legend() is None  # the legend sits below the panels
    figure = axis.get_figure()
    assert figure._suptitle.get_text() == "Peak memory vs depth" and len(figure.legends) == 1
    assert any("weights" in c.get_label() for c in axis.collections)
    result = CliRunner().invoke(main, ["bench-memory", *TINY, "--log-scale", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

"""``irecon bench-memory`` output checks through the real ``main`` group."""

from __future__ import annotations

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
    from irecon.memory import METERS

    assert CLI_METERS == METERS


def test_world_size_reports_each_rank_s_adam_bytes_and_peak() -> None:
    from irecon.bench import run_bench
    from irecon.bench_options import BenchOptions

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

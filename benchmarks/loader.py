"""Training-loader throughput: slices/s of the DataLoader ``irecon train`` builds, with no model behind it.

    .venv/bin/python benchmarks/loader.py [--workers 0 2 4] [--epochs 3] [--json FILE]

Two data sets are written once under ``--data-dir`` (default ``/tmp/irecon-loader-bench``): the demo's
(single-coil, 160x128 k-space, 96x96 targets, 16 volumes of 6 slices) and fastMRI-sized multi-coil
files (15 coils, 640x368 k-space, 320x320 targets, 4 volumes of 4 slices, about 0.5 GB). For each
worker count the loader (:class:`irecon.training.feeding.TrainFeed`, batch 1, training masks) runs
``--epochs`` epochs; the first includes starting the workers, the others are the steady rate. The
``estimate`` column is what ``irecon train`` reports as the loader's speed in its epoch line.
A last table times one slice read through a kept HDF5 handle against opening the file per read.
The files were just written, so the page cache holds them: the figures are the CPU's limit, not a disk's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from irecon.data.datasets import MRIDataset
from irecon.data.handles import OpenFiles
from irecon.data.masks import MaskSpec
from irecon.data.synth import synthesize
from irecon.data.volumes import find_volumes, read_kspace, read_target
from irecon.training.feeding import TrainFeed, usable_cpus
from irecon.training.runtime import World

SETS = {
    "demo": dict(challenge="singlecoil", volumes=16, slices=6, kspace_size=(160, 128), recon_size=(96, 96)),
    "fastmri-multicoil": dict(
        challenge="multicoil", coils=15, volumes=4, slices=4, kspace_size=(640, 368), recon_size=(320, 320)
    ),
}
SPEC = MaskSpec("random", (0.08, 0.04), (4, 8))


def data_set(root: Path, name: str) -> list[Path]:
    """The set's training files, written on first use."""
    folder = root / name
    if not folder.is_dir() or not list(folder.glob("*.h5")):
        synthesize(folder, split="train", seed=0, overwrite=True, **SETS[name])
    return find_volumes([folder])[0]


def measure(files: list[Path], workers: int, epochs: int, prefetch: int) -> dict[str, Any]:
    """Seconds and slices/s of each epoch through the training loader with ``workers`` workers."""
    dataset = MRIDataset(files, SPEC, train=True, seed=0)
    feed = TrainFeed(dataset, 1, workers, World(), 0, torch.device("cpu"), prefetch=prefetch)
    rates, estimates, seconds = [], [], []
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            batches, _ = feed.epoch(epoch, 0)
            for _ in batches:
                pass
            feed.stats.finish()
            seconds.append(time.perf_counter() - started)
            rates.append(feed.stats.slices / seconds[-1])
            estimates.append(feed.stats.loader_slices_per_s)
    finally:
        feed.close()
    steady = rates[1:] or rates
    return {
        "workers": workers,
        "prefetch": prefetch if workers else None,
        "slices": len(dataset),
        "first_epoch_s": seconds[0],
        "first_epoch_slices_per_s": rates[0],
        "slices_per_s": statistics.mean(steady),
        "estimate_slices_per_s": statistics.mean(estimates[1:] or estimates),
        "megabytes_per_s": statistics.mean(steady) * slice_bytes(dataset) / 1e6,
    }


def slice_bytes(dataset: MRIDataset) -> int:
    info = dataset.volumes[0]
    return info.num_coils * info.kspace_shape[0] * info.kspace_shape[1] * 8


def read_times(files: list[Path], repeats: int) -> dict[str, float]:
    """Milliseconds per slice (k-space and target) opening the file per read vs through a kept handle."""
    dataset = MRIDataset(files, SPEC, train=True)
    infos = dataset.volumes
    handles = OpenFiles()
    timings: dict[str, list[float]] = {"open per read": [], "kept handle": []}
    for _ in range(repeats):
        for info in infos:
            for index in range(info.num_slices):
                started = time.perf_counter()
                read_kspace(info.path, index)
                read_target(info.path, info, index)
                timings["open per read"].append(time.perf_counter() - started)
                started = time.perf_counter()
                handles.read(info, index, index)
                timings["kept handle"].append(time.perf_counter() - started)
    handles.close()
    return {name: 1e3 * statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--prefetch", type=int, nargs="+", default=[2], help="prefetch_factor values (workers > 0)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/irecon-loader-bench"))
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # More workers than CPUs is what some rows measure on purpose; torch warns about it on every loader.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    console = Console()
    rows, reads = [], {}
    for name in args.sets:
        files = data_set(args.data_dir, name)
        for workers in args.workers:
            for prefetch in args.prefetch if workers else args.prefetch[:1]:
                rows.append({"data": name, **measure(files, workers, args.epochs, prefetch)})
        reads[name] = read_times(files, 3)
    machine = f"{usable_cpus()} usable CPUs ({os.cpu_count()} in the machine), torch {torch.__version__}"
    table = Table(title=f"training loader, batch 1, no model; {machine}")
    for column in ("data", "workers", "prefetch", "slices", "first epoch s", "slices/s", "MB/s", "estimate"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["data"],
            str(r["workers"]),
            str(r["prefetch"] or "-"),
            str(r["slices"]),
            f"{r['first_epoch_s']:.2f}",
            f"{r['slices_per_s']:.1f}",
            f"{r['megabytes_per_s']:.0f}",
            f"{r['estimate_slices_per_s']:.1f}",
        )
    console.print(table)
    read_table = Table(title="one slice read (k-space + target), median ms")
    for column in ("data", "open per read", "kept handle"):
        read_table.add_column(column, justify="right")
    for name, times in reads.items():
        read_table.add_row(name, f"{times['open per read']:.2f}", f"{times['kept handle']:.2f}")
    console.print(read_table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "reads_ms": reads}, indent=2))


if __name__ == "__main__":
    main()

"""Inference time of one model three ways: its checkpoint in torch, its TorchScript file, its ONNX file.

    .venv/bin/python benchmarks/deploy_speed.py CHECKPOINT TS_FILE ONNX_FILE VAL_DIR [--threads 1] [--repeats 5]

The files are what ``irecon export-model`` wrote from CHECKPOINT. Every volume of VAL_DIR (masks as
``irecon reconstruct`` draws them) is reconstructed by each runtime in turn, ``--repeats`` times,
interleaved so that all three meet the same machine load. The table gives the median seconds per
volume (k-space in memory to cropped magnitudes, as ``reconstruct``'s time column) and the largest
difference from the torch model relative to its max.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from irecon.data.datasets import load_volume
from irecon.data.masks import MaskSpec
from irecon.data.volumes import find_volumes
from irecon.inference import reconstruct_volume
from irecon.models.checkpoint import load_model
from irecon.models.onnx_runtime import load_onnx_model

MASKS = MaskSpec("random", (0.08,), (4,))


class TorchScriptModel:
    """A traced export behind the irecon models' call shape."""

    def __init__(self, path: Path, dims: int) -> None:
        self.module, self.dims = torch.jit.load(str(path), map_location="cpu"), dims

    def __call__(self, kspace: Tensor, mask: Tensor) -> list[Tensor]:
        return [self.module(torch.view_as_real(kspace), mask.reshape(-1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("torchscript", type=Path)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("val_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.checkpoint, None, torch.device("cpu"))
    runtimes = {
        "torch": loaded.model,
        "TorchScript": TorchScriptModel(args.torchscript, loaded.config.dims),
        "onnxruntime": load_onnx_model(args.onnx).model,
    }
    volumes = [load_volume(path, MASKS) for path in find_volumes([args.val_dir])[0]]
    seconds: dict[str, list[float]] = {name: [] for name in runtimes}
    differences = dict.fromkeys(runtimes, 0.0)
    for _ in range(args.repeats):
        for volume in volumes:
            reference = None
            for name, model in runtimes.items():
                started = time.perf_counter()
                images = reconstruct_volume(model, volume, batch_size=8)  # type: ignore[arg-type]
                seconds[name].append(time.perf_counter() - started)
                reference = images if reference is None else reference
                difference = float((images - reference).abs().max() / reference.abs().max())
                differences[name] = max(differences[name], difference)
    shape = "x".join(map(str, volumes[0].kspace.shape))
    table = Table(
        title=f"{loaded.name}: {len(volumes)} volumes of {shape} k-space, {args.threads} thread(s), "
        f"{args.repeats} repeats"
    )
    for column in ("runtime", "file bytes", "median s / volume", "max rel. difference"):
        table.add_column(column, justify="right")
    sizes = {"torch": args.checkpoint.stat().st_size, "TorchScript": args.torchscript.stat().st_size}
    sizes["onnxruntime"] = args.onnx.stat().st_size
    for name in runtimes:
        table.add_row(name, f"{sizes[name]:,}", f"{statistics.median(seconds[name]):.3f}", f"{differences[name]:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()

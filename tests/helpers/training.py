"""Tiny synthetic training data and helpers shared by the training and the ``irecon train`` tests.

3 slices of 32x24 k-space, 16x16 targets, a 1-step, 2-layer i-RIM, single-threaded: a shared
2-core machine makes threaded tiny convolutions slow. In-process runs read in the training process
(``num_workers=0``) unless a test asks for workers; command-line runs keep the default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from irecon.data.synth import synthesize
from irecon.training.options import TrainOptions

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"kspace_size": (32, 24), "recon_size": (16, 16), "slices": 3}


def make_data(root: Path) -> Path:
    synthesize(root / "train", split="train", volumes=2, seed=1, **SIZES)
    synthesize(root / "val", split="val", volumes=2, seed=2, **SIZES)
    return root


def make_options(data: Path, out: Path, **overrides: Any) -> TrainOptions:
    values: dict[str, Any] = dict(epochs=1, batch_size=2, steps=1, layers=2, device="cpu", num_workers=0)
    values.update(overrides)
    model = values.pop("model", "tiny-2d")
    return TrainOptions(data / "train", data / "val", model, out, **values)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(data / "train"),
        "--val",
        str(data / "val"),
        "--model",
        "tiny-2d",
        "--out",
        str(out),
        "--steps",
        "1",
        "--layers",
        "2",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        *extra,
    ]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("WORLD_SIZE", None)
    return env


def write_checkpoint_dir(tmp_path: Path) -> Path:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "last.pt").write_bytes(b"earlier run")
    return out

"""One rank of the DDP test: ``torchrun --nproc-per-node 2 train_ddp_worker.py TRAIN VAL RUN_DIR WEIGHTS_DIR``.

Trains the tiny model with :func:`irecon.training.loop.train` (which joins the gloo process group from the
torchrun environment) and saves this rank's final weights to ``WEIGHTS_DIR/rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from irecon.training.loop import train
from irecon.training.options import TrainOptions


def main(train_dir: str, val_dir: str, run_dir: str, weights_dir: str) -> None:
    torch.set_num_threads(1)
    options = TrainOptions(
        Path(train_dir), Path(val_dir), "tiny-2d", Path(run_dir), epochs=1, batch_size=1,
        steps=1, layers=2, device="cpu", seed=3,
    )
    result = train(options)
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    torch.save(state, Path(weights_dir) / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:5])

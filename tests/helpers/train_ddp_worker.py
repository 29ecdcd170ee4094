"""One rank of the DDP tests: ``torchrun --nproc-per-node 2 train_ddp_worker.py TRAIN VAL ROOT``.

Joins the gloo group once and runs :func:`irecon.training.loop.train` several times in ROOT (each
run 2 epochs of the tiny model, batch 1, seed 3), writing this rank's final weights beside each:

* ``plain``: unsharded Adam; ``sharded``: ``shard_optimizer``, plus ``bytes_rank{RANK}.json``
  (this rank's real Adam state bytes, the parameters it holds, the storages its gradients use,
  and what :func:`irecon.memory.adam.adam_shards` predicts);
* ``split``: sharded, stopped by ``max_steps=4`` mid-epoch and resumed on the same 2 processes;
* ``boundary``: sharded, stopped by ``max_steps=3`` at the end of epoch 1 (the test resumes it on 1);
* ``single``: the 1-process run the test left in ROOT, resumed here sharded over 2.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import irecon.training.loop as loop
from irecon.memory.adam import adam_shards
from irecon.training.options import TrainOptions

OPTIONS = dict(epochs=2, batch_size=1, steps=1, layers=2, device="cpu", seed=3, num_workers=0)


def run(options: TrainOptions, root: Path, name: str) -> Any:
    result = loop.train(options)
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    torch.save(state, root / f"{name}_rank{dist.get_rank()}.pt")
    return result


def state_bytes(optimizer: Any) -> tuple[int, list[int]]:
    """Bytes of this rank's local Adam state, and the global indices of the parameters it holds."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    held = [i for i, p in enumerate(params) if p in optimizer.optim.state]
    total = sum(t.untyped_storage().nbytes() for state in optimizer.optim.state.values() for t in state.values())
    return total, held


def main(train_dir: str, val_dir: str, root_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, root = dist.get_rank(), Path(root_dir)
    built: list[Any] = []
    build = loop.build_optimizer

    def keep(*args: Any) -> Any:
        built.append(build(*args))
        return built[-1]

    loop.build_optimizer = keep

    def options(name: str, **overrides: Any) -> TrainOptions:
        return TrainOptions(Path(train_dir), Path(val_dir), "tiny-2d", root / name, **{**OPTIONS, **overrides})

    run(options("plain"), root, "plain")
    sharded = run(options("sharded", shard_optimizer=True), root, "sharded")
    actual, held = state_bytes(built[-1])
    predicted = adam_shards(list(sharded.model.parameters()), dist.get_world_size())[rank]
    grads = [p.grad for p in sharded.model.parameters()]
    report = {
        "actual": actual,
        "held": held,
        "predicted": predicted.total_bytes,
        "parameters": predicted.parameters,
        "grad_storages": len({g.untyped_storage().data_ptr() for g in grads}),
        "grads": len(grads),
    }
    (root / f"bytes_rank{rank}.json").write_text(json.dumps(report))

    split = options("split", shard_optimizer=True, max_steps=4)
    run(split, root, "split_first")
    run(replace(split, max_steps=None, resume=True), root, "split")
    run(options("boundary", shard_optimizer=True, max_steps=3), root, "boundary")
    run(options("single", shard_optimizer=True, resume=True), root, "single")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(*sys.argv[1:4])

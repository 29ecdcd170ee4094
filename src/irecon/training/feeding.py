"""The training loader: one DataLoader for the whole run, in the seeded sampler's order, timed per epoch.

Workers persist across epochs: every item is asked for as ``(epoch, index)``, so a worker started
in one epoch draws the next epoch's masks and slabs without being told (see
:meth:`irecon.data.datasets.MRIDataset.item`). The order is ``DistributedSampler``'s (seeded by
``--seed`` and the epoch) minus the batches already done, so a resumed run sees what the stopped
one would have, with any number of workers. Each batch also carries the seconds it took to make
(reading and masking its items, collating them), so an epoch reports how fast the loader can go
beside how fast the model went.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from irecon.data.datasets import MRIDataset, Sample
from irecon.errors import IreconError
from irecon.training.runtime import World, ignore_stop_signals

AUTO_WORKERS_MAX = 4
PREFETCH_FACTOR = 2
# A worker's IreconError reaches the main process as a new IreconError holding the traceback text.
_WORKER_PREFIX = "Caught IreconError in DataLoader worker"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(
    requested: int | None, device: torch.device, cpus: int | None = None, processes_here: int | None = None
) -> int:
    """``--num-workers`` as given, or for None (auto): 0 when training on the CPU, else ``min(4, c - 1)``.

    ``c`` is this process's share of the CPUs (usable CPUs over ``LOCAL_WORLD_SIZE``, the training
    processes on this host). On the CPU the model needs every core and the in-process loader is
    two orders of magnitude faster than it (see docs/distributed.md); on a GPU, workers read while
    the main process drives the device.
    """
    if requested is not None:
        return requested
    if device.type == "cpu":
        return 0
    here = processes_here or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    share = (usable_cpus() if cpus is None else cpus) // max(here, 1)
    return max(0, min(AUTO_WORKERS_MAX, share - 1))


class EpochItems(Dataset[tuple[Sample, float]]):
    """``dataset.item(index, epoch)`` for the key ``(epoch, index)``, with the seconds it took."""

    def __init__(self, dataset: MRIDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Sample, float]:
        started = time.perf_counter()
        sample = self.dataset.item(key[1], key[0])
        return sample, time.perf_counter() - started


def timed_collate(items: list[tuple[Sample, float]]) -> tuple[Sample, float]:
    """``default_collate`` of the samples, and the seconds the batch took to make: its items' and this collation's.

    In a worker the collated batch is written into shared memory here, so that copy is counted too.
    """
    started = time.perf_counter()
    batch = default_collate([sample for sample, _ in items])
    return batch, sum(seconds for _, seconds in items) + time.perf_counter() - started


class EpochOrder(Sampler[tuple[int, int]]):
    """The keys of the current epoch; set before each pass over the loader."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class FeedStats:
    """One rank's loader timings for one epoch (or the part of it this launch ran)."""

    workers: int
    slices: int = 0
    read_s: float = 0.0
    wait_s: float = 0.0
    elapsed_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def finish(self) -> None:
        """Close the epoch's clock (call when its last step is done)."""
        self.elapsed_s = time.perf_counter() - self.started

    @property
    def loader_slices_per_s(self) -> float:
        """What the loader can deliver: slices per second of making batches, times the workers making them."""
        return self.slices * max(self.workers, 1) / self.read_s if self.read_s > 0 else math.inf

    @property
    def model_slices_per_s(self) -> float:
        """Slices per second of the time not spent waiting for a batch (steps, syncs, checkpoints)."""
        busy = self.elapsed_s - self.wait_s
        return self.slices / busy if busy > 0 else math.inf

    @property
    def wait_fraction(self) -> float:
        return self.wait_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def record(self, world: World, device: torch.device) -> dict[str, Any]:
        """The epoch's metrics.jsonl figures, each the slowest rank's (every rank must call this).

        Rates that could not be measured (nothing read, nothing run) are None.
        """
        overall = self.slices / self.elapsed_s if self.elapsed_s > 0 else math.inf
        rates = (overall, self.model_slices_per_s, self.loader_slices_per_s)
        values = torch.tensor([self.wait_fraction, *(-r for r in rates)], dtype=torch.float64, device=device)
        wait, *negated = world.all_reduce(values, torch.distributed.ReduceOp.MAX).tolist()
        overall, model, loader = (None if math.isinf(v) else -v for v in negated)
        return {
            "slices_per_s": overall,
            "model_slices_per_s": model,
            "loader_slices_per_s": loader,
            "loader_wait_fraction": wait,
            "num_workers": self.workers,
        }


class TrainFeed:
    """The run's training DataLoader: persistent workers, pinned memory on CUDA, seeded order."""

    def __init__(
        self,
        dataset: MRIDataset,
        batch_size: int,
        workers: int,
        world: World,
        seed: int,
        device: torch.device,
        prefetch: int = PREFETCH_FACTOR,
    ) -> None:
        self.dataset, self.batch_size, self.workers, self.world, self.seed = dataset, batch_size, workers, world, seed
        self.order = EpochOrder()
        self.loader: DataLoader | None = DataLoader(
            EpochItems(dataset),
            batch_size=batch_size,
            sampler=self.order,
            num_workers=workers,
            collate_fn=timed_collate,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=prefetch if workers else None,
            worker_init_fn=ignore_stop_signals if workers else None,
        )
        self.stats = FeedStats(workers)

    def epoch(self, epoch: int, position: int) -> tuple[Iterator[Any], int]:
        """The epoch's batches from batch ``position`` on, and the epoch's batch count on this rank."""
        sampler = DistributedSampler(
            self.dataset, num_replicas=self.world.size, rank=self.world.rank, shuffle=True, seed=self.seed
        )
        sampler.set_epoch(epoch)
        self.order.keys = [(epoch, i) for i in list(sampler)[position * self.batch_size :]]
        self.stats = FeedStats(self.workers)
        return self._timed(), math.ceil(len(sampler) / self.batch_size)

    def _timed(self) -> Iterator[Any]:
        assert self.loader is not None, "the feed is closed"
        stats = self.stats
        batches = iter(self.loader)
        while True:
            asked = time.perf_counter()
            try:
                batch, seconds = next(batches)
            except StopIteration:
                break
            except IreconError as err:
                raise worker_error(err) from None
            stats.wait_s += time.perf_counter() - asked
            stats.read_s += seconds
            stats.slices += slice_count(batch.target) if batch.target.numel() else kspace_slices(batch.kspace)
            yield batch

    def close(self) -> None:
        """End the workers now and close the main process's files.

        Dropping the loader is not enough: a traceback or a suspended epoch generator can keep its
        iterator alive, and live workers at interpreter exit hang the process. So the worker
        iterator is shut down here, as ``DataLoader`` itself does when the iterator is collected.
        """
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader = None
        self.dataset.close()


def slice_count(target: torch.Tensor) -> int:
    """Slices in a batch of targets: ``(B, h, w)`` or slabs ``(B, S, h, w)``."""
    return int(target.shape[0] * (target.shape[1] if target.dim() == 4 else 1))


def kspace_slices(kspace: torch.Tensor) -> int:
    """Slices in a batch of k-space ``(B, coils, H, W)`` or slabs ``(B, coils, S, H, W)`` (batches without targets)."""
    return int(kspace.shape[0] * (kspace.shape[2] if kspace.dim() == 5 else 1))


def worker_error(err: IreconError) -> IreconError:
    """The one-line IreconError a DataLoader worker raised, from the traceback text torch re-raises it with."""
    if not err.problem.startswith(_WORKER_PREFIX):
        return err
    last = err.problem.strip().splitlines()[-1]
    _, _, message = last.partition("IreconError: ")
    return IreconError(message or last)

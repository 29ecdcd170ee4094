"""The training loader: one DataLoader for the whole run, in the seeded sampler's order, timed per epoch.

Workers persist across epochs: every item is asked for as ``(epoch, index)``, so a worker started
in one epoch draws the next epoch's masks and slabs without being told (see
:meth:`irecon.data.datasets.MRIDataset.item`). The order is ``DistributedSampler``'s (seeded by
``--seed`` and the epoch), batched by size (volumes of different matrix sizes never share a batch),
minus the batches already done, so a resumed run sees what the stopped
one would have, with any number of workers. Each batch also carries the seconds it took to make
(reading and masking its items, collating them), so an epoch reports how fast the loader can go
beside how fast the model went.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
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


class EpochOrder(Sampler[list[tuple[int, int]]]):
    """The batches of keys of the current epoch; set before each pass over the loader."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter([list(batch) for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def keys(self) -> list[tuple[int, int]]:
        """Every key of the epoch's remaining batches, in order."""
        return [key for batch in self.batches for key in batch]


def size_batches(indices: Sequence[int], batch_size: int, size_of: Callable[[int], Hashable]) -> list[list[int]]:
    """The indices in order, in batches of one size: a batch is complete when its size has ``batch_size``
    items; the incomplete ones follow at the end, in the order their sizes first came.

    With one size this is plain consecutive batching.
    """
    open_batches: dict[Hashable, list[int]] = {}
    batches = []
    for index in indices:
        size = size_of(index)
        batch = open_batches.setdefault(size, [])
        batch.append(index)
        if len(batch) == batch_size:
            batches.append(batch)
            open_batches[size] = []
    return batches + [batch for batch in open_batches.values() if batch]


def rank_batches(dataset: MRIDataset, batch_size: int, world: World, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of the epoch: ``DistributedSampler``'s order batched by size, as many on every rank.

    A rank with fewer batches than the others (sizes that split unevenly) repeats its first ones.
    """
    per_rank = []
    for rank in range(world.size):
        sampler = DistributedSampler(dataset, num_replicas=world.size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        per_rank.append(size_batches(list(sampler), batch_size, dataset.size_of))
    mine, most = per_rank[world.rank], max(len(batches) for batches in per_rank)
    return [mine[i % len(mine)] for i in range(most)]


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
            batch_sampler=self.order,
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
        batches = rank_batches(self.dataset, self.batch_size, self.world, self.seed, epoch)
        self.order.batches = [[(epoch, i) for i in batch] for batch in batches[position:]]
        self.stats = FeedStats(self.workers)
        return self._timed(), len(batches)

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
            stats.slices += batch_slices(batch.kspace, batch.target)
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


def batch_slices(kspace: torch.Tensor, target: torch.Tensor) -> int:
    """Slices in a batch: counted on its targets, or on its k-space ``(B, coils, [S,] H, W)`` when it has none."""
    if target.numel():
        return slice_count(target)
    return int(kspace.shape[0] * (kspace.shape[2] if kspace.dim() == 5 else 1))


def worker_error(err: IreconError) -> IreconError:
    """The one-line IreconError a DataLoader worker raised, from the traceback text torch re-raises it with."""
    if not err.problem.startswith(_WORKER_PREFIX):
        return err
    last = err.problem.strip().splitlines()[-1]
    _, _, message = last.partition("IreconError: ")
    return IreconError(message or last)

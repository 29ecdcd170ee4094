"""The training loader: worker counts, persistent workers across epochs, timings, worker errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from irecon.data.datasets import MRIDataset
from irecon.data.volumes import find_volumes
from irecon.errors import IreconError
from irecon.training.feeding import FeedStats, TrainFeed, resolve_workers, worker_error
from irecon.training.runtime import World
from tests.helpers.training import make_options

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_workers_are_none_on_the_cpu_and_a_share_of_the_cpus_on_a_gpu() -> None:
    cuda = torch.device("cuda", 0)
    assert resolve_workers(3, torch.device("cpu")) == 3
    assert resolve_workers(None, torch.device("cpu"), cpus=16) == 0
    assert [resolve_workers(None, cuda, cpus=n) for n in (1, 2, 3, 16)] == [0, 1, 2, 4]
    assert resolve_workers(None, cuda, cpus=16, processes_here=8) == 1  # 2 CPUs per process
    assert resolve_workers(None, cuda, cpus=16, processes_here=16) == 0


def test_persistent_workers_serve_every_epoch_in_the_sampler_order(data: Path) -> None:
    options = make_options(data, data / "unused")
    files = find_volumes([options.train_dir])[0]
    dataset = MRIDataset(files, options.mask_spec, train=True, seed=5)
    feed = TrainFeed(dataset, 2, 2, World(), 5, torch.device("cpu"))
    try:
        for epoch in (0, 1, 2):
            batches, total = feed.epoch(epoch, 1)
            got = list(batches)
            dataset.set_epoch(epoch)
            order = feed.order.keys
            assert total == 3 and len(got) == 2 and [k[0] for k in order] == [epoch] * 4
            for batch, start in zip(got, (0, 2)):
                for row, (_, index) in enumerate(order[start : start + 2]):
                    torch.testing.assert_close(batch.kspace[row], dataset[index].kspace, rtol=0, atol=0)
                    torch.testing.assert_close(batch.mask[row], dataset[index].mask, rtol=0, atol=0)
            feed.stats.finish()
            assert feed.stats.slices == 4 and feed.stats.read_s > 0
            assert 0 <= feed.stats.wait_s <= feed.stats.elapsed_s
    finally:
        feed.close()
    assert feed.loader is None


def test_feed_rates() -> None:
    stats = FeedStats(workers=2, slices=10, read_s=0.5, wait_s=1.0, elapsed_s=5.0)
    assert stats.loader_slices_per_s == pytest.approx(40.0)  # two readers at 20 slices/s each
    assert stats.model_slices_per_s == pytest.approx(2.5) and stats.wait_fraction == pytest.approx(0.2)
    record = stats.record(World(), torch.device("cpu"))
    assert record == pytest.approx(
        {
            "slices_per_s": 2.0,
            "model_slices_per_s": 2.5,
            "loader_slices_per_s": 40.0,
            "loader_wait_fraction": 0.2,
            "num_workers": 2,
        }
    )
    empty = FeedStats(workers=0).record(World(), torch.device("cpu"))
    assert empty["slices_per_s"] is None and empty["loader_slices_per_s"] is None
    assert math.isinf(FeedStats(workers=0).loader_slices_per_s)


def test_a_worker_error_becomes_its_one_line_again() -> None:
    wrapped = IreconError(
        "Caught IreconError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nirecon.errors.IreconError: /data/a.h5: kspace slice 2 contains NaN or Inf values\n'
    )
    assert str(worker_error(wrapped)) == "/data/a.h5: kspace slice 2 contains NaN or Inf values"
    plain = IreconError("no such file", "/data/b.h5")
    assert worker_error(plain) is plain

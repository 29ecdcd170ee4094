"""Training on a folder of several matrix sizes: batches of one size each, as many on every rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irecon.data.synth import synthesize
from irecon.training.feeding import rank_batches, size_batches
from irecon.training.loop import train
from irecon.training.plan import prepare
from irecon.training.runtime import World
from tests.helpers.training import make_options

pytestmark = pytest.mark.usefixtures("one_thread")


def test_size_batches_never_mix_sizes_and_keep_every_index_once() -> None:
    sizes = {0: "a", 1: "b", 2: "a", 3: "a", 4: "b", 5: "a", 6: "b"}
    batches = size_batches([3, 1, 0, 4, 2, 6, 5], 2, sizes.__getitem__)
    assert batches == [[3, 0], [1, 4], [2, 5], [6]]
    assert size_batches(list(range(5)), 2, lambda i: "one") == [[0, 1], [2, 3], [4]]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train volumes of two k-space and target sizes (3 + 2 slices), val of one."""
    root = tmp_path_factory.mktemp("mixed")
    synthesize(root / "train", volumes=1, slices=3, kspace_size=(32, 24), recon_size=(16, 16), seed=1)
    synthesize(root / "big", volumes=1, slices=2, kspace_size=(40, 32), recon_size=(20, 20), seed=3)
    for path in (root / "big").iterdir():
        path.rename(root / "train" / f"big_{path.name}")
    synthesize(root / "val", split="val", volumes=1, slices=2, kspace_size=(40, 32), recon_size=(20, 20), seed=2)
    return root


def test_ranks_get_as_many_batches_of_one_size(mixed: Path) -> None:
    _, plan = prepare(make_options(mixed, mixed / "unused"))
    dataset = plan.train_set
    for size in (1, 2):
        per_rank = [rank_batches(dataset, 2, World(size, rank), seed=0, epoch=1) for rank in range(size)]
        assert len({len(batches) for batches in per_rank}) == 1
        for batches in per_rank:
            assert all(len({dataset.size_of(i) for i in batch}) == 1 for batch in batches)
        assert {i for batches in per_rank for batch in batches for i in batch} == set(range(len(dataset)))


def test_a_folder_with_two_matrix_sizes_trains_in_batches(mixed: Path, tmp_path: Path) -> None:
    result = train(make_options(mixed, tmp_path / "run", batch_size=2))
    assert result.exit_code == 0 and result.epochs_done == 1
    assert result.global_step == 3  # 3 slices of one size -> 2 batches, 2 of the other -> 1
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["train_loss"] == record["train_loss"]  # finite, not NaN

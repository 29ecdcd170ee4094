"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.training import make_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny train/val folders (see tests/train_helpers.py)."""
    return make_data(tmp_path_factory.mktemp("data"))


@pytest.fixture
def one_thread() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

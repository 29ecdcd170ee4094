import pytest
import torch

from irecon.device import resolve_device
from irecon.errors import IreconError


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(IreconError, match="unknown device"):
        resolve_device("bogus")
    with pytest.raises(IreconError, match="unsupported device"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_user_error() -> None:
    with pytest.raises(IreconError, match="CUDA is not available here"):
        resolve_device("cuda")
    with pytest.raises(IreconError, match="CUDA is not available here"):
        resolve_device("cuda:1", local_rank=1)

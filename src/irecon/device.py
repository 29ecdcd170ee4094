"""The ``--device`` option of every command, as a torch device."""

from __future__ import annotations

import torch

from irecon.errors import IreconError


def resolve_device(name: str | None, local_rank: int | None = None) -> torch.device:
    """``name`` as a torch device: default cuda if available, else cpu; unusable ones are user errors.

    Under DDP (``local_rank`` given) a CUDA device becomes ``cuda:LOCAL_RANK``.
    """
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise IreconError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise IreconError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise IreconError(f"«device» {name}: CUDA is not available here; use «device» cpu")
    index = local_rank if local_rank is not None else device.index
    if index is not None and index >= torch.cuda.device_count():
        raise IreconError(f"«device» {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())

"""Checkpoint files: written atomically, loaded without executing code (weights_only=True).

A checkpoint is a dict of plain values and tensors. Every checkpoint holds ``model_config`` (the
:class:`ModelConfig` as a dict) and ``model`` (the state dict), so any command can rebuild the model
from the file alone; training adds optimiser, scheduler, RNG and progress entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from irecon import __version__
from irecon.files import atomic_write
from irecon.errors import IreconError
from irecon.models.presets import ModelConfig, build_model


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to a temporary file beside ``path``, fsync it, then rename over ``path``.

    A crash at any moment leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    payload = {**payload, "irecon_version": __version__, "torch_version": str(torch.__version__)}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a bad file is a one-line IreconError."""
    path = Path(path)
    if not path.is_file():
        raise IreconError("checkpoint does not exist", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise IreconError(f"not a readable irecon checkpoint ({type(err).__name__})", path) from None
    if not isinstance(payload, dict) or "model_config" not in payload or "model" not in payload:
        raise IreconError("not an irecon checkpoint (no model_config/model entries)", path)
    return payload


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", memory_free: bool = True
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """(model with the checkpoint's weights, its config, the whole payload)."""
    payload = load_checkpoint(path, map_location=device)
    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (TypeError, IreconError) as err:
        raise IreconError(f"bad model config in checkpoint: {err}", path) from None
    model = build_model(config, memory_free=memory_free).to(device)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise IreconError(f"weights do not fit the model config: {first}", path) from None
    return model, config, payload

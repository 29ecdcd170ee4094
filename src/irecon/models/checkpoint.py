"""Checkpoint files: written atomically, loaded without executing code (weights_only=True).

A checkpoint is a dict of plain values and tensors. Every checkpoint holds ``model_config`` (the
:class:`ModelConfig` as a dict) and ``model`` (the state dict), so any command can rebuild the model
from the file alone; training adds optimiser, scheduler, RNG and progress entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irecon import __version__
from irecon.errors import IreconError
from irecon.files import atomic_write
from irecon.models.configs import ModelConfig, config_from_dict
from irecon.models.presets import PRESETS, preset
from irecon.models.pretrained.registry import bundled_file, bundled_name, find_bundled


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to a temporary file beside ``path``, fsync it, then rename over ``path``.

    A crash at any moment leaves either the previous file or the new one, never a torn file. A write
    that fails (a full disk) is an IreconError naming ``path``, never torch's zip-writer RuntimeError.
    """
    path = Path(path)
    payload = {**payload, "irecon_version": __version__, "torch_version": str(torch.__version__)}
    with atomic_write(path) as tmp:
        try:
            with open(tmp, "wb") as handle:  # a Python file: its OSError stays visible behind torch's
                torch.save(payload, handle)
        except RuntimeError as err:
            cause = _os_error(err)
            if cause is None:  # not a failed write: a bug, shown as such
                raise
            raise cause from None


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind an exception (torch reports a failed write as RuntimeError), if any."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a bad file is a one-line IreconError.

    ``bundled:NAME`` reads the bundled model NAME (:mod:`irecon.models.pretrained.registry`) once its
    sha256 matched the manifest's.
    """
    name = bundled_name(path)
    if name is not None:
        with bundled_file(find_bundled(name)) as real:
            return load_checkpoint(real, map_location)
    path = Path(path)
    if not path.is_file():
        raise IreconError("checkpoint does not exist", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises many types for truncated or foreign files
        raise IreconError(
            "not a readable irecon checkpoint: truncated, corrupt, or not saved by irecon train", path
        ) from None
    if not isinstance(payload, dict) or "model_config" not in payload or "model" not in payload:
        raise IreconError("not an irecon checkpoint (no model_config/model entries)", path)
    return payload


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """(model with the checkpoint's weights, its config, the whole payload)."""
    payload = load_checkpoint(path, map_location=device)
    try:
        config = config_from_dict(payload["model_config"])
    except (TypeError, IreconError) as err:
        raise IreconError(f"bad model config in checkpoint: {err}", path) from None
    model = config.build().to(device)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise IreconError(f"weights do not fit the model config: {first}", path) from None
    return model, config, payload


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with its config and a name for reports."""

    model: nn.Module
    config: ModelConfig
    name: str
    virtual_coils: int | None = None
    """The virtual coil count the checkpoint was trained on (coil compression), or None."""


def load_model(checkpoint: str | Path | None, model_name: str | None, device: torch.device) -> LoadedModel:
    """The model to run: from a checkpoint (which carries its config), or the parameter-free zero-filled.

    A preset named together with a checkpoint must agree with it (see :func:`_agrees`); a preset
    other than ``zero-filled`` without a checkpoint has no weights and is an error.
    """
    if model_name is not None and model_name not in PRESETS:
        raise IreconError(f"unknown model preset {model_name!r} (choose from {', '.join(PRESETS)})")
    if checkpoint is None:
        if model_name is None:
            raise IreconError(
                "no model given: pass «checkpoint» CKPT (a model trained with irecon train) or «model» zero-filled"
            )
        if model_name != "zero-filled":
            raise IreconError(
                f"«model» {model_name} needs trained weights: pass «checkpoint» CKPT with a "
                "checkpoint of it (from irecon train); only «model» zero-filled runs without one"
            )
        config = preset("zero-filled")
        return LoadedModel(config.build().to(device).eval(), config, "zero-filled")
    model, config, payload = model_from_checkpoint(checkpoint, device)
    recorded = payload.get("preset")
    if model_name is not None and not _agrees(model_name, config, recorded):
        raise IreconError(
            f"«model» {model_name} does not match the checkpoint ({_describe(config, recorded)}); "
            "a checkpoint carries its own config, so leave out «model»",
            checkpoint,
        )
    base = model_name or (recorded if isinstance(recorded, str) else config.describe())
    virtual = payload.get("virtual_coils")
    return LoadedModel(
        model.eval(), config, f"{base} from {Path(checkpoint).name}", int(virtual) if virtual is not None else None
    )


def _agrees(model_name: str, config: ModelConfig, recorded: Any) -> bool:
    """Whether ``--model`` names the checkpoint's model.

    A checkpoint that records its preset must name the same one. Otherwise the kind and the
    dimensionality must match the preset's: training may override the other fields (steps,
    layers, widths), so they cannot be compared.
    """
    if isinstance(recorded, str):
        return recorded == model_name
    reference = preset(model_name)
    return (config.kind, config.dims) == (reference.kind, reference.dims)


def _describe(config: ModelConfig, recorded: Any) -> str:
    text = f"{config.kind}, {config.dims}-D"
    return f"preset {recorded}: {text}" if isinstance(recorded, str) else text

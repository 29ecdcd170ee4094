"""The bundled-weights registry: which trained models ship with irecon, and their sha256-checked files.

The manifest (``manifest.json`` beside the weights) lists one entry per model; ``make pretrained``
writes it. The folder is this package, or ``$IRECON_PRETRAINED_DIR`` when set (tests and local
experiments), or a ``folder`` argument. A checkpoint path ``bundled:NAME`` names a bundled model
wherever a checkpoint is taken. Torch-free, so ``irecon models`` can list the weights without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from irecon.errors import IreconError
from irecon.files import sha256_of

ENV_FOLDER = "IRECON_PRETRAINED_DIR"
MANIFEST = "manifest.json"
PREFIX = "bundled:"
SINGLECOIL = "irim-singlecoil"
MULTICOIL = "irim-multicoil"
RECIPE = "make pretrained"


@dataclass(frozen=True)
class BundledModel:
    """One manifest entry: a weight file and what it is (preset, coils, training data, scores)."""

    name: str
    file: str
    sha256: str
    preset: str
    coils: int
    virtual_coils: int | None = None
    trained_on: str = ""
    steps: int = 0
    recipe: str = RECIPE
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        """The checkpoint argument that names it: ``bundled:NAME``."""
        return PREFIX + self.name


def bundled_name(spec: str | Path) -> str | None:
    """NAME of a ``bundled:NAME`` checkpoint argument, else None (an ordinary path)."""
    text = str(spec)
    return text[len(PREFIX) :] if text.startswith(PREFIX) else None


def name_for_coils(coils: int) -> str:
    """The bundled model for data of ``coils`` coils: single-coil for 1, multi-coil for any other count."""
    return SINGLECOIL if coils == 1 else MULTICOIL


def _folder(folder: str | Path | None) -> Any:
    """The registry folder (a Traversable): the argument, else ``$IRECON_PRETRAINED_DIR``, else this package."""
    chosen = folder if folder is not None else os.environ.get(ENV_FOLDER) or None
    return Path(chosen) if chosen is not None else resources.files(__package__ or "irecon.models.pretrained")


def bundled_models(folder: str | Path | None = None) -> list[BundledModel]:
    """Every model the manifest lists (empty until ``make pretrained`` has filled it)."""
    manifest = _folder(folder) / MANIFEST
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["models"]
        return [BundledModel(**entry) for entry in entries]
    except FileNotFoundError:
        raise IreconError("no manifest of bundled weights; make them with: " + RECIPE, str(manifest)) from None
    except (ValueError, KeyError, TypeError) as err:
        raise IreconError(f"not a manifest of bundled weights ({err})", str(manifest)) from None


def find_bundled(name: str, folder: str | Path | None = None) -> BundledModel:
    """The manifest entry ``name``; a missing one is an IreconError naming ``make pretrained``."""
    models = bundled_models(folder)
    for model in models:
        if model.name == name:
            return model
    listed = ", ".join(m.name for m in models) or "none"
    raise IreconError(
        f"no bundled model {name!r} (bundled: {listed}); train the bundled weights with: {RECIPE}",
        PREFIX + name,
    )


@contextlib.contextmanager
def bundled_file(model: BundledModel, folder: str | Path | None = None) -> Iterator[Path]:
    """A real path to ``model``'s weight file, after its sha256 matched the manifest's."""
    with resources.as_file(_folder(folder) / model.file) as path:
        if not path.is_file():
            raise IreconError(f"bundled model {model.name}: weight file missing; rebuild with: {RECIPE}", path)
        digest = sha256_of(path)
        if digest != model.sha256:
            raise IreconError(
                f"bundled model {model.name}: sha256 {digest[:12]}... does not match the manifest's "
                f"{model.sha256[:12]}...; the file is damaged or replaced: reinstall irecon or rebuild with: {RECIPE}",
                path,
            )
        yield path


def four_x_ssim(model: BundledModel) -> tuple[float, float] | None:
    """(model, zero-filled) SSIM at 4x from the manifest's scores, or None when not measured."""
    scores = model.scores.get("4")
    if not scores or "ssim" not in scores or "zero_filled_ssim" not in scores:
        return None
    return float(scores["ssim"]), float(scores["zero_filled_ssim"])

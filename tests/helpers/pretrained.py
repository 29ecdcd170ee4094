"""A temporary bundled-weights registry: untrained tiny-2d weights and a manifest of the shape ``make pretrained`` writes."""

from __future__ import annotations

from pathlib import Path

import torch

from irecon.files import sha256_of, write_json
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.models.pretrained.registry import MULTICOIL, SINGLECOIL

# name -> (coils of the model, virtual coils it was trained on)
MODELS = {SINGLECOIL: (1, None), MULTICOIL: (2, 2)}


def make_registry(folder: Path, names: tuple[str, ...] = (SINGLECOIL, MULTICOIL)) -> Path:
    """``folder`` holding ``manifest.json`` and one ``<name>.pt`` per name (1-step, 2-layer tiny-2d, seeded)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for seed, name in enumerate(names):
        coils, virtual = MODELS[name]
        config = preset("tiny-2d", coils=coils, steps=1, layers=2)
        torch.manual_seed(seed)
        model = config.build()
        path = folder / f"{name}.pt"
        save_checkpoint(
            path,
            {
                "model_config": config.to_dict(),
                "model": model.state_dict(),
                "preset": "tiny-2d",
                "virtual_coils": virtual,
            },
        )
        entries.append(
            {
                "name": name,
                "file": path.name,
                "sha256": sha256_of(path),
                "preset": "tiny-2d",
                "coils": coils,
                "virtual_coils": virtual,
                "trained_on": "nothing: untrained test weights",
                "steps": 0,
                "recipe": "make pretrained",
                "scores": {
                    "4": {
                        "ssim": 0.5,
                        "psnr": 20.0,
                        "nmse": 0.1,
                        "zero_filled_ssim": 0.4,
                        "zero_filled_psnr": 18.0,
                        "zero_filled_nmse": 0.2,
                    }
                },
            }
        )
    write_json(folder / "manifest.json", {"models": entries})
    return folder

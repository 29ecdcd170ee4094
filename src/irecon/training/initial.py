"""``--init``: a new run starting from trained weights (a checkpoint, or the bundled model for the data's coils).

The weights fix the model: its config comes from them, a conflicting ``--model`` or size option is
refused, and a multi-coil model's virtual coils carry over. The optimiser starts fresh. The run
records where its weights came from (``init`` in the options its checkpoints store).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from irecon.data.volumes import find_volumes, read_volume_info
from irecon.errors import IreconError, option
from irecon.models.checkpoint import load_checkpoint
from irecon.models.configs import ModelConfig, config_from_dict
from irecon.models.pretrained.registry import PREFIX, name_for_coils
from irecon.training.options import TrainOptions

DEFAULT = "default"  # --init default: the bundled model for the training data's coils


@dataclass(frozen=True)
class InitWeights:
    """Weights a run starts from: where they came from, their preset (if recorded), config and state dict."""

    source: str
    preset: str | None
    config: ModelConfig
    weights: dict[str, Any]
    virtual_coils: int | None


def load_init(options: TrainOptions) -> InitWeights:
    """The weights ``options.init`` names: ``default``, ``bundled:NAME`` or a checkpoint path."""
    source = str(options.init)
    if source == DEFAULT:
        if options.train_dir is None:
            raise IreconError("«init» default picks the bundled model for the training data's coils: pass «train_dir»")
        files, _ = find_volumes([options.train_dir])
        source = PREFIX + name_for_coils(read_volume_info(files[0]).num_coils)
    payload = load_checkpoint(source)
    try:
        config = config_from_dict(payload["model_config"])
    except (TypeError, IreconError) as err:
        raise IreconError(f"bad model config in the «init» checkpoint: {err}", source) from None
    recorded = payload.get("preset")
    virtual = payload.get("virtual_coils")
    return InitWeights(
        source,
        recorded if isinstance(recorded, str) else None,
        config,
        payload["model"],
        None if virtual is None else int(virtual),
    )


def apply_init(options: TrainOptions, init: InitWeights) -> TrainOptions:
    """``options`` with the preset, virtual coils and resolved source of ``init``; conflicts are refused."""
    model = options.model or init.preset
    if model is None:
        raise IreconError("the «init» checkpoint records no preset; pass «model» with the preset it was", init.source)
    if options.model is not None and init.preset is not None and options.model != init.preset:
        raise IreconError(
            f"«model» {options.model} conflicts with the «init» weights (preset {init.preset}); leave out «model»",
            init.source,
        )
    for name, value in options.model_overrides().items():
        theirs = getattr(init.config, name, None)
        if value != theirs:
            raise IreconError(
                f"{option(name)} {value} conflicts with the «init» weights ({theirs}): they fix the model; "
                f"leave out {option(name)}",
                init.source,
            )
    if options.fit_memory is not None and options.fit == "steps":
        raise IreconError("«fit» steps would change the model the «init» weights fix; use «fit» batch")
    virtual = options.virtual_coils
    if virtual is not None and init.virtual_coils is not None and virtual != init.virtual_coils:
        raise IreconError(
            f"the «init» weights were trained on {init.virtual_coils} virtual coils, not {virtual}; "
            "leave out «virtual_coils»",
            init.source,
        )
    virtual = init.virtual_coils if virtual is None else virtual
    return replace(options, model=model, virtual_coils=virtual, init=init.source)


def check_init_coils(init: InitWeights, coils: int) -> None:
    """The weights must take the coil count the run feeds the model (the data's, or its virtual coils)."""
    if init.config.coil_bound and init.config.coils != coils:
        raise IreconError(
            f"the «init» weights take {init.config.coils}-coil k-space, but the run feeds the model {coils} coils; "
            "start from weights trained on such data",
            init.source,
        )

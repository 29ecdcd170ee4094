"""The model ``irecon reconstruct`` takes when none is named: the bundled i-RIM for the inputs' coils."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from irecon.data.volumes import read_volume_info
from irecon.errors import IreconError
from irecon.models.pretrained.registry import PREFIX, find_bundled, name_for_coils

NAMES_SHOWN = 3  # files named in the refusal of mixed inputs


def default_checkpoint(files: Sequence[Path]) -> str:
    """``bundled:NAME`` of the bundled i-RIM for the inputs' coils: single-coil, or multi-coil (any count).

    Inputs that mix the two are refused (one model per run); unreadable files fail on their own later.
    """
    single, multi = [], []
    for path in files:
        try:
            info = read_volume_info(path)
        except IreconError:
            continue
        (single if info.num_coils == 1 else multi).append(path)
    if single and multi:
        raise IreconError(
            f"the inputs mix single-coil ({_names(single)}) and multi-coil ({_names(multi)}) files, and each kind has "
            "its own bundled model: reconstruct them in separate runs, or pass «checkpoint» or «model» zero-filled"
        )
    name = name_for_coils(2 if multi else 1)
    try:
        find_bundled(name)
    except IreconError as err:
        raise IreconError(f"{err.problem}; or pass «checkpoint» CKPT or «model» zero-filled", err.path) from None
    return PREFIX + name


def _names(paths: Sequence[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:NAMES_SHOWN])
    return shown + (f", ... ({len(paths)} files)" if len(paths) > NAMES_SHOWN else "")

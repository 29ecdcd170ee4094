"""What ``irecon evaluate`` takes, importable without h5py or torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from irecon.errors import IreconError

TARGET_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}
CHALLENGES = ("auto", *TARGET_KEYS)


@dataclass(frozen=True)
class EvaluateOptions:
    """Score the ``reconstruction`` of every file in ``predictions`` against the same-named file in ``targets``.

    ``challenge`` picks the target dataset as fastMRI does (singlecoil: ``reconstruction_esc``,
    multicoil: ``reconstruction_rss``); ``auto`` takes ``reconstruction_esc`` when a file has it, else
    ``reconstruction_rss``. ``json`` is where the scores and the protocol go (none: printed only).
    """

    predictions: Path
    targets: Path
    challenge: str = "auto"
    json: Path | None = None
    overwrite: bool = False

    def validate(self) -> None:
        """Refuse an unknown challenge and a report path that names the folders themselves."""
        if self.challenge not in CHALLENGES:
            raise IreconError(f"unknown challenge {self.challenge!r} (choose from {', '.join(CHALLENGES)})")
        if self.json is not None and Path(self.json).suffix.lower() == ".h5":
            raise IreconError("the report is JSON; give it a .json name, not .h5", self.json)

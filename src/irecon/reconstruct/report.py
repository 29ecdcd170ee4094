"""What a reconstruct run did: one :class:`VolumeResult` per input and the run's :class:`ReconstructReport`.

Exit statuses of a run (``ReconstructReport.exit_code``; the command line adds 2 for usage errors):
0 everything was written, 1 a volume failed (it has no reconstruction), 3 every volume was
reconstructed but a preview or the ``--json`` report could not be written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irecon import __version__
from irecon.data.masks import MaskSpec
from irecon.metrics import Scores, mean_scores
from irecon.models.configs import ModelConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_WRITTEN = 3


@dataclass
class VolumeResult:
    """What happened to one input volume.

    ``error`` is set when the volume failed; what was written before the failure stays recorded.
    ``warnings`` name files that were not written (a preview) although the volume was reconstructed.
    """

    input: Path
    output: Path | None = None
    slices: int | None = None
    mask_source: str | None = None
    sampled_lines: int | None = None
    acceleration: float | None = None
    has_target: bool = False
    seconds: float | None = None
    metrics: Scores | None = None
    zero_filled: Scores | None = None
    preview: Path | None = None
    exports: list[Path] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    ran_as: str | None = None
    memory_fit: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The volume's record in the ``--json`` report (schema in docs/formats.md)."""
        return {
            "input": str(self.input),
            "output": _str_or_none(self.output),
            "slices": self.slices,
            "mask_source": self.mask_source,
            "sampled_lines": self.sampled_lines,
            "acceleration": self.acceleration,
            "has_target": self.has_target,
            "seconds": self.seconds,
            "metrics": _scores_dict(self.metrics),
            "zero_filled": _scores_dict(self.zero_filled),
            "preview": _str_or_none(self.preview),
            "exports": [str(p) for p in self.exports],
            "error": self.error,
            "warnings": list(self.warnings),
            **({"ran_as": self.ran_as, "memory_fit": self.memory_fit} if self.ran_as is not None else {}),
        }


@dataclass
class ReconstructReport:
    """The outcome of a run: per-volume results, skipped-file notes, and the model that ran.

    ``json_error`` is the problem met writing the ``--json`` report, if any.
    """

    model_name: str
    config: ModelConfig
    checkpoint: Path | None
    device: str
    batch_size: int
    mask_spec: MaskSpec
    volumes: list[VolumeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    json_error: str | None = None
    threads: int = 1
    virtual_coils: int | None = None

    @property
    def failed(self) -> list[VolumeResult]:
        return [v for v in self.volumes if v.error is not None]

    @property
    def succeeded(self) -> list[VolumeResult]:
        return [v for v in self.volumes if v.error is None]

    @property
    def scored(self) -> list[VolumeResult]:
        return [v for v in self.succeeded if v.metrics is not None]

    @property
    def warnings(self) -> list[str]:
        return [w for v in self.volumes for w in v.warnings]

    @property
    def exit_code(self) -> int:
        """1 if any volume failed, else 3 if a preview or the JSON report was not written, else 0."""
        if self.failed:
            return EXIT_FAILED
        if self.warnings or self.json_error is not None:
            return EXIT_NOT_WRITTEN
        return EXIT_OK

    def mean_metrics(self) -> Scores | None:
        scored = self.scored
        return mean_scores([v.metrics for v in scored]) if scored else None  # type: ignore[misc]

    def mean_zero_filled(self) -> Scores | None:
        scored = [v for v in self.scored if v.zero_filled is not None]
        return mean_scores([v.zero_filled for v in scored]) if scored else None  # type: ignore[misc]

    def mean_seconds(self) -> float | None:
        times = [v.seconds for v in self.succeeded if v.seconds is not None]
        return float(np.mean(times)) if times else None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` report (schema in docs/formats.md)."""
        return {
            "irecon_version": __version__,
            "model": {
                "name": self.model_name,
                "kind": self.config.kind,
                "dims": self.config.dims,
                "checkpoint": _str_or_none(self.checkpoint),
                "config": self.config.to_dict(),
            },
            "device": self.device,
            "batch_size": self.batch_size,
            "virtual_coils": self.virtual_coils,
            "mask": {
                "mask_type": self.mask_spec.mask_type,
                "acceleration": self.mask_spec.accelerations[0],
                "center_fraction": self.mask_spec.center_fractions[0],
            },
            "volumes": [v.to_dict() for v in self.volumes],
            "mean": {
                "scored_volumes": len(self.scored),
                "metrics": _scores_dict(self.mean_metrics()),
                "zero_filled": _scores_dict(self.mean_zero_filled()),
                "seconds": self.mean_seconds(),
            },
            "failed": len(self.failed),
        }


def _scores_dict(scores: Scores | None) -> dict[str, float] | None:
    return None if scores is None else scores.as_dict()


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)

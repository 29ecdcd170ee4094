"""Score a folder of reconstructions against fastMRI targets, as ``fastmri.evaluate`` does.

Each target file is paired with the prediction of the same name; both volumes are centre-cropped to
(W, W), W the target's width, and scored with :func:`irecon.metrics.score_volume` (fastmri's NMSE,
PSNR and SSIM, data range = the target volume's max). Scores are grouped per acceleration and
acquisition (mean and sample sd over volumes) and written with the protocol that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastmri
import numpy as np

from irecon import __version__
from irecon.data.volumes import open_h5
from irecon.errors import IreconError
from irecon.evaluate.options import TARGET_KEYS, EvaluateOptions
from irecon.files import check_writable_file, sha256_of, write_json
from irecon.metrics import Scores, score_volume
from irecon.physics import center_crop

METRICS = ("nmse", "psnr", "ssim")
MASK_ATTRS = ("mask_type", "acceleration", "center_fraction", "num_low_frequency", "seed", "mask_seed")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class VolumeScore:
    """One scored volume: its files, the group it belongs to, the crop and its scores."""

    name: str
    prediction_sha256: str
    target_sha256: str
    target_key: str
    acceleration: str
    acquisition: str
    crop: tuple[int, int]
    mask: dict[str, Any]
    scores: Scores


@dataclass(frozen=True)
class GroupScore:
    """Mean and sample standard deviation (0 for one volume) of each metric over a group's volumes."""

    acceleration: str
    acquisition: str
    volumes: int
    mean: Scores
    sd: Scores


@dataclass
class Evaluation:
    """Every volume's scores, the groups (per acceleration x acquisition, then per acceleration, then all)."""

    options: EvaluateOptions
    volumes: list[VolumeScore] = field(default_factory=list)
    groups: list[GroupScore] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def protocol(self) -> dict[str, Any]:
        """How the scores were made: files with sha256, masks, crop, data range, versions."""
        return {
            "irecon_version": __version__,
            "fastmri_version": getattr(fastmri, "__version__", UNKNOWN),
            "predictions": str(self.options.predictions),
            "targets": str(self.options.targets),
            "challenge": self.options.challenge,
            "metrics": "fastmri.evaluate nmse, psnr, ssim (skimage, per-slice mean) per volume",
            "data_range": "the target volume's max",
            "crop": "both volumes centre-cropped to (W, W), W the target's width (fastmri.evaluate)",
            "files": [
                {
                    "name": v.name,
                    "prediction_sha256": v.prediction_sha256,
                    "target_sha256": v.target_sha256,
                    "target_key": v.target_key,
                    "crop": list(v.crop),
                    "mask": v.mask,
                }
                for v in self.volumes
            ],
            "predictions_without_target": self.ignored,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: groups, volumes and the protocol."""
        return {
            "groups": [
                {
                    "acceleration": g.acceleration,
                    "acquisition": g.acquisition,
                    "volumes": g.volumes,
                    "mean": g.mean.as_dict(),
                    "sd": g.sd.as_dict(),
                }
                for g in self.groups
            ],
            "volumes": [
                {"name": v.name, "acceleration": v.acceleration, "acquisition": v.acquisition, **v.scores.as_dict()}
                for v in self.volumes
            ],
            "protocol": self.protocol(),
        }


def evaluate(options: EvaluateOptions) -> Evaluation:
    """Score every target's prediction; refuse a target without a prediction before writing anything."""
    options.validate()
    for folder in (options.predictions, options.targets):
        if not Path(folder).is_dir():
            raise IreconError("is not a folder of .h5 files", folder)
    if options.json is not None:
        check_writable_file(options.json, overwrite=options.overwrite)
    targets = sorted(p for p in Path(options.targets).iterdir() if p.suffix.lower() == ".h5")
    if not targets:
        raise IreconError("holds no .h5 target files", options.targets)
    predictions = Path(options.predictions)
    for target in targets:
        if not (predictions / target.name).is_file():
            raise IreconError("has no prediction of this name", predictions / target.name)
    result = Evaluation(options)
    result.volumes = [score_file(predictions / t.name, t, options.challenge) for t in targets]
    names = {t.name for t in targets}
    result.ignored = sorted(p.name for p in predictions.iterdir() if p.suffix.lower() == ".h5" and p.name not in names)
    result.groups = group_scores(result.volumes)
    if options.json is not None:
        write_json(options.json, result.to_dict(), overwrite=options.overwrite)
    return result


def score_file(prediction_path: Path, target_path: Path, challenge: str) -> VolumeScore:
    """One volume: fastMRI's target dataset and (W, W) crop, then :func:`irecon.metrics.score_volume`."""
    with open_h5(target_path) as hf:
        key = target_key(hf.keys(), challenge, target_path)
        target = np.asarray(hf[key][()])
        target_attrs = dict(hf.attrs)
    with open_h5(prediction_path) as hf:
        if "reconstruction" not in hf:
            raise IreconError("has no 'reconstruction' dataset", prediction_path)
        prediction = np.asarray(hf["reconstruction"][()])
        prediction_attrs = dict(hf.attrs)
    if target.ndim != 3 or prediction.ndim != 3:
        raise IreconError(
            f"expected (slices, h, w) volumes, got {prediction.shape} against {target.shape}", prediction_path
        )
    crop = (target.shape[-1], target.shape[-1])
    target, prediction = center_crop(target, crop), center_crop(prediction, crop)
    if prediction.shape != target.shape:
        raise IreconError(f"cropped to {prediction.shape} but its target is {target.shape}", prediction_path)
    acceleration = prediction_attrs.get("acceleration", target_attrs.get("acceleration"))
    mask = {k: plain(prediction_attrs.get(k, target_attrs.get(k))) for k in MASK_ATTRS}
    return VolumeScore(
        name=target_path.name,
        prediction_sha256=sha256_of(prediction_path),
        target_sha256=sha256_of(target_path),
        target_key=key,
        acceleration=UNKNOWN if acceleration is None else f"{float(acceleration):g}x",
        acquisition=str(plain(target_attrs.get("acquisition", UNKNOWN))),
        crop=(int(target.shape[-2]), int(target.shape[-1])),
        mask={k: v for k, v in mask.items() if v is not None},
        scores=score_volume(target, prediction),
    )


def target_key(keys: Any, challenge: str, path: Path) -> str:
    """The target dataset: the challenge's, or under ``auto`` ``reconstruction_esc`` before ``reconstruction_rss``."""
    wanted = [TARGET_KEYS[challenge]] if challenge in TARGET_KEYS else list(TARGET_KEYS.values())
    for key in wanted:
        if key in keys:
            return key
    raise IreconError(f"has no target dataset ({' or '.join(wanted)})", path)


def group_scores(volumes: list[VolumeScore]) -> list[GroupScore]:
    """Per acceleration x acquisition, per acceleration over acquisitions ('all'), and everything ('all', 'all')."""
    keys: list[tuple[str, str]] = sorted({(v.acceleration, v.acquisition) for v in volumes})
    keys += [(a, "all") for a in sorted({v.acceleration for v in volumes})] + [("all", "all")]
    groups = []
    for acceleration, acquisition in dict.fromkeys(keys):
        members = [
            v.scores
            for v in volumes
            if acceleration in ("all", v.acceleration) and acquisition in ("all", v.acquisition)
        ]
        groups.append(GroupScore(acceleration, acquisition, len(members), *mean_and_sd(members)))
    return groups


def mean_and_sd(scores: list[Scores]) -> tuple[Scores, Scores]:
    """Mean and sample standard deviation (ddof 1, as fastmri's runstats; 0 for one value) of each metric."""
    columns = [np.array([getattr(s, m) for s in scores], dtype=np.float64) for m in METRICS]
    mean = Scores(*(float(c.mean()) for c in columns))
    sd = Scores(*(float(c.std(ddof=1)) if len(c) > 1 else 0.0 for c in columns))
    return mean, sd


def plain(value: Any) -> Any:
    """An HDF5 attribute as a JSON value (numpy scalars and bytes to python)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if isinstance(value, np.generic) else value

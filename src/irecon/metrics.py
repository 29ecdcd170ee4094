"""Volume scores exactly as fastMRI's leaderboard computes them (``fastmri.evaluate``).

NMSE, PSNR and SSIM per volume with the data range = the target volume's max; SSIM averages the
per-slice skimage SSIM. The figures are fastmri's own functions, only turned into plain floats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from fastmri import evaluate


@dataclass(frozen=True)
class Scores:
    """NMSE (lower is better), PSNR in dB and SSIM (higher is better) of one volume."""

    nmse: float
    psnr: float
    ssim: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score_volume(target: np.ndarray, prediction: np.ndarray) -> Scores:
    """Scores of a (slices, h, w) prediction against its target, as ``fastmri.evaluate`` defines them.

    Computed in the arrays' own float precision (float32 as read from fastMRI files), as fastmri does.
    """
    if target.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
    dtype = np.result_type(target, prediction, np.float32)
    target = np.asarray(target, dtype=dtype)
    prediction = np.asarray(prediction, dtype=dtype)
    return Scores(
        nmse=float(evaluate.nmse(target, prediction)),
        psnr=float(evaluate.psnr(target, prediction)),
        ssim=float(np.asarray(evaluate.ssim(target, prediction)).reshape(-1)[0]),
    )


def mean_scores(scores: list[Scores]) -> Scores:
    """The mean over volumes (fastMRI reports per-volume metrics averaged over volumes)."""
    if not scores:
        raise ValueError("no scores to average")
    return Scores(*(float(np.mean([getattr(s, k) for s in scores])) for k in ("nmse", "psnr", "ssim")))

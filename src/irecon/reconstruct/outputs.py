"""The files a reconstruct run writes per volume: the fastMRI ``.h5`` and the preview PNG."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from torch import Tensor

from irecon.checkpoint import LoadedModel
from irecon.errors import IreconError
from irecon.files import EXISTS_MESSAGE, atomic_write
from irecon.metrics import Scores
from irecon.physics import common_crop
from irecon.plots import preview as preview_figure
from irecon.plots import save_png
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.report import VolumeResult


def refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise IreconError(EXISTS_MESSAGE, path)


def read_header(source: Path) -> bytes | None:
    """The input's ``ismrmrd_header`` XML (None when it has none)."""
    with h5py.File(source, "r") as hf:
        return bytes(hf["ismrmrd_header"][()]) if "ismrmrd_header" in hf else None


def write_reconstruction(
    path: Path, images: np.ndarray, header: bytes | None, loaded: LoadedModel, options: ReconstructOptions
) -> None:
    """``fastmri.utils.save_reconstructions`` format (one float32 dataset ``reconstruction``), plus the
    input's ``ismrmrd_header`` and attrs naming the model, checkpoint and mask, for later export."""
    with atomic_write(path, overwrite=options.overwrite) as tmp, h5py.File(tmp, "w-") as hf:
        hf.create_dataset("reconstruction", data=np.ascontiguousarray(images, dtype=np.float32))
        if header is not None:
            hf.create_dataset("ismrmrd_header", data=np.bytes_(header))
        hf.attrs["model"] = loaded.name
        hf.attrs["checkpoint"] = "" if options.checkpoint is None else str(options.checkpoint)
        hf.attrs["mask_type"] = options.mask_type
        hf.attrs["acceleration"] = options.acceleration


def write_preview(
    path: Path, name: str, images: Tensor, zero_filled: Tensor | None, target: Tensor | None,
    result: VolumeResult,
) -> None:
    """PNG of the middle slice: zero-filled | reconstruction [| target | |error|], metrics in the title."""
    index = images.shape[0] // 2
    if target is not None:
        images, target = common_crop(images, target)
        zero_filled = None if zero_filled is None else common_crop(zero_filled, target)[0]
    recon = images[index].numpy()
    panels = [("zero-filled", zero_filled[index].numpy() if zero_filled is not None else None),
              ("reconstruction", recon)]
    if target is not None:
        truth = target[index].numpy()
        panels += [("target", truth), ("|error|", np.abs(recon - truth))]
    panels = [(label, image) for label, image in panels if image is not None]
    top = float(target.max()) if target is not None else float(recon.max())
    figure = preview_figure(panels, _preview_title(name, index, images.shape[0], result), top)
    save_png(figure, path, overwrite=True)


def _preview_title(name: str, index: int, slices: int, result: VolumeResult) -> str:
    title = f"{name}, slice {index + 1} of {slices}"
    if result.metrics is not None and result.zero_filled is not None:
        title += f"\nmodel: {_scores_text(result.metrics)}\nzero-filled: {_scores_text(result.zero_filled)}"
    return title


def _scores_text(scores: Scores) -> str:
    return f"NMSE {scores.nmse:.4f}  PSNR {scores.psnr:.2f} dB  SSIM {scores.ssim:.4f}"

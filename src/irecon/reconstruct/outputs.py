"""The files a reconstruct run writes per volume: the fastMRI ``.h5`` and the preview PNG (and its figure)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from irecon.data.header import geometry_from_header
from irecon.data.volumes import open_h5
from irecon.errors import IreconError
from irecon.figures import save_png
from irecon.files import EXISTS_MESSAGE, atomic_write
from irecon.metrics import Scores
from irecon.models.checkpoint import LoadedModel
from irecon.physics import common_crop
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.preview import preview as preview_plot
from irecon.reconstruct.report import VolumeResult
from irecon.text import plural


def reconstruction_path(out_dir: Path, source: Path) -> Path:
    """Where volume ``source``'s reconstruction goes: ``OUT_DIR/<input file name>`` (fastMRI's layout).

    Its NIfTI and DICOM outputs go beside it (:func:`irecon.export.output_paths` with the input's stem),
    and its preview to ``PREVIEW_DIR/<stem>.png`` (:func:`preview_path`).
    """
    return out_dir / source.name


def preview_path(preview_dir: Path, source: Path) -> Path:
    """Where volume ``source``'s preview goes: ``PREVIEW_DIR/<input stem>.png``."""
    return preview_dir / f"{source.stem}.png"


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise IreconError(EXISTS_MESSAGE, path)


def read_header(source: Path) -> bytes | None:
    """The input's ``ismrmrd_header`` XML (None when it has none)."""
    with open_h5(source) as hf:
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


def write_preview(path: Path, figure: Figure) -> None:
    """Write a :func:`preview_figure` as PNG (replacing an older preview: the caller checked overwrite)."""
    save_png(figure, path, overwrite=True)


def preview_figure(
    name: str,
    images: Tensor,
    zero_filled: Tensor | None,
    target: Tensor | None,
    result: VolumeResult,
    loaded: LoadedModel,
    options: ReconstructOptions,
    *,
    header: bytes | None = None,
    mask: np.ndarray | None = None,
) -> Figure:
    """The middle slice: zero-filled, the reconstruction [, the target and each one's |error|].

    ``zero_filled`` is None when the model is zero-filling itself, which then shows once. With a
    target the images share its scale; without one each is on its own. The title names the model,
    the checkpoint and the mask and gives the whole volume's scores. ``header`` (the input's ISMRMRD
    XML) gives the pixel spacing for a scale bar; ``mask`` (per k-space column) is drawn small.
    """
    index = images.shape[0] // 2
    if target is not None:
        images, target = common_crop(images, target)
        zero_filled = None if zero_filled is None else common_crop(zero_filled, target)[0]
    pictures = [] if zero_filled is None else [("zero-filled", zero_filled[index].numpy())]
    pictures.append(("zero-filled" if zero_filled is None else "reconstruction", images[index].numpy()))
    errors: list[tuple[str, np.ndarray]] = []
    top = None
    if target is not None:
        truth = target[index].numpy()
        errors = [(f"|{label} - target|", np.abs(image - truth)) for label, image in pictures]
        pictures.append(("target", truth))
        top = float(target.max())
    title = "\n".join(
        [
            f"{name}: slice {index + 1} of {images.shape[0]}",
            f"model: {loaded.name}" if options.checkpoint is not None else f"model: {loaded.name} (no checkpoint)",
            _mask_text(result, options),
            *_scores_lines(result, images.shape[0], zero_filled is None),
        ]
    )
    spacing = None
    if header is not None:
        geometry = geometry_from_header(header, name)
        spacing = None if geometry.spacing_assumed else (geometry.row_spacing, geometry.column_spacing)
    return preview_plot(pictures, errors, title, top, spacing_mm=spacing, mask=mask)


def _mask_text(result: VolumeResult, options: ReconstructOptions) -> str:
    sampled = plural(result.sampled_lines or 0, "line") + " sampled"
    if result.acceleration is not None:
        sampled += f" ({result.acceleration:.1f}x)"
    if result.mask_source == "file":
        return f"mask: the file's own, {sampled}"
    if result.mask_source == "zero lines":
        return f"mask: the file's non-zero k-space lines, {sampled}"
    return (
        f"mask: {options.mask_type}, acceleration {options.acceleration}, centre fraction "
        f"{options.center_fraction:g}, seeded by the file name: {sampled}"
    )


def _scores_lines(result: VolumeResult, slices: int, model_is_zero_filled: bool) -> list[str]:
    if result.metrics is None or result.zero_filled is None:
        return ["no target: not scored; each image on its own grey scale"]
    scores = f"zero-filled {_scores_text(result.zero_filled)}"
    if not model_is_zero_filled:
        scores = f"model {_scores_text(result.metrics)}  |  {scores}"
    return [f"scores of the whole volume ({plural(slices, 'slice')}), not of this slice:", scores]


def _scores_text(scores: Scores) -> str:
    return f"NMSE {scores.nmse:.4f}  PSNR {scores.psnr:.2f} dB  SSIM {scores.ssim:.4f}"

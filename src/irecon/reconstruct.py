"""``irecon reconstruct``: reconstruct whole fastMRI volumes with a trained model and score them.

For every input volume the command writes ``OUT_DIR/<input file name>`` holding one float32 dataset
``reconstruction`` of shape ``(slices, h, w)``, centre-cropped to the header's recon size (320x320
for knee): the format of ``fastmri.utils.save_reconstructions``, which the fastMRI leaderboard and
``fastmri.evaluate`` read. Each file is written under a temporary name in ``OUT_DIR`` and renamed.

Masks follow the i-RIM / fastMRI evaluation protocol: a test-style file (one with a ``mask``
dataset) uses its own mask; any other file gets a mask of ``mask_type``/``acceleration``/
``center_fraction`` seeded by its file name, so every run and every model sees the same mask
(``irecon.data.datasets.load_volume``). When a file has a target, the model and zero-filling under
the same mask are scored with fastMRI's volume metrics (``irecon.metrics.score_volume``).

A problem with one volume (unreadable file, existing output without ``overwrite``, wrong coil
count, out of GPU memory) fails that volume only: it gets a one-line error, no output file, and the
others still run; the command then exits with status 1.

The ``--json`` report's schema is in ``docs/formats.md``. ``formats`` adds NIfTI and DICOM
copies of each reconstruction (:mod:`irecon.export`) beside or instead of the ``.h5``.

Metrics are per volume exactly as ``fastmri.evaluate`` computes them (NMSE, PSNR and SSIM with the
target volume's max as data range); the means are plain means over the scored volumes. ``seconds``
is the wall time of the model on the volume (k-space in host memory to cropped magnitudes in host
memory); reading, writing, the zero-filled baseline and scoring are not included.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from irecon import __version__
from irecon.checkpoint import LoadedModel, load_model
from irecon.data.datasets import Volume, load_volume
from irecon.data.masks import MASK_TYPES, MaskSpec
from irecon.data.volumes import find_volumes
from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.export import FORMATS, SeriesInfo, export_volume
from irecon.files import EXISTS_MESSAGE, atomic_write, check_writable_file, check_writable_folder, write_json
from irecon.inference import reconstruct_volume, score_prediction
from irecon.metrics import Scores, mean_scores
from irecon.models.presets import ModelConfig, build_model, preset
from irecon.physics import common_crop
from irecon.plots import preview as preview_figure
from irecon.plots import save_png

__all__ = ["ReconstructOptions", "ReconstructReport", "VolumeResult", "reconstruct"]

# Models whose channel count is fixed by the coil count they were built for.
_COIL_BOUND_KINDS = ("irim", "rim")


@dataclass(frozen=True)
class ReconstructOptions:
    """Everything ``irecon reconstruct`` takes; the defaults are the command's defaults."""

    inputs: Sequence[str | Path]
    out_dir: str | Path
    checkpoint: str | Path | None = None
    model: str | None = None
    mask_type: str = "random"
    acceleration: int = 4
    center_fraction: float = 0.08
    batch_size: int = 8
    device: str | None = None
    overwrite: bool = False
    json_path: str | Path | None = None
    preview_dir: str | Path | None = None
    formats: Sequence[str] = ("h5",)

    @property
    def mask_spec(self) -> MaskSpec:
        """The mask drawn for files without their own mask."""
        return MaskSpec(self.mask_type, (self.center_fraction,), (self.acceleration,))


@dataclass
class VolumeResult:
    """What happened to one input volume; ``error`` is set (and ``output`` None) when it failed."""

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

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of the module docstring."""
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
        }


@dataclass
class ReconstructReport:
    """The outcome of a run: per-volume results, skipped-file notes, and the model that ran."""

    model_name: str
    config: ModelConfig
    checkpoint: Path | None
    device: str
    batch_size: int
    mask_spec: MaskSpec
    volumes: list[VolumeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    def exit_code(self) -> int:
        """1 if any volume failed, else 0."""
        return 1 if self.failed else 0

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
        """The JSON object of the module docstring."""
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


def reconstruct(options: ReconstructOptions, console: Console | None = None) -> ReconstructReport:
    """Reconstruct every input volume; see the module docstring for outputs and failure handling.

    With a ``console`` (stderr in the CLI) skip notes and per-volume errors are printed as they
    happen and a progress bar is shown on a terminal; without one the run is silent. Raises
    IreconError only for problems with the run as a whole (options, model, folders); problems with
    one volume are recorded in its :class:`VolumeResult`.
    """
    _check_options(options)
    files, notes = find_volumes(options.inputs)
    device = resolve_device(options.device)
    loaded = load_model(options.checkpoint, options.model, device)
    json_path = None
    if options.json_path is not None:
        json_path = check_writable_file(options.json_path, overwrite=options.overwrite)
    out_dir = check_writable_folder(options.out_dir)
    preview_dir = None if options.preview_dir is None else check_writable_folder(options.preview_dir)
    report = ReconstructReport(
        model_name=loaded.name, config=loaded.config,
        checkpoint=None if options.checkpoint is None else Path(options.checkpoint),
        device=str(device), batch_size=options.batch_size, mask_spec=options.mask_spec, notes=notes,
    )
    _say(console, *(f"note: {note}" for note in notes))
    with _cudnn_benchmark_off(), _progress(console) as progress:
        run = _Run(options, loaded, device, out_dir, preview_dir, progress)
        volumes_task = progress.add_task("volumes", total=len(files))
        for path in files:
            result = run.volume(path)
            if result.error is not None:
                _say(console, f"error: {result.error}")
            report.volumes.append(result)
            progress.advance(volumes_task)
            _free_memory(device)
    if json_path is not None:
        write_json(json_path, report.to_dict())
    return report


class _Run:
    """Per-run state and the work done for one volume."""

    def __init__(
        self, options: ReconstructOptions, loaded: LoadedModel, device: torch.device,
        out_dir: Path, preview_dir: Path | None, progress: Progress,
    ) -> None:
        self.options = options
        self.loaded = loaded
        self.device = device
        self.out_dir = out_dir
        self.preview_dir = preview_dir
        self.zero_filled = build_model(preset("zero-filled")).to(device).eval()
        self.names: dict[str, Path] = {}
        self.progress = progress
        self.series = SeriesInfo(
            model=loaded.name, checkpoint="" if options.checkpoint is None else str(options.checkpoint),
            acceleration=options.acceleration, mask_type=options.mask_type,
        )

    def volume(self, path: Path) -> VolumeResult:
        """Reconstruct one volume; any IreconError or GPU OOM becomes this volume's error."""
        try:
            return self._volume(path)
        except IreconError as err:
            return VolumeResult(input=path, error=str(err))
        except torch.OutOfMemoryError:
            return VolumeResult(
                input=path,
                error=f"{path}: out of GPU memory; try a smaller --batch-size (2-D models) "
                "or --device cpu",
            )

    @torch.inference_mode()
    def _volume(self, path: Path) -> VolumeResult:
        output, preview = self._output_paths(path)
        volume = load_volume(path, self.options.mask_spec)
        self._check_coils(volume)
        start = time.perf_counter()
        images = self._run_model(volume)
        result = _describe_volume(path, volume, time.perf_counter() - start)
        needs_zero_filled = volume.target is not None or preview is not None
        zero_filled = self._zero_filled(volume, images) if needs_zero_filled else None
        target = None
        if volume.target is not None:
            images_scored, target = common_crop(images, volume.target)
            result.metrics = score_prediction(images_scored, target)
            result.zero_filled = score_prediction(zero_filled, target)
        header = _read_header(path)
        if "h5" in self.options.formats:
            _write_reconstruction(output, images.numpy(), header, self.loaded, self.options)
            result.output = output
        exports = [f for f in self.options.formats if f != "h5"]
        if exports:
            if header is None:
                raise IreconError("has no ismrmrd_header to take the NIfTI/DICOM geometry from", path)
            result.exports = export_volume(
                images.numpy(), header, self.out_dir, path.stem, exports, self.series, self.options.overwrite,
                series_number=len(self.names),
            )
        if preview is not None:
            _write_preview(preview, path.name, images, zero_filled, target, result)
            result.preview = preview
        return result

    def _output_paths(self, path: Path) -> tuple[Path, Path | None]:
        """Output (and preview) paths for ``path``, refused when they clash or exist."""
        output = self.out_dir / path.name
        first = self.names.setdefault(path.name, path)
        if first != path:
            raise IreconError(
                f"another input has the same file name ({first}); outputs are named after the "
                "input file, so reconstruct them into different --out folders",
                path,
            )
        if output.resolve() == path.resolve():
            raise IreconError("the output would replace this input file; choose another --out", path)
        _refuse_existing(output, self.options.overwrite)
        preview = None
        if self.preview_dir is not None:
            preview = self.preview_dir / f"{path.stem}.png"
            _refuse_existing(preview, self.options.overwrite)
        return output, preview

    def _check_coils(self, volume: Volume) -> None:
        config = self.loaded.config
        coils = volume.kspace.shape[1]
        if config.kind in _COIL_BOUND_KINDS and coils != config.coils:
            raise IreconError(
                f"file has {coils} coil(s) but the model was built for {config.coils}",
                volume.info.path,
            )

    def _run_model(self, volume: Volume) -> Tensor:
        """(S, h, w) magnitudes: 2-D models in batches of ``batch_size`` slices, 3-D models at once."""
        model, slices = self.loaded.model, volume.kspace.shape[0]
        task = self.progress.add_task(f"  {volume.info.path.name}", total=slices)
        try:
            if getattr(model, "dims", 2) == 3:
                images = reconstruct_volume(model, volume, device=self.device)
                self.progress.advance(task, slices)
                return images
            parts = []
            for begin in range(0, slices, self.options.batch_size):
                chunk = volume._replace(kspace=volume.kspace[begin : begin + self.options.batch_size])
                size = chunk.kspace.shape[0]
                parts.append(reconstruct_volume(model, chunk, batch_size=size, device=self.device))
                self.progress.advance(task, size)
            return torch.cat(parts)
        finally:
            self.progress.remove_task(task)

    def _zero_filled(self, volume: Volume, images: Tensor) -> Tensor:
        """Zero-filled magnitudes under the volume's mask (the model's own output if it is zero-filled)."""
        if self.loaded.config.kind == "zero-filled":
            return images
        return reconstruct_volume(
            self.zero_filled, volume, batch_size=self.options.batch_size, device=self.device
        )


def _describe_volume(path: Path, volume: Volume, seconds: float) -> VolumeResult:
    sampled = int(volume.mask.sum().item())
    width = volume.mask.shape[-1]
    return VolumeResult(
        input=path,
        slices=int(volume.kspace.shape[0]),
        mask_source="file" if volume.info.has_mask else "drawn",
        sampled_lines=sampled,
        acceleration=width / sampled if sampled else None,
        has_target=volume.target is not None,
        seconds=seconds,
    )


def _check_options(options: ReconstructOptions) -> None:
    if options.mask_type not in MASK_TYPES:
        raise IreconError(f"unknown mask type {options.mask_type!r} (choose from {', '.join(MASK_TYPES)})")
    options.mask_spec.validate()
    unknown = [f for f in options.formats if f not in ("h5", *FORMATS)]
    if unknown or not options.formats:
        raise IreconError(f"--format must be one or more of h5, {', '.join(FORMATS)}; got {', '.join(unknown) or 'none'}")
    batch = options.batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise IreconError(f"--batch-size must be a whole number >= 1, got {batch!r}")


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise IreconError(EXISTS_MESSAGE, path)


def _read_header(source: Path) -> bytes | None:
    """The input's ``ismrmrd_header`` XML (None when it has none)."""
    with h5py.File(source, "r") as hf:
        return bytes(hf["ismrmrd_header"][()]) if "ismrmrd_header" in hf else None


def _write_reconstruction(
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


def _write_preview(
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


def _scores_dict(scores: Scores | None) -> dict[str, float] | None:
    return None if scores is None else scores.as_dict()


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _say(console: Console | None, *lines: str) -> None:
    """Print whole lines verbatim (no markup, no wrapping), if there is a console."""
    if console is not None:
        for line in lines:
            console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _progress(console: Console | None) -> Progress:
    """A progress bar over volumes and slices, shown only on a terminal."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=console is None or not console.is_terminal,
    )


@contextlib.contextmanager
def _cudnn_benchmark_off() -> Iterator[None]:
    """cuDNN autotuning keeps workspaces per input size, and volume sizes vary (digest §g.1)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _free_memory(device: torch.device) -> None:
    """Release what the last volume left behind before the next, possibly larger, one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

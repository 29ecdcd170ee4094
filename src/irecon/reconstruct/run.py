"""``irecon reconstruct``: reconstruct whole fastMRI volumes with a trained model and score them.

For every input volume the command writes ``OUT_DIR/<input file name>`` holding one float32 dataset
``reconstruction`` of shape ``(slices, h, w)``, centre-cropped to the header's recon size (320x320
for knee): the format of ``fastmri.utils.save_reconstructions``, which the fastMRI leaderboard and
``fastmri.evaluate`` read. A volume's outputs (every ``formats`` entry) are written into a hidden
staging folder in ``OUT_DIR`` and renamed into place together: all of them appear, or none do.

Masks follow the i-RIM / fastMRI evaluation protocol: a test-style file (one with a ``mask``
dataset) uses its own mask; any other file gets a mask of ``mask_type``/``acceleration``/
``center_fraction`` seeded by its file name, so every run and every model sees the same mask
(``irecon.data.datasets.load_volume``). When a file has a target, the model and zero-filling under
the same mask are scored with fastMRI's volume metrics (``irecon.metrics.score_volume``).

Problems with the run as a whole (options, the model, a coil count the model was not built for,
unwritable output folders or JSON file) are refused before anything is created. A problem with one
volume (unreadable file, existing output without ``overwrite``, out of GPU memory) fails that
volume only: it gets a one-line error, its record keeps what was written before the failure, and
the others still run. A preview that cannot be written is a warning: the volume keeps its output
and scores. The exit statuses are in :mod:`irecon.reconstruct.report`.

The ``--json`` report's schema is in ``docs/formats.md``; a failure to write it is kept in the
report (``json_error``), so the results are still shown. ``formats`` adds NIfTI and DICOM
copies of each reconstruction (:mod:`irecon.export`) beside or instead of the ``.h5``.

Metrics are per volume exactly as ``fastmri.evaluate`` computes them (NMSE, PSNR and SSIM with the
target volume's max as data range); the means are plain means over the scored volumes. ``seconds``
is the wall time of the model on the volume (k-space in host memory to cropped magnitudes in host
memory); reading, writing, the zero-filled baseline and scoring are not included. The progress
line printed per volume off a terminal gives the whole volume's wall time.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor

from irecon.data.datasets import Volume, load_volume
from irecon.data.volumes import find_volumes, read_volume_info
from irecon.device import resolve_device
from irecon.errors import IreconError
from irecon.export import SeriesInfo, export_volume, refuse_existing_outputs
from irecon.files import EXISTS_MESSAGE, check_writable_file, check_writable_folder, staged_outputs, write_json
from irecon.inference import reconstruct_slabs, reconstruct_volume, score_prediction, slab_overlap, slab_starts
from irecon.models.checkpoint import LoadedModel, load_model
from irecon.models.onnx_runtime import load_onnx_model
from irecon.models.presets import preset
from irecon.physics import common_crop
from irecon.planning.fit import MemoryFit, resolve_budget
from irecon.planning.runs import fit_inference
from irecon.reconstruct.defaults import default_checkpoint
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.outputs import (
    preview_figure,
    preview_path,
    read_header,
    reconstruction_path,
    refuse_existing,
    write_preview,
    write_reconstruction,
)
from irecon.reconstruct.report import ReconstructReport, VolumeResult
from irecon.text import human_bytes, plural, progress_bar, say

_NAMES_SHOWN = 3  # files named in the coil-count refusal


def reconstruct(options: ReconstructOptions, console: Console | None = None) -> ReconstructReport:
    """Reconstruct every input volume; see the module docstring for outputs and failure handling.

    With a ``console`` (stderr in the CLI) skip notes, per-volume errors and warnings are printed as
    they happen, with a progress bar on a terminal and one progress line per volume elsewhere;
    without one the run is silent. Raises IreconError only for problems with the run as a whole,
    before anything is created; problems with one volume are recorded in its :class:`VolumeResult`.
    """
    options.validate()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    files, notes = find_volumes(options.inputs)
    _check_names(files)
    device = resolve_device(options.device)
    chosen = options.checkpoint is None and options.model is None and options.onnx is None
    if chosen:
        options = replace(options, checkpoint=default_checkpoint(files))
    loaded = (
        load_model(options.checkpoint, options.model, device)
        if options.onnx is None
        else load_onnx_model(options.onnx, device)
    )
    virtual = _virtual_coils(options, loaded)
    if virtual is None:
        _check_coils(files, loaded, options.checkpoint)
    else:
        _check_virtual_coils(files, virtual, options.checkpoint)
    new_folders = _missing_folders(options)
    budget = None if options.max_memory is None else resolve_budget(options.max_memory, device)
    json_path, out_dir, preview_dir = _prepare_outputs(options)
    report = ReconstructReport(
        model_name=loaded.name,
        config=loaded.config,
        checkpoint=None if options.checkpoint is None else Path(options.checkpoint),
        device=str(device),
        batch_size=options.batch_size,
        mask_spec=options.mask_spec,
        notes=notes,
        threads=torch.get_num_threads(),
        virtual_coils=virtual,
    )
    say(console, *(f"note: {note}" for note in notes))
    if chosen:
        say(console, f"model: {loaded.name}, the bundled i-RIM for these inputs (no «model» or «checkpoint» given)")
    plain_progress = console is not None and not console.is_terminal
    with _cudnn_benchmark_off(), progress_bar(console, "{task.description}") as progress:
        run = _Run(options, loaded, device, out_dir, preview_dir, progress, virtual, budget)
        volumes_task = progress.add_task("volumes", total=len(files))
        for number, path in enumerate(files, start=1):
            started = time.perf_counter()
            result = run.volume(path)
            report.volumes.append(result)
            if result.mask_source == "zero lines":
                say(
                    console,
                    f"note: {path}: no mask dataset; its mask is its non-zero k-space lines ({result.sampled_lines} sampled)",
                )
            if result.error is None and result.ran_as is not None:
                say(console, f"{path.name}: {result.ran_as}")
            if result.error is not None:
                say(console, f"error: {result.error}")
            elif plain_progress:
                seconds = time.perf_counter() - started
                say(console, _progress_line(result, number, len(files), seconds))
            say(console, *(f"warning: {warning}" for warning in result.warnings))
            progress.advance(volumes_task)
            _free_memory(device)
    if json_path is not None:
        try:
            write_json(json_path, report.to_dict())
        except IreconError as err:
            report.json_error = str(err)
    for folder in new_folders:  # a folder this run created and left empty (every volume failed) goes
        with contextlib.suppress(OSError):
            folder.rmdir()
    return report


class _Run:
    """Per-run state and the work done for one volume."""

    def __init__(
        self,
        options: ReconstructOptions,
        loaded: LoadedModel,
        device: torch.device,
        out_dir: Path,
        preview_dir: Path | None,
        progress: Progress,
        virtual_coils: int | None = None,
        budget: tuple[int, str] | None = None,
    ) -> None:
        self.options = options
        self.virtual_coils = virtual_coils
        self.budget = budget
        self.fits: dict[tuple[int, ...], MemoryFit] = {}
        self.ran_as: tuple[str, MemoryFit] | None = None
        self.loaded = loaded
        self.device = device
        self.out_dir = out_dir
        self.preview_dir = preview_dir
        self.model_is_zero_filled = not loaded.config.learned
        self.zero_filled = preset("zero-filled").build().to(device).eval()
        self.names: dict[str, Path] = {}
        self.progress = progress
        self.series = SeriesInfo(
            model=loaded.name,
            checkpoint="" if options.checkpoint is None else str(options.checkpoint),
            acceleration=options.acceleration,
            mask_type=options.mask_type,
        )

    def volume(self, path: Path) -> VolumeResult:
        """Reconstruct one volume; any IreconError or GPU OOM becomes this volume's error."""
        result = VolumeResult(input=path)
        try:
            self._volume(path, result)
        except IreconError as err:
            result.error = str(err)
        except torch.OutOfMemoryError:
            result.error = str(
                IreconError("out of GPU memory; try a smaller «batch_size» (2-D models) or «device» cpu", path)
            )
        return result

    @torch.inference_mode()
    def _volume(self, path: Path, result: VolumeResult) -> None:
        """Fill ``result`` step by step, so that a failure leaves what was written recorded."""
        output = self._output_path(path)
        volume = load_volume(path, self.options.mask_spec, virtual_coils=self.virtual_coils)
        fit = self._memory_fit(volume)
        start = time.perf_counter()
        images = self._run_model(volume, fit)
        _describe_volume(result, volume, time.perf_counter() - start)
        if self.ran_as is not None:
            result.ran_as, result.memory_fit = self.ran_as[0], self.ran_as[1].to_dict()
        preview = self._preview_path(path, result)
        needs_zero_filled = volume.target is not None or (preview is not None and not self.model_is_zero_filled)
        zero_filled = self._zero_filled(volume, images) if needs_zero_filled else None
        target = None
        if volume.target is not None:
            images_scored, target = common_crop(images, volume.target)
            result.metrics = score_prediction(images_scored, target)
            result.zero_filled = score_prediction(zero_filled, target)
        header = read_header(path)
        exports = [f for f in self.options.formats if f != "h5"]
        if exports and header is None:
            raise IreconError("has no ismrmrd_header to take the NIfTI/DICOM geometry from", path)
        refuse_existing_outputs(self.out_dir, path.stem, exports, self.options.overwrite)
        staged: list[Path] = []
        with staged_outputs(self.out_dir) as staging:  # every format of the volume, or none of them
            if "h5" in self.options.formats:
                write_reconstruction(staging.area / output.name, images.numpy(), header, self.loaded, self.options)
            if exports:
                staged = export_volume(
                    images.numpy(),
                    header,
                    staging.area,
                    path.stem,
                    exports,
                    self.series,
                    self.options.overwrite,
                    series_number=len(self.names),
                )
            staging.commit(self.options.overwrite)
            result.exports = [staging.final(p) for p in staged]
        result.output = output if "h5" in self.options.formats else None
        if preview is not None:
            shown_zero_filled = None if self.model_is_zero_filled else zero_filled
            figure = preview_figure(
                path.name,
                images,
                shown_zero_filled,
                target,
                result,
                self.loaded,
                self.options,
                header=header,
                mask=volume.mask.reshape(-1).cpu().numpy(),
            )
            try:
                write_preview(preview, figure)
            except IreconError as err:
                result.warnings.append(
                    f"{preview}: {err.problem}; the preview was not written (the reconstruction was)"
                )
            else:
                result.preview = preview

    def _output_path(self, path: Path) -> Path:
        """The ``.h5`` output path for ``path``, refused when it clashes, or exists and is to be written."""
        output = reconstruction_path(self.out_dir, path)
        self.names.setdefault(path.name, path)  # same names were refused before any work
        if output.resolve() == path.resolve():
            raise IreconError("the output would replace this input file; choose another «out_dir»", path)
        if "h5" in self.options.formats:
            refuse_existing(output, self.options.overwrite)
        return output

    def _preview_path(self, path: Path, result: VolumeResult) -> Path | None:
        """The preview path, or None (with a warning when an existing preview is kept)."""
        if self.preview_dir is None:
            return None
        preview = preview_path(self.preview_dir, path)
        if preview.exists() and not self.options.overwrite:
            result.warnings.append(f"{preview}: {EXISTS_MESSAGE}; the preview was not written")
            return None
        return preview

    def _run_model(self, volume: Volume, fit: MemoryFit | None) -> Tensor:
        """(S, h, w) magnitudes: 2-D models in batches of ``batch_size`` (or the fit's) slices, 3-D models at once or in the fit's slabs."""
        model, slices = self.loaded.model, volume.kspace.shape[0]
        task = self.progress.add_task(f"  {volume.info.path.name}", total=slices)
        try:
            if getattr(model, "dims", 2) == 3:
                if fit is not None and fit.value < slices:
                    images = reconstruct_slabs(model, volume, fit.value, device=self.device)
                else:
                    images = reconstruct_volume(model, volume, device=self.device)
                self.progress.advance(task, slices)
                return images
            parts = []
            batch = self.options.batch_size if fit is None else fit.value
            for begin in range(0, slices, batch):
                chunk = volume._replace(kspace=volume.kspace[begin : begin + batch])
                size = chunk.kspace.shape[0]
                parts.append(reconstruct_volume(model, chunk, batch_size=size, device=self.device))
                self.progress.advance(task, size)
            return torch.cat(parts)
        finally:
            self.progress.remove_task(task)

    def _memory_fit(self, volume: Volume) -> MemoryFit | None:
        """Under ``--max-memory``: the planner's slab (3-D) or slice batch (2-D) for this volume's size, and how it runs."""
        self.ran_as = None
        config, slices = self.loaded.config, int(volume.kspace.shape[0])
        if self.budget is None or not config.learned:
            return None
        largest = slices if config.dims == 3 else min(self.options.batch_size, slices)
        key = (slices if config.dims == 3 else largest, volume.info.num_coils, *volume.info.kspace_shape)
        if key not in self.fits:
            self.fits[key] = fit_inference(config, volume.info, self.budget, largest, self.device)
        fit = self.fits[key]
        if config.dims == 2:
            how = f"batches of {plural(fit.value, 'slice')}"
        elif fit.value >= slices:
            how = "whole volume"
        else:
            starts = slab_starts(slices, fit.value, slab_overlap(fit.value))
            how = (
                f"{plural(len(starts), 'slab')} of {fit.value} slices (overlap {slab_overlap(fit.value)}, linear ramps)"
            )
        predicted = f"predicted peak {human_bytes(fit.predicted_bytes)}"
        measured = "" if fit.verified_bytes is None else f", measured {human_bytes(fit.verified_bytes)}"
        self.ran_as = (f"{how}; {predicted}{measured} within {human_bytes(fit.budget_bytes)}", fit)
        return fit

    def _zero_filled(self, volume: Volume, images: Tensor) -> Tensor:
        """Zero-filled magnitudes under the volume's mask (the model's own output if it is zero-filled)."""
        if self.model_is_zero_filled:
            return images
        return reconstruct_volume(self.zero_filled, volume, batch_size=self.options.batch_size, device=self.device)


def _progress_line(result: VolumeResult, number: int, total: int, seconds: float) -> str:
    """'reconstructed 1/2 x.h5 in 0.9 s (model 0.46 s; ...): where its outputs went'."""
    written = [p for p in (result.output, *result.exports, result.preview) if p is not None]
    return (
        f"reconstructed {number}/{total} {result.input.name} in {seconds:.1f} s (model {result.seconds or 0:.2f} s, "
        f"the table's time; the rest is reading, scoring and writing): {', '.join(map(str, written))}"
    )


def _describe_volume(result: VolumeResult, volume: Volume, seconds: float) -> None:
    sampled = int(volume.mask.sum().item())
    result.slices = int(volume.kspace.shape[0])
    result.mask_source = volume.mask_source
    result.sampled_lines = sampled
    result.acceleration = volume.mask.shape[-1] / sampled if sampled else None
    result.has_target = volume.target is not None
    result.seconds = seconds


def _check_names(files: Sequence[Path]) -> None:
    """Outputs are named after their input: two inputs of one name are refused before any work."""
    first: dict[str, Path] = {}
    for path in files:
        earlier = first.setdefault(path.name, path)
        if earlier != path:
            raise IreconError(
                f"another input has the same file name ({earlier}); outputs are named after the "
                "input file, so reconstruct them into different «out_dir» folders",
                path,
            )


def _check_coils(files: Sequence[Path], loaded: LoadedModel, checkpoint: str | Path | None) -> None:
    """Refuse, from the headers alone, inputs whose coil count the model was not built for.

    Unreadable files are left to fail on their own when their turn comes.
    """
    config = loaded.config
    if not config.coil_bound:
        return
    others = []
    for path in files:
        try:
            info = read_volume_info(path)
        except IreconError:
            continue
        if info.num_coils != config.coils:
            others.append(info)
    if not others:
        return
    names = ", ".join(f"{info.path} ({plural(info.num_coils, 'coil')})" for info in others[:_NAMES_SHOWN])
    if len(others) > _NAMES_SHOWN:
        names += ", ..."
    takes = "single-coil k-space" if config.coils == 1 else f"{config.coils}-coil k-space"
    raise IreconError(
        f"the model takes {takes}, but {len(others)} of {plural(len(files), 'input')} "
        f"{'has' if len(others) == 1 else 'have'} another coil count: {names}; reconstruct them with a "
        "checkpoint trained on such files, or with «model» zero-filled",
        checkpoint,
    )


def _virtual_coils(options: ReconstructOptions, loaded: LoadedModel) -> int | None:
    """The coil compression of the run: ``--virtual-coils``, else the checkpoint's; they must agree."""
    asked, trained = options.virtual_coils, loaded.virtual_coils
    if asked is not None and asked < 1:
        raise IreconError(f"«virtual_coils» must be at least 1, got {asked}")
    if asked is not None and trained is not None and asked != trained:
        raise IreconError(
            f"the checkpoint was trained on {trained} virtual coils, not {asked}; leave out «virtual_coils»",
            options.checkpoint,
        )
    virtual = trained if asked is None else asked
    config = loaded.config
    if virtual is not None and config.coil_bound and config.coils != virtual:
        raise IreconError(
            f"the model takes {config.coils}-coil k-space, not {virtual} virtual coils; "
            f"use «virtual_coils» {config.coils} or leave it out",
            options.checkpoint,
        )
    return virtual


def _check_virtual_coils(files: Sequence[Path], virtual: int, checkpoint: str | Path | None) -> None:
    """Refuse, from the headers alone, inputs with fewer coils than the virtual coils (compression only reduces)."""
    fewer = []
    for path in files:
        try:
            info = read_volume_info(path)
        except IreconError:
            continue
        if info.challenge == "singlecoil" or info.num_coils < virtual:
            fewer.append(info)
    if not fewer:
        return
    names = ", ".join(f"{info.path.name} ({plural(info.num_coils, 'coil')})" for info in fewer[:_NAMES_SHOWN])
    if len(fewer) > _NAMES_SHOWN:
        names += ", ..."
    raise IreconError(
        f"the model takes {virtual} virtual coils, compressed from at least as many physical ones, but "
        f"{len(fewer)} of {plural(len(files), 'input')} {'has' if len(fewer) == 1 else 'have'} fewer: {names}",
        checkpoint,
    )


def _prepare_outputs(options: ReconstructOptions) -> tuple[Path | None, Path, Path | None]:
    """The JSON file, output and preview folders: all proven writable before any is created.

    The JSON file's folder must exist, unless it is one the run creates anyway: the output or
    preview folder or a folder above them (``--out recon/val --json recon/val.json``).
    """
    folders = [Path(options.out_dir)] + ([] if options.preview_dir is None else [Path(options.preview_dir)])
    for folder in folders:
        check_writable_folder(folder, create=False)
    json_path = None
    if options.json_path is not None:
        json_path = Path(options.json_path)
        created = {f.resolve() for folder in folders for f in (folder, *folder.parents)}
        if json_path.parent.exists() or json_path.parent.resolve() not in created:
            check_writable_file(json_path, overwrite=options.overwrite)
        elif json_path.exists() and not options.overwrite:
            raise IreconError(EXISTS_MESSAGE, json_path)
    out_dir = check_writable_folder(options.out_dir)
    preview_dir = None if options.preview_dir is None else check_writable_folder(options.preview_dir)
    return json_path, out_dir, preview_dir


def _missing_folders(options: ReconstructOptions) -> list[Path]:
    """The output and preview folders (and folders above them) that do not exist yet, deepest first."""
    missing: list[Path] = []
    for folder in [options.out_dir, options.preview_dir]:
        if folder is None:
            continue
        for candidate in (Path(folder), *Path(folder).parents):
            if candidate.exists():
                break
            missing.append(candidate)
    return sorted(set(missing), key=lambda f: len(f.parts), reverse=True)


@contextlib.contextmanager
def _cudnn_benchmark_off() -> Iterator[None]:
    """cuDNN autotuning keeps a workspace per input size, and volume sizes vary: off for the run."""
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

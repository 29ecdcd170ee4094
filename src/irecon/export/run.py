"""Export reconstruction files (or an input's fastMRI target) to NIfTI and DICOM.

``export_volume`` writes one volume already in memory, as the reconstruct command does right after
its ``.h5``; ``export_reconstruction`` reads ``.h5`` files and collects one error line per bad
volume while the others are still written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from irecon.data.header import (
    SPACING_ASSUMED,
    geometry_from_header,
    scan_parameters_from_header,
)
from irecon.data.volumes import find_volumes, open_h5
from irecon.errors import IreconError
from irecon.export.dicom import SeriesInfo, write_dicom_series
from irecon.export.folders import refuse_existing_folder
from irecon.export.images import check_images
from irecon.export.nifti import write_nifti
from irecon.export.options import DATASETS, ExportOptions, check_formats
from irecon.files import EXISTS_MESSAGE, check_writable_folder

HEADER_KEY = "ismrmrd_header"
NIFTI_SUFFIX = ".nii.gz"
DICOM_SUFFIX = "_dicom"


@dataclass
class ExportResult:
    """What an export wrote, the one-line errors of the volumes it could not, and notes."""

    written: list[Path] = field(default_factory=list)
    errors: list[IreconError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every volume was exported, 1 otherwise."""
        return 1 if self.errors else 0


def output_paths(out_dir: str | Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Where each format of volume ``stem`` goes: ``stem.nii.gz`` and the folder ``stem_dicom``."""
    suffix = {"nifti": NIFTI_SUFFIX, "dicom": DICOM_SUFFIX}
    return [Path(out_dir) / f"{stem}{suffix[f]}" for f in formats]


def export_volume(
    images: np.ndarray,
    header_xml: bytes | str,
    out_dir: str | Path,
    stem: str,
    formats: Sequence[str],
    series_info: SeriesInfo,
    overwrite: bool = False,
    *,
    series_number: int = 1,
) -> list[Path]:
    """Write ``images`` (slices, rows, columns) in each of ``formats``; return the paths written.

    Geometry comes from ``header_xml``. Every target is checked before anything is written, so
    an existing output (without ``overwrite``) leaves no other output behind. Raises IreconError.
    """
    formats = check_formats(formats)
    source = series_info.source or None
    volume = check_images(images, source)
    geometry = geometry_from_header(header_xml, source)
    scan = scan_parameters_from_header(header_xml, source)
    check_writable_folder(out_dir)
    targets = refuse_existing_outputs(out_dir, stem, formats, overwrite)
    written = []
    for fmt, target in zip(formats, targets, strict=True):
        if fmt == "nifti":
            write_nifti(
                volume,
                geometry,
                target,
                series_info.label(),
                overwrite,
                provenance=_provenance(series_info),
            )
        else:
            write_dicom_series(
                volume,
                geometry,
                target,
                series_info,
                overwrite,
                scan=scan,
                series_number=series_number,
            )
        written.append(target)
    return written


def refuse_existing_outputs(out_dir: str | Path, stem: str, formats: Sequence[str], overwrite: bool) -> list[Path]:
    """The :func:`output_paths` of volume ``stem``; IreconError for one that exists, unless ``overwrite``."""
    targets = output_paths(out_dir, stem, formats)
    for fmt, target in zip(formats, targets, strict=True):
        if fmt == "dicom":
            refuse_existing_folder(target, overwrite)
        elif target.exists() and not overwrite:
            raise IreconError(EXISTS_MESSAGE, target)
    return targets


def export_reconstruction(options: ExportOptions) -> ExportResult:
    """Export every volume named by ``options``; a bad volume becomes one error, not a stop.

    Raises IreconError only for problems with the whole run: bad formats or dataset, no input
    files, an output folder that cannot be written, or a ``header_from`` file with several inputs.
    """
    options.validate()
    formats = check_formats(options.formats)
    files, notes = find_volumes(options.inputs)
    header_from = None if options.header_from is None else Path(options.header_from)
    if header_from is not None:
        if not header_from.exists():
            raise IreconError("no such file or folder", header_from)
        if header_from.is_file() and len(files) > 1:
            raise IreconError(
                f"is one file but {len(files)} volumes are exported; pass the folder of inputs",
                header_from,
            )
    check_writable_folder(options.out_dir)
    result = ExportResult(notes=list(notes))
    study = SeriesInfo(dataset=options.dataset, description=options.description)
    for number, path in enumerate(files, start=1):
        try:
            images, header, attrs = read_export_volume(path, options.dataset, header_from)
            info = _series_info(study, path, attrs)
            stem = path.stem if options.dataset == DATASETS[0] else f"{path.stem}_{options.dataset}"
            result.written.extend(
                export_volume(
                    images,
                    header,
                    options.out_dir,
                    stem,
                    formats,
                    info,
                    options.overwrite,
                    series_number=number,
                )
            )
            if SPACING_ASSUMED in geometry_from_header(header, path).assumptions:
                result.notes.append(
                    f"{path}: the ismrmrd_header lacks reconSpace field of view or matrix size; 1 mm spacing assumed"
                )
        except IreconError as err:
            result.errors.append(err)
    return result


def read_export_volume(
    path: str | Path, dataset: str = "reconstruction", header_from: str | Path | None = None
) -> tuple[np.ndarray, bytes, dict[str, Any]]:
    """Read ``dataset`` as float32, the ISMRMRD header and the attrs of one ``.h5`` file.

    The file's own ``ismrmrd_header`` is used when present, else the one in ``header_from`` (a
    file, or a folder holding a file of the same name). Raises IreconError naming the file.
    """
    path = Path(path)
    with open_h5(path) as hf:
        if dataset not in hf or not isinstance(hf[dataset], h5py.Dataset):
            others = [k for k in DATASETS if k in hf and k != dataset]
            hint = f"; it has {others[0]} (pass «dataset» {others[0]})" if others else ""
            raise IreconError(f"no {dataset} dataset{hint}", path)
        images = check_images(hf[dataset][()], path)
        header = _header_bytes(hf, path)
        attrs = {str(k): _plain(v) for k, v in hf.attrs.items()}
    if header is None:
        header = _header_from(path, Path(header_from) if header_from else None, images.shape[0])
    return images, header, attrs


def _header_from(path: Path, header_from: Path | None, slices: int) -> bytes:
    """The header of the fastMRI input matching ``path``, checked against its slice count."""
    if header_from is None:
        raise IreconError(
            f"no {HEADER_KEY} dataset; pass «header_from» with the fastMRI input file or its folder",
            path,
        )
    source = header_from / path.name if header_from.is_dir() else header_from
    if not source.is_file():
        raise IreconError(f"no {path.name} here to take the {HEADER_KEY} from", header_from)
    with open_h5(source) as hf:
        header = _header_bytes(hf, source)
        kspace = hf.get("kspace")
        has_kspace = isinstance(kspace, h5py.Dataset) and kspace.ndim > 0
        input_slices = int(kspace.shape[0]) if has_kspace else None
    if header is None:
        raise IreconError(f"no {HEADER_KEY} dataset", source)
    if input_slices is not None and input_slices != slices:
        raise IreconError(f"has {input_slices} slices but {path} has {slices}; is it the right input file?", source)
    return header


def _header_bytes(hf: h5py.File, path: Path) -> bytes | None:
    """The ``ismrmrd_header`` as bytes, None when absent; IreconError when it is not text."""
    if HEADER_KEY not in hf:
        return None
    node = hf[HEADER_KEY]
    value = node[()] if isinstance(node, h5py.Dataset) else None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise IreconError(f"{HEADER_KEY} is not an XML string", path)
    return value


def _series_info(study: SeriesInfo, path: Path, attrs: dict[str, Any]) -> SeriesInfo:
    """The run's SeriesInfo with this file's name and, for reconstructions, its model attrs."""
    if study.dataset != "reconstruction":
        return replace(study, source=path.name)
    acceleration = attrs.get("acceleration")
    return replace(
        study,
        source=path.name,
        model=str(attrs.get("model", "")),
        checkpoint=str(attrs.get("checkpoint", "")),
        acceleration=int(acceleration) if isinstance(acceleration, (int, float)) else None,
        mask_type=str(attrs.get("mask_type", "")),
    )


def _provenance(info: SeriesInfo) -> dict[str, Any]:
    """The NIfTI comment extension's JSON: what made the images and from which file."""
    return {
        "software": "irecon",
        "dataset": info.dataset,
        "model": info.model,
        "checkpoint": info.checkpoint,
        "acceleration": info.acceleration,
        "mask_type": info.mask_type,
        "source": info.source,
    }


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value

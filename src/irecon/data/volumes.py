"""Find, read and validate fastMRI HDF5 volumes.

Every problem with a user's file is raised as one :class:`~irecon.errors.IreconError` that names the
file and says what is wrong, so the CLI can print one line instead of an ``OSError``,
``KeyError`` or ``RuntimeError`` traceback from h5py or fastMRI. Header semantics follow fastMRI's
``SliceDataset._retrieve_metadata`` exactly, using fastMRI's own ``et_query``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from irecon.data.header import fastmri_fields
from irecon.errors import IreconError
from irecon.files import missing_problem, os_problem

CHALLENGES = ("singlecoil", "multicoil")
# Target datasets in order of preference, per challenge (fastMRI's ``recons_key``, with the
# README's note that single-coil files also carry an RSS target).
TARGET_KEYS = {
    "singlecoil": ("reconstruction_esc", "reconstruction_rss"),
    "multicoil": ("reconstruction_rss",),
}


UNREADABLE = "not a readable HDF5 file (not HDF5, truncated or corrupt)"
READ_FAILED = "not a readable HDF5 file: reading failed (truncated or corrupt)"
LOCKED = "file is locked by another process (being written?)"
SliceSelection = slice | int  # one slice, or a contiguous run of slices


@dataclass(frozen=True)
class VolumeInfo:
    """What irecon needs to know about one fastMRI volume, read without loading its k-space.

    ``padding_left``/``padding_right``, ``encoding_size`` and ``recon_size`` come from the ISMRMRD
    header exactly as fastMRI's ``SliceDataset`` derives them; they are not HDF5 attributes.
    """

    path: Path
    challenge: str
    num_slices: int
    num_coils: int
    kspace_shape: tuple[int, int]
    target_key: str | None
    target_shape: tuple[int, int] | None
    has_mask: bool
    attrs: dict[str, Any] = field(repr=False)
    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int

    @property
    def is_test_style(self) -> bool:
        """True for a test/challenge file: it carries its own sampling mask and no target."""
        return self.has_mask and self.target_key is None

    @property
    def crop_size(self) -> tuple[int, int]:
        """The image size to crop reconstructions to: the header's recon size (x, y)."""
        return (self.recon_size[0], self.recon_size[1])

    @property
    def max_value(self) -> float | None:
        """The ``max`` attribute (fastMRI's PSNR/SSIM data range), or None when the file lacks it.

        This never reads the target; callers that need a data range without ``max`` use the
        target volume's maximum, as ``fastmri.evaluate`` does.
        """
        value = self.attrs.get("max")
        return None if value is None else float(value)


def find_volumes(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into the list of ``.h5`` files to process, plus notes on skips.

    A folder contributes the ``*.h5`` files directly inside it, sorted (subfolders are not
    searched). Non-``.h5`` files, named or found in a folder, are skipped with a note, so a shell
    glob that catches a README does not stop a run. Duplicates are dropped.

    Raises IreconError for a path that does not exist, a folder without ``.h5`` files, or when no
    ``.h5`` file is left at all.
    """
    files: list[Path] = []
    notes: list[str] = []
    seen: set[Path] = set()
    given = [Path(p) for p in paths]
    if not given:
        raise IreconError("no input files or folders given")

    def add(candidate: Path) -> None:
        key = candidate.resolve()
        if key not in seen:
            seen.add(key)
            files.append(candidate)

    for path in given:
        if path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as exc:
                raise IreconError(f"cannot list folder ({os_problem(exc)})", path) from None
            h5_files = [e for e in entries if e.is_file() and _is_h5_name(e)]
            if not h5_files:
                raise IreconError("folder has no .h5 files (subfolders are not searched)", path)
            notes.extend(f"skipped {e}: not an .h5 file" for e in entries if e.is_file() and not _is_h5_name(e))
            for entry in h5_files:
                add(entry)
        elif path.exists():
            if _is_h5_name(path):
                add(path)
            else:
                notes.append(f"skipped {path}: not an .h5 file")
        else:
            raise IreconError(missing_problem(path), path)
    if not files:
        raise IreconError(f"no .h5 files among {', '.join(str(p) for p in given)}")
    return files, notes


def read_volume_info(path: str | Path, check_values: bool = False) -> VolumeInfo:
    """Read and validate a volume's layout, header, target and mask without loading its k-space.

    Checks that the file is readable HDF5; ``kspace`` is a complex rank-3 (single-coil) or
    rank-4 (multi-coil) array with at least one slice; ``ismrmrd_header`` parses with the fields
    fastMRI's ``SliceDataset`` reads; the target matches the slice count and the header's recon
    size; and a ``mask`` is 1-D 0/1 of length W. With ``check_values`` it also scans the k-space
    (slice by slice, to bound memory) and the target for NaN/Inf.
    """
    path = Path(path)
    with open_h5(path) as hf:
        kspace = _kspace_dataset(hf, path)
        challenge = "singlecoil" if kspace.ndim == 3 else "multicoil"
        num_slices = int(kspace.shape[0])
        num_coils = 1 if challenge == "singlecoil" else int(kspace.shape[1])
        height, width = (int(n) for n in kspace.shape[-2:])

        encoding_size, recon_size, center, maximum = _read_header(hf, path)
        padding_left = encoding_size[1] // 2 - center
        padding_right = padding_left + maximum + 1

        target_key = next((k for k in TARGET_KEYS[challenge] if k in hf), None)
        target_shape = None
        if target_key is not None:
            target_shape = _check_target(hf, path, target_key, num_slices, recon_size)

        has_mask = "mask" in hf
        if has_mask:
            _check_mask(_read_mask_array(hf, path), width, path)

        attrs = {str(k): _plain(v) for k, v in hf.attrs.items()}
        _check_max(attrs, path)

        if check_values:
            for index in range(num_slices):
                if not np.isfinite(kspace[index]).all():
                    raise IreconError(f"kspace slice {index} contains NaN or Inf values", path)
            if target_key is not None and not np.isfinite(hf[target_key][()]).all():
                raise IreconError(f"{target_key} contains NaN or Inf values", path)

    return VolumeInfo(
        path=path,
        challenge=challenge,
        num_slices=num_slices,
        num_coils=num_coils,
        kspace_shape=(height, width),
        target_key=target_key,
        target_shape=target_shape,
        has_mask=has_mask,
        attrs=attrs,
        encoding_size=encoding_size,
        recon_size=recon_size,
        padding_left=padding_left,
        padding_right=padding_right,
    )


def read_kspace(path: str | Path, slices: SliceSelection = slice(None)) -> np.ndarray:
    """Read k-space slices as complex64; an int selects one slice and drops the slice axis.

    Raises IreconError when the selection is out of range or what was read holds NaN/Inf, so a
    corrupt slice stops a run with the file's name instead of poisoning training.
    """
    path = Path(path)
    with open_h5(path) as hf:
        kspace = _kspace_dataset(hf, path)
        first, rank = _first_index(slices, int(kspace.shape[0])), kspace.ndim
        data = _read_slices(kspace, slices, path).astype(np.complex64, copy=False)
    check_finite_kspace(data, one_slice=data.ndim == rank - 1, first=first, path=path)
    return data


def read_sampled_columns(path: str | Path) -> np.ndarray:
    """A 1-D bool over the k-space columns: True where any slice, coil or row holds a non-zero value.

    Read slice by slice, to bound memory; a prospectively undersampled file has all-zero columns.
    """
    path = Path(path)
    with open_h5(path) as hf:
        kspace = _kspace_dataset(hf, path)
        sampled = np.zeros(int(kspace.shape[-1]), dtype=bool)
        for index in range(int(kspace.shape[0])):
            values = np.asarray(kspace[index])
            sampled |= (values != 0).reshape(-1, values.shape[-1]).any(axis=0)
    return sampled


def read_kspace_columns(path: str | Path, columns: slice) -> np.ndarray:
    """The k-space columns ``columns`` of every slice, complex64 ``(slices, [coils,] H, len)``, read slice by slice."""
    path = Path(path)
    with open_h5(path) as hf:
        kspace = _kspace_dataset(hf, path)
        data = np.stack([np.asarray(kspace[index][..., columns]) for index in range(int(kspace.shape[0]))])
    return data.astype(np.complex64, copy=False)


def check_finite_kspace(data: np.ndarray, *, one_slice: bool, first: int, path: Path) -> None:
    """Raise, naming the first bad slice as ``irecon check`` does, if k-space holds NaN/Inf.

    ``data`` is one slice (``one_slice``) or a run of slices starting at slice ``first``.
    """
    per_slice = data.reshape(1, -1) if one_slice else data.reshape(data.shape[0], -1)
    finite = np.isfinite(per_slice).all(axis=1)
    if not finite.all():
        raise IreconError(f"kspace slice {first + int(np.argmin(finite))} contains NaN or Inf values", path)


def read_target(path: str | Path, info: VolumeInfo, slices: SliceSelection = slice(None)) -> np.ndarray | None:
    """Read the target image slices (``info.target_key``) as float32, or None if there is none."""
    if info.target_key is None:
        return None
    path = Path(path)
    with open_h5(path) as hf:
        if info.target_key not in hf or not isinstance(hf[info.target_key], h5py.Dataset):
            raise IreconError(f"no {info.target_key} dataset", path)
        data = _read_slices(hf[info.target_key], slices, path)
    return np.asarray(data, dtype=np.float32)


def read_mask(path: str | Path) -> np.ndarray | None:
    """Read a test-style file's 1-D sampling mask as float32 0/1, or None if the file has none."""
    path = Path(path)
    with open_h5(path) as hf:
        if "mask" not in hf:
            return None
        mask = _read_mask_array(hf, path)
    if not np.isin(mask, (0, 1)).all():
        raise IreconError("mask holds values other than 0 and 1", path)
    return mask.astype(np.float32)


def _is_h5_name(path: Path) -> bool:
    return path.suffix.lower() == ".h5"


@contextmanager
def open_h5(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only; h5py errors, also those met while reading, become IreconError."""
    if path.is_dir():
        raise IreconError("is a folder, not an .h5 file", path)
    if not path.exists():
        raise IreconError(missing_problem(path, "file"), path)
    try:
        hf = h5py.File(path, "r")
    except OSError as err:
        raise IreconError(open_problem(err), path) from None
    try:
        with hf:
            yield hf
    except (OSError, KeyError, RuntimeError):
        raise IreconError(READ_FAILED, path) from None


def open_problem(err: OSError) -> str:
    """What h5py failing to open a file means: another process holds its lock (a writer), or it is unreadable.

    HDF5 locks a file it writes; a reader then fails with ``unable to lock file`` (EAGAIN), and the
    file is most likely good, only not finished.
    """
    if isinstance(err, BlockingIOError) or "unable to lock file" in str(err):
        return LOCKED
    return UNREADABLE


def _kspace_dataset(hf: h5py.File, path: Path) -> h5py.Dataset:
    if "kspace" not in hf:
        raise IreconError("no kspace dataset", path)
    kspace = hf["kspace"]
    if not isinstance(kspace, h5py.Dataset):
        raise IreconError("kspace is a group, not a dataset", path)
    if kspace.ndim not in (3, 4):
        raise IreconError(
            f"kspace has rank {kspace.ndim} (shape {kspace.shape}); expected (slices, H, W) "
            "for single-coil or (slices, coils, H, W) for multi-coil",
            path,
        )
    if not np.issubdtype(kspace.dtype, np.complexfloating):
        raise IreconError(f"kspace has dtype {kspace.dtype}; expected complex (complex64)", path)
    if kspace.shape[0] == 0:
        raise IreconError("kspace has 0 slices (empty volume)", path)
    if 0 in kspace.shape:
        raise IreconError(f"kspace has an empty dimension (shape {kspace.shape})", path)
    return kspace


def _read_header(hf: h5py.File, path: Path) -> tuple[tuple[int, int, int], tuple[int, int, int], int, int]:
    """The ``ismrmrd_header`` dataset's fastMRI fields (:func:`irecon.data.header.fastmri_fields`)."""
    if "ismrmrd_header" not in hf or not isinstance(hf["ismrmrd_header"], h5py.Dataset):
        raise IreconError("no ismrmrd_header dataset (fastMRI files carry the ISMRMRD XML header)", path)
    return fastmri_fields(hf["ismrmrd_header"][()], path)


def _check_target(
    hf: h5py.File, path: Path, key: str, num_slices: int, recon_size: tuple[int, int, int]
) -> tuple[int, int]:
    target = hf[key]
    if not isinstance(target, h5py.Dataset):
        raise IreconError(f"{key} is a group, not a dataset", path)
    if target.ndim != 3:
        raise IreconError(f"{key} has rank {target.ndim} (shape {target.shape}); expected (slices, H, W)", path)
    if target.dtype.kind not in "fiu":
        raise IreconError(f"{key} has dtype {target.dtype}; expected real (float32)", path)
    if target.shape[0] != num_slices:
        raise IreconError(f"{key} has {target.shape[0]} slices but kspace has {num_slices}", path)
    shape = (int(target.shape[1]), int(target.shape[2]))
    if shape != (recon_size[0], recon_size[1]):
        raise IreconError(
            f"{key} images are {shape[0]}x{shape[1]} but the ismrmrd_header recon size is "
            f"{recon_size[0]}x{recon_size[1]}",
            path,
        )
    return shape


def _read_mask_array(hf: h5py.File, path: Path) -> np.ndarray:
    mask = hf["mask"]
    if not isinstance(mask, h5py.Dataset) or mask.ndim != 1:
        shape = getattr(mask, "shape", None)
        raise IreconError(f"mask is not a 1-D array (shape {shape})", path)
    if mask.dtype.kind not in "biuf":
        raise IreconError(f"mask has dtype {mask.dtype}; expected bool or 0/1 numbers", path)
    return np.asarray(mask[()])


def _check_mask(mask: np.ndarray, width: int, path: Path) -> None:
    if mask.shape[0] != width:
        raise IreconError(f"mask has length {mask.shape[0]} but kspace width W is {width}", path)
    if not np.isin(mask, (0, 1)).all():
        raise IreconError("mask holds values other than 0 and 1", path)
    if not mask.any():
        raise IreconError("mask samples no k-space lines", path)


def _check_max(attrs: dict[str, Any], path: Path) -> None:
    if "max" not in attrs:
        return
    value = attrs["max"]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise IreconError(f"attribute max is not a number: {value!r}", path) from None
    if not np.isfinite(number) or number <= 0:
        raise IreconError(f"attribute max must be a positive finite number, got {number}", path)


def _plain(value: Any) -> Any:
    """Turn an HDF5 attribute value into a plain Python value (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, h5py.Empty):
        return None
    return value


def _first_index(slices: SliceSelection, count: int) -> int:
    """The absolute index of the first slice a selection reads."""
    if isinstance(slices, slice):
        return slices.indices(count)[0]
    return int(slices) % count if -count <= slices < count else int(slices)


def _read_slices(dataset: h5py.Dataset, slices: SliceSelection, path: Path) -> np.ndarray:
    """Read one slice (an int, bounds-checked) or a contiguous run of slices along axis 0."""
    count = int(dataset.shape[0])
    if isinstance(slices, slice):
        if slices.step not in (None, 1):
            raise IreconError(f"slice step {slices.step} is not supported; read contiguous slices", path)
        return np.asarray(dataset[slices])
    if isinstance(slices, bool) or not isinstance(slices, (int, np.integer)):
        raise IreconError(f"slice index {slices!r} is not an integer", path)
    if not -count <= slices < count:
        raise IreconError(f"slice {slices} is out of range for a volume of {count} slices", path)
    return np.asarray(dataset[int(slices) % count])

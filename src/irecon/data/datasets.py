"""PyTorch datasets of masked fastMRI k-space: 2-D slices or 3-D slabs for training and validation.

What the models consume:

* masked k-space is a complex64 tensor with a coil dim, also for single-coil data: one 2-D sample
  is ``(coils, H, W)``, one 3-D slab ``(coils, S, H, W)``; a whole :class:`Volume` is
  ``(S, coils, H, W)``;
* the mask is float32 and broadcasts against it: ``(1, 1, W)`` for a slice, ``(1, 1, 1, W)`` for a
  slab or a volume (after ``default_collate``: ``(B, 1, 1, W)`` / ``(B, 1, 1, 1, W)``).

Masks follow the i-RIM / fastMRI protocol: in training they are re-drawn for every
sample and every epoch, seeded by ``(seed, epoch, index)`` so that a resumed run draws the same
ones; outside training they are seeded by the file name, so every slice of a volume and every run
sees the same mask; a test-style file (one with a ``mask`` dataset) always uses its own mask.
Nothing here touches a global random state (torch, NumPy or ``random``): an item depends only on
the dataset's arguments, its epoch and its index, in any DataLoader worker.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import fastmri
import numpy as np
import torch
from fastmri.data.transforms import complex_center_crop
from torch import Tensor

from irecon.data.coils import calibration_columns, check_coil_count, compress, compression_matrix
from irecon.data.handles import OpenFiles
from irecon.data.masks import (
    MaskSpec,
    apply_padding,
    centre_lines,
    make_mask,
    mask_from_sampled_columns,
    seed_for_file,
    training_seed,
)
from irecon.data.volumes import (
    CHALLENGES,
    VolumeInfo,
    read_kspace,
    read_kspace_columns,
    read_mask,
    read_sampled_columns,
    read_target,
    read_volume_info,
)
from irecon.errors import IreconError

__all__ = [
    "MRIDataset",
    "Sample",
    "Volume",
    "eval_mask",
    "load_volume",
    "resize_kspace",
]

# Salt that separates the slab-start stream from the mask stream of the same (seed, epoch, index).
_SLAB_STREAM = 1


class Sample(NamedTuple):
    """One item of :class:`MRIDataset`; ``torch.utils.data.default_collate`` batches each field."""

    kspace: Tensor
    """Masked k-space, complex64 ``(coils, H, W)`` or ``(coils, S, H, W)``."""
    mask: Tensor
    """Sampling mask, float32 ``(1, 1, W)`` or ``(1, 1, 1, W)``."""
    target: Tensor
    """Target image, float32 ``(h, w)`` or ``(S, h, w)``; shape ``(0,)`` when the file has none."""
    max_value: float
    """Data range for SSIM/PSNR: attrs["max"], else the target volume's max, else 0.0."""
    fname: str
    """The file's name (``Path.name``), as fastMRI reports it."""
    slice_index: int
    """The slice (2-D) or the first slice of the slab (3-D)."""


class Volume(NamedTuple):
    """A whole masked volume, for validation and inference."""

    kspace: Tensor
    """Masked k-space, complex64 ``(S, coils, H, W)``."""
    mask: Tensor
    """Sampling mask, float32 ``(1, 1, 1, W)``."""
    target: Tensor | None
    """Target images, float32 ``(S, h, w)``, or None for a test-style file."""
    max_value: float
    """Data range for SSIM/PSNR: attrs["max"], else the target's max, else 0.0."""
    info: VolumeInfo
    num_low_frequencies: int | None
    """Fully sampled centre lines: from ``make_mask``, or the file's ``num_low_frequency`` attr."""
    mask_source: str = "drawn"
    """Where the mask came from: "file" (its ``mask``), "zero lines" (its all-zero k-space columns), "drawn"."""


def resize_kspace(kspace: Tensor, resolution: tuple[int, int]) -> Tensor:
    """Resize complex k-space ``(..., H, W)`` to ``resolution`` by cropping or padding the image.

    The image (``fastmri.ifft2c``) is centre-cropped along each dim larger than the resolution
    (``fastmri.data.transforms.complex_center_crop``) and zero-padded along each smaller one, then
    transformed back with ``fastmri.fft2c``. Padding puts the image at the offset that a centre crop
    back to the old size reads from, so cropping undoes padding exactly. This is the i-RIM training
    crop (the official code's ``--train_resolution``): it removes the readout oversampling and gives
    training inputs one size.
    """
    if not kspace.is_complex():
        raise ValueError(f"k-space must be complex, got dtype {kspace.dtype}")
    height, width = (int(n) for n in resolution)
    if height < 1 or width < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    image = fastmri.ifft2c(torch.view_as_real(kspace))
    old_h, old_w = image.shape[-3], image.shape[-2]
    image = complex_center_crop(image, (min(old_h, height), min(old_w, width)))
    if (image.shape[-3], image.shape[-2]) != (height, width):
        padded = image.new_zeros((*image.shape[:-3], height, width, 2))
        top = (height - image.shape[-3]) // 2
        left = (width - image.shape[-2]) // 2
        padded[..., top : top + image.shape[-3], left : left + image.shape[-2], :] = image
        image = padded
    return torch.view_as_complex(fastmri.fft2c(image).contiguous())


def eval_mask(info: VolumeInfo, mask_spec: MaskSpec | None) -> tuple[np.ndarray, int | None]:
    """The mask a volume gets outside training, as a 1-D float32 array, with its centre line count.

    A file with a ``mask`` dataset gets that mask (and its ``num_low_frequency`` attr, if any); a
    file with neither mask nor target whose k-space has all-zero lines in the header's acquired
    range (a prospectively undersampled file from another tool) gets the mask of its non-zero
    lines; otherwise the mask is drawn with ``mask_spec`` seeded by the file name (fastMRI's
    validation masks), zeroed on the header's padded columns. Raises IreconError when a mask must
    be drawn but ``mask_spec`` is None.
    """
    return _eval_mask(info, mask_spec)[:2]


def _eval_mask(info: VolumeInfo, mask_spec: MaskSpec | None) -> tuple[np.ndarray, int | None, str]:
    """:func:`eval_mask` with where the mask came from ("file", "zero lines" or "drawn")."""
    if info.has_mask:
        mask = read_mask(info.path)
        assert mask is not None  # has_mask was read from the same file
        num_low = info.attrs.get("num_low_frequency")
        return mask, None if num_low is None else int(num_low), "file"
    if info.target_key is None:
        derived = zero_line_mask(info)
        if derived is not None:
            return derived, centre_lines(derived), "zero lines"
    if mask_spec is None:
        raise IreconError("file has no mask of its own and no mask was specified", info.path)
    mask, num_low = _draw(mask_spec, info.kspace_shape[1], seed_for_file(info.path.name), info.path)
    return apply_padding(mask, info.padding_left, info.padding_right), num_low, "drawn"


def zero_line_mask(info: VolumeInfo) -> np.ndarray | None:
    """The mask of the file's non-zero k-space lines when some line in the header's range is all zero, else None."""
    return mask_from_sampled_columns(read_sampled_columns(info.path), info.padding_left, info.padding_right)


def load_volume(
    path: str | Path, mask_spec: MaskSpec | None, info: VolumeInfo | None = None, virtual_coils: int | None = None
) -> Volume:
    """Load one whole volume at native size, masked exactly as ``MRIDataset(train=False)`` masks it.

    ``info`` saves re-reading the header when the caller already has it. ``virtual_coils`` N
    compresses the masked coils to N virtual coils (:mod:`irecon.data.coils`), calibrated on the
    mask's sampled centre lines; the target stays the RSS of all physical coils.
    """
    info = read_volume_info(path) if info is None else info
    mask, num_low, source = _eval_mask(info, mask_spec)
    kspace = torch.from_numpy(read_kspace(info.path))
    if info.challenge == "singlecoil":
        kspace = kspace.unsqueeze(1)
    mask_t = torch.from_numpy(mask).reshape(1, 1, 1, -1)
    kspace = kspace * mask_t
    if virtual_coils is not None:
        check_coil_count(info.num_coils, virtual_coils, info.path)
        columns = calibration_columns(mask, kspace.shape[-1])
        kspace = compress(kspace, compression_matrix(kspace[..., columns], virtual_coils), coil_dim=1)
    target_np = read_target(info.path, info)
    target = None if target_np is None else torch.from_numpy(target_np)
    max_value = info.max_value
    if max_value is None:
        max_value = 0.0 if target_np is None else float(target_np.max())
    return Volume(kspace, mask_t, target, max_value, info, num_low, source)


class MRIDataset(torch.utils.data.Dataset[Sample]):
    """Masked k-space slices (``slab == 1``) or slabs of consecutive slices from fastMRI files.

    Items:

    * ``slab == 1``: one item per (file, slice), in file order then slice order;
    * ``slab > 1``, training: ``num_slices // slab`` items per volume, each a slab at a random
      start drawn from ``(seed, epoch, index)`` (so it changes with the epoch but not between runs);
    * ``slab > 1``, evaluation: consecutive non-overlapping slabs from slice 0, plus one slab
      aligned to the volume's end when ``slab`` does not divide the slice count (it overlaps its
      neighbour), so every slice is covered.

    Masks: training re-draws one for every item and epoch (``make_mask(spec, W,
    training_seed(seed, epoch, index))``); evaluation uses :func:`eval_mask` (file-name seed), the
    masks :func:`load_volume` uses; a file with its own ``mask`` always uses it. Drawn masks are
    zeroed on the header's padded columns, except when ``resolution`` changes the width: the resize
    resamples k-space, so the header's padding no longer describes its columns.

    ``targets=False`` (self-supervised training) serves no targets (shape ``(0,)``), so training may
    use test-style files, which have none.

    ``resolution=(h, w)`` (training only) resizes k-space in image space with
    :func:`resize_kspace` before masking, like the official i-RIM's 368x368 training crop. The
    target is left as it is: it is the centre crop of the image, which the resize does not move, so
    the resolution must be at least the target's size.

    Call :meth:`set_epoch` before each training epoch, or ask for :meth:`item` ``(index, epoch)``:
    DataLoader workers see a new :meth:`set_epoch` only when they are re-created, while ``item``
    needs no state. Each process keeps one read-only HDF5 handle per file it has read (opened on
    first use, see :meth:`close`). Items of different sizes (:meth:`size_of`) cannot share a
    batch: the training loader batches each size apart, or ``resolution`` makes them one size.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        mask_spec: MaskSpec | None,
        *,
        train: bool,
        resolution: tuple[int, int] | None = None,
        slab: int = 1,
        seed: int = 0,
        challenge: str | None = None,
        virtual_coils: int | None = None,
        targets: bool = True,
    ) -> None:
        if not files:
            raise IreconError("no files given to the dataset")
        if isinstance(slab, bool) or not isinstance(slab, numbers.Integral) or slab < 1:
            raise IreconError(f"slab must be a whole number >= 1, got {slab!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise IreconError(f"seed must be a non-negative integer, got {seed!r}")
        if challenge is not None and challenge not in CHALLENGES:
            raise IreconError(f"unknown challenge {challenge!r}; choose one of {', '.join(CHALLENGES)}")
        if resolution is not None:
            resolution = _check_resolution(resolution, train)
        if mask_spec is not None:
            mask_spec.validate()

        self.mask_spec = mask_spec
        self.train = bool(train)
        self.resolution = resolution
        self.slab = int(slab)
        self.seed = int(seed)
        self.virtual_coils = virtual_coils
        self.targets = bool(targets)
        self.epoch = 0
        self._volumes = [read_volume_info(f) for f in files]
        self._check_volumes(challenge)
        self._items = self._build_index()
        self._max_values: dict[int, float] = {}
        self._compressions: dict[int, Tensor] = {}
        self._eval_masks: dict[int, np.ndarray] = {}
        self._files = OpenFiles()

    @property
    def volumes(self) -> list[VolumeInfo]:
        """The header information of every file, in the order given."""
        return list(self._volumes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose training masks and slab starts the items use."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise IreconError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        return self.item(index, self.epoch)

    def item(self, index: int, epoch: int) -> Sample:
        """Item ``index`` as epoch ``epoch`` draws it (``dataset[index]`` is ``item(index, dataset.epoch)``).

        Passing the epoch with the index lets DataLoader workers that outlive an epoch
        (``persistent_workers``) serve the next one without being told of :meth:`set_epoch`.
        """
        if not -len(self._items) <= index < len(self._items):
            raise IndexError(f"index {index} out of range for {len(self._items)} items")
        index = int(index) % len(self._items)
        volume_index, position = self._items[index]
        info = self._volumes[volume_index]
        if self.slab == 1:
            start, selection = position, position
        else:
            start = position if position >= 0 else self._random_start(info, index, epoch)
            selection = slice(start, start + self.slab)

        kspace_np, target_np = self._files.read(info, selection, start)
        kspace = torch.from_numpy(kspace_np)
        if info.challenge == "singlecoil":
            kspace = kspace.unsqueeze(0)
        elif self.slab > 1:
            kspace = kspace.transpose(0, 1).contiguous()
        if self.virtual_coils is not None:
            kspace = compress(kspace, self._compression(volume_index), coil_dim=0)
        if self.resolution is not None:
            kspace = resize_kspace(kspace, self.resolution)

        mask = torch.from_numpy(self._mask(volume_index, index, kspace.shape[-1], epoch))
        mask = mask.reshape((1,) * (kspace.dim() - 1) + (-1,))

        target = torch.zeros(0) if target_np is None or not self.targets else torch.from_numpy(target_np)
        return Sample(
            kspace=kspace.mul_(mask),  # in place: the array was just read, nothing else holds it
            mask=mask,
            target=target,
            max_value=self._max_value(volume_index),
            fname=info.path.name,
            slice_index=int(start),
        )

    def size_of(self, index: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """(k-space size after ``resolution``, target size) of item ``index``: items batch together when equal."""
        info = self._volumes[self._items[index][0]]
        return (self.resolution or info.kspace_shape), info.target_shape

    def close(self) -> None:
        """Close the HDF5 files this process opened; later items open them again."""
        self._files.close()

    def _check_volumes(self, challenge: str | None) -> None:
        """Refuse file sets the dataset cannot serve, naming the first offending file."""
        first = self._volumes[0]
        expected = challenge or first.challenge
        for info in self._volumes:
            if info.challenge != expected:
                why = "was asked for" if challenge else f"is the challenge of {first.path}"
                raise IreconError(
                    f"file is {info.challenge} but {expected} {why}; all files must be of one challenge",
                    info.path,
                )
            if self.virtual_coils is not None:
                if info.challenge == "singlecoil":
                    raise IreconError("«virtual_coils» needs multi-coil files; this one is single-coil", info.path)
                check_coil_count(info.num_coils, self.virtual_coils, info.path)
            elif self.train and info.num_coils != first.num_coils:
                raise IreconError(
                    f"file has {info.num_coils} coils but {first.path} has "
                    f"{first.num_coils}; training needs one coil count",
                    info.path,
                )
            if info.num_slices < self.slab:
                thinnest = min(v.num_slices for v in self._volumes)
                fits = f"«slab» {thinnest} fits every volume" if thinnest >= 2 else "a 2-D preset suits them"
                raise IreconError(
                    f"volume has {info.num_slices} slices, fewer than the slab of {self.slab}; {fits}",
                    info.path,
                )
            if self.train and self.targets and info.target_key is None:
                raise IreconError(
                    "file has no target (a test-style file?); training needs a target in every file",
                    info.path,
                )
            if not info.has_mask and self.mask_spec is None:
                raise IreconError("file has no mask of its own and no mask was specified", info.path)
            self._check_resolution_fits(info)
        if self.mask_spec is not None:
            widths = {}
            for info in self._volumes:
                if not info.has_mask:
                    width = self.resolution[1] if self.resolution else info.kspace_shape[1]
                    widths.setdefault(width, info.path)
            for width, path in widths.items():
                _draw(self.mask_spec, width, 0, path)

    def _check_resolution_fits(self, info: VolumeInfo) -> None:
        if self.resolution is None:
            return
        height, width = self.resolution
        if info.target_shape is not None and (height < info.target_shape[0] or width < info.target_shape[1]):
            raise IreconError(
                f"resolution {height}x{width} is smaller than the target size "
                f"{info.target_shape[0]}x{info.target_shape[1]}",
                info.path,
            )
        if info.has_mask and width != info.kspace_shape[1]:
            raise IreconError(
                f"file carries its own mask over {info.kspace_shape[1]} columns, which a "
                f"resolution of width {width} would not fit",
                info.path,
            )

    def _build_index(self) -> list[tuple[int, int]]:
        """(volume, slice or slab start) per item; start -1 marks a random training slab."""
        items: list[tuple[int, int]] = []
        for volume_index, info in enumerate(self._volumes):
            n = info.num_slices
            if self.slab == 1:
                starts = list(range(n))
            elif self.train:
                starts = [-1] * (n // self.slab)
            else:
                starts = list(range(0, n - self.slab + 1, self.slab))
                if starts[-1] + self.slab < n:
                    starts.append(n - self.slab)
            items.extend((volume_index, s) for s in starts)
        return items

    def _random_start(self, info: VolumeInfo, index: int, epoch: int) -> int:
        rng = np.random.default_rng((self.seed, epoch, index, _SLAB_STREAM))
        return int(rng.integers(0, info.num_slices - self.slab + 1))

    def _mask(self, volume_index: int, index: int, width: int, epoch: int) -> np.ndarray:
        info = self._volumes[volume_index]
        if not self.train or info.has_mask:
            if volume_index not in self._eval_masks:
                self._eval_masks[volume_index] = eval_mask(info, self.mask_spec)[0]
            return self._eval_masks[volume_index].copy()
        assert self.mask_spec is not None  # checked in __init__
        seed = training_seed(self.seed, epoch, index)
        mask, _ = _draw(self.mask_spec, width, seed, info.path)
        if width == info.kspace_shape[1]:
            mask = apply_padding(mask, info.padding_left, info.padding_right)
        return mask

    def _compression(self, volume_index: int) -> Tensor:
        """The volume's coil compression (computed once): calibrated on the centre lines its masks keep.

        Evaluation and files with their own mask use the mask's sampled centre; training, whose
        masks change per sample, uses the centre lines of the full k-space.
        """
        if volume_index not in self._compressions:
            info = self._volumes[volume_index]
            mask = eval_mask(info, self.mask_spec)[0] if not self.train or info.has_mask else None
            columns = calibration_columns(mask, info.kspace_shape[1])
            calibration = torch.from_numpy(read_kspace_columns(info.path, columns))
            assert self.virtual_coils is not None  # only called when compressing
            self._compressions[volume_index] = compression_matrix(calibration, self.virtual_coils)
        return self._compressions[volume_index]

    def _max_value(self, volume_index: int) -> float:
        """attrs["max"], else the target volume's max (read once and kept), else 0.0."""
        if volume_index not in self._max_values:
            info = self._volumes[volume_index]
            value = info.max_value
            if value is None:
                target = read_target(info.path, info)
                value = 0.0 if target is None else float(target.max())
            self._max_values[volume_index] = value
        return self._max_values[volume_index]


def _check_resolution(resolution: tuple[int, int], train: bool) -> tuple[int, int]:
    if not train:
        raise IreconError("resolution applies to training only; evaluation uses the native k-space size")
    try:
        pair = tuple(resolution)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in pair):
        raise IreconError(f"resolution must be two positive integers (h, w), got {resolution!r}")
    return int(pair[0]), int(pair[1])


def _draw(spec: MaskSpec, width: int, seed: int | tuple[int, ...], path: Path) -> tuple[np.ndarray, int]:
    """``make_mask``, with the file named in its error."""
    try:
        return make_mask(spec, width, seed)
    except IreconError as exc:
        raise IreconError(exc.problem, path) from None

"""MRIDataset and load_volume: shapes, collation, reproducible masks and slabs, resizing, errors."""

from __future__ import annotations

import pickle
import random
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import fastmri
import h5py
import numpy as np
import pytest
import torch
from fastmri.data.transforms import center_crop
from torch.utils.data import DataLoader, default_collate

from irecon.data.datasets import MRIDataset, Sample, eval_mask, load_volume, resize_kspace
from irecon.data.masks import MaskSpec, apply_padding, make_mask, seed_for_file, training_seed
from irecon.data.synth import synthesize
from irecon.data.volumes import read_kspace, read_mask, read_target, read_volume_info
from irecon.errors import IreconError

KSPACE = (32, 24)
RECON = (16, 16)
SLICES = 4
COILS = 3
SPEC = MaskSpec("random", (0.08,), (4,))
FULL = MaskSpec("equispaced", (0.5,), (1,))  # acceleration 1: every column sampled


def make_files(root: Path, challenge: str = "singlecoil", split: str = "train", **kwargs: int) -> list[Path]:
    options = dict(kspace_size=KSPACE, recon_size=RECON, slices=SLICES, volumes=2, coils=COILS)
    options.update(kwargs)
    return synthesize(root / f"{challenge}_{split}", challenge=challenge, split=split, **options)


def coils_of(challenge: str) -> int:
    return 1 if challenge == "singlecoil" else COILS


def image(kspace: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(kspace)).contiguous())


def unsampled_columns_are_zero(sample_kspace: torch.Tensor, mask: torch.Tensor) -> bool:
    columns = mask.reshape(-1) == 0
    return bool((sample_kspace[..., columns] == 0).all())


@pytest.fixture(params=["singlecoil", "multicoil"])
def challenge(request: pytest.FixtureRequest) -> str:
    return request.param


# --- shapes, dtypes, collation ---------------------------------------------------------------


def test_slice_samples_have_documented_shapes(tmp_path: Path, challenge: str) -> None:
    files = make_files(tmp_path, challenge)
    for train in (True, False):
        ds = MRIDataset(files, SPEC, train=train)
        assert len(ds) == 2 * SLICES
        sample = ds[5]
        assert isinstance(sample, Sample)
        assert sample.kspace.shape == (coils_of(challenge), *KSPACE)
        assert sample.kspace.dtype == torch.complex64
        assert sample.mask.shape == (1, 1, KSPACE[1]) and sample.mask.dtype == torch.float32
        assert sample.target.shape == RECON and sample.target.dtype == torch.float32
        assert sample.fname == files[1].name and sample.slice_index == 1
        with h5py.File(files[1]) as hf:
            assert sample.max_value == pytest.approx(float(hf.attrs["max"]))
            key = "reconstruction_esc" if challenge == "singlecoil" else "reconstruction_rss"
            np.testing.assert_array_equal(sample.target.numpy(), hf[key][1])


def test_slab_samples_have_documented_shapes(tmp_path: Path, challenge: str) -> None:
    files = make_files(tmp_path, challenge)
    train = MRIDataset(files, SPEC, train=True, slab=2)
    evaluation = MRIDataset(files, SPEC, train=False, slab=3)
    assert len(train) == 2 * (SLICES // 2)
    assert len(evaluation) == 2 * 2  # starts 0 and 1 (the last slab aligned to the end)
    for ds, slab in ((train, 2), (evaluation, 3)):
        sample = ds[len(ds) - 1]
        assert sample.kspace.shape == (coils_of(challenge), slab, *KSPACE)
        assert sample.kspace.dtype == torch.complex64
        assert sample.mask.shape == (1, 1, 1, KSPACE[1]) and sample.mask.dtype == torch.float32
        assert sample.target.shape == (slab, *RECON)
        start = sample.slice_index
        stored = read_kspace(files[1], slice(start, start + slab))
        if challenge == "singlecoil":
            stored = stored[None]
        else:
            stored = stored.transpose(1, 0, 2, 3)
        expected = torch.from_numpy(stored) * sample.mask
        torch.testing.assert_close(sample.kspace, expected, rtol=0, atol=0)


def test_default_collate_and_dataloader_batch_samples(tmp_path: Path, challenge: str) -> None:
    files = make_files(tmp_path, challenge)
    coils = coils_of(challenge)
    for slab, mask_shape in ((1, (2, 1, 1, KSPACE[1])), (2, (2, 1, 1, 1, KSPACE[1]))):
        ds = MRIDataset(files, SPEC, train=True, slab=slab)
        lead = (2, coils) if slab == 1 else (2, coils, slab)
        batch = default_collate([ds[0], ds[1]])
        assert isinstance(batch, Sample)
        assert batch.kspace.shape == (*lead, *KSPACE) and batch.kspace.dtype == torch.complex64
        assert batch.mask.shape == mask_shape
        assert (batch.kspace * batch.mask).shape == batch.kspace.shape
        assert batch.max_value.shape == (2,) and batch.slice_index.shape == (2,)
        assert list(batch.fname) == [ds[0].fname, ds[1].fname]
        batches = list(DataLoader(ds, batch_size=2))
        assert len(batches) == len(ds) // 2
        assert all(b.kspace.shape == (*lead, *KSPACE) for b in batches)


def test_test_style_files_collate_with_empty_targets(tmp_path: Path) -> None:
    files = make_files(tmp_path, split="test")
    ds = MRIDataset(files, None, train=False)
    sample = ds[0]
    assert sample.target.shape == (0,) and sample.max_value == 0.0
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch.target.shape == (2, 0)
    assert batch.kspace.shape == (2, 1, *KSPACE)


# --- masks -----------------------------------------------------------------------------------


def test_training_masks_are_redrawn_yet_reproducible(singlecoil_file: Path) -> None:
    ds = MRIDataset([singlecoil_file], SPEC, train=True, seed=3)
    info = ds.volumes[0]
    width = info.kspace_shape[1]
    seen = {}
    for epoch in range(4):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            mask = ds[index].mask.reshape(-1).numpy()
            expected, _ = make_mask(SPEC, width, training_seed(3, epoch, index))
            expected = apply_padding(expected, info.padding_left, info.padding_right)
            np.testing.assert_array_equal(mask, expected)
            seen[epoch, index] = mask.tobytes()
    assert info.padding_left == 1
    assert all(np.frombuffer(m, np.float32)[0] == 0 for m in seen.values())
    assert len({seen[e, 0] for e in range(4)}) > 1, "masks must change between epochs"
    assert len({seen[0, i] for i in range(len(ds))}) > 1, "masks must change between indices"

    fresh = MRIDataset([singlecoil_file], SPEC, train=True, seed=3)
    fresh.set_epoch(2)
    assert fresh[1].mask.numpy().tobytes() == seen[2, 1]
    torch.testing.assert_close(fresh[1].kspace, fresh[1].kspace, rtol=0, atol=0)
    other_seed = MRIDataset([singlecoil_file], SPEC, train=True, seed=4)
    other_seed.set_epoch(2)
    other = [other_seed[i].mask.numpy().tobytes() for i in range(len(ds))]
    assert other != [seen[2, i] for i in range(len(ds))]


def test_eval_masks_are_per_file_and_stable(tmp_path: Path, singlecoil_file: Path) -> None:
    files = [singlecoil_file, *make_files(tmp_path, "singlecoil")]
    ds = MRIDataset(files, SPEC, train=False, seed=5)
    rerun = MRIDataset(files, SPEC, train=False, seed=9)
    rerun.set_epoch(7)
    per_file: dict[str, set[bytes]] = {}
    for index in range(len(ds)):
        sample = ds[index]
        torch.testing.assert_close(sample.mask, rerun[index].mask, rtol=0, atol=0)
        per_file.setdefault(sample.fname, set()).add(sample.mask.numpy().tobytes())
    assert all(len(masks) == 1 for masks in per_file.values())
    assert len(set().union(*per_file.values())) == len(files)
    for info in ds.volumes:
        expected, _ = make_mask(SPEC, info.kspace_shape[1], seed_for_file(info.path.name))
        expected = apply_padding(expected, info.padding_left, info.padding_right)
        (mask,) = per_file[info.path.name]
        np.testing.assert_array_equal(np.frombuffer(mask, np.float32), expected)
        np.testing.assert_array_equal(eval_mask(info, SPEC)[0], expected)


def test_test_style_file_uses_its_own_mask(test_style_file: Path, singlecoil_file: Path) -> None:
    own = read_mask(test_style_file)
    for ds in (
        MRIDataset([test_style_file], SPEC, train=False),
        MRIDataset([test_style_file, singlecoil_file], SPEC, train=False, slab=2),
        MRIDataset([test_style_file], None, train=False),
    ):
        for index in range(len(ds)):
            sample = ds[index]
            if sample.fname == test_style_file.name:
                np.testing.assert_array_equal(sample.mask.reshape(-1).numpy(), own)
    volume = load_volume(test_style_file, None)
    np.testing.assert_array_equal(volume.mask.reshape(-1).numpy(), own)
    assert volume.target is None and volume.num_low_frequencies == 4


def test_kspace_is_zero_on_unsampled_columns(tmp_path: Path, challenge: str) -> None:
    files = make_files(tmp_path, challenge)
    for ds in (
        MRIDataset(files, SPEC, train=True),
        MRIDataset(files, SPEC, train=True, slab=2, resolution=(20, 20)),
        MRIDataset(files, SPEC, train=False, slab=3),
    ):
        for index in range(len(ds)):
            sample = ds[index]
            assert 0 < sample.mask.sum() < sample.mask.numel()
            assert unsampled_columns_are_zero(sample.kspace, sample.mask)
            sampled = sample.kspace[..., sample.mask.reshape(-1) == 1]
            assert (sampled != 0).any()


def test_no_global_random_state_is_used(tmp_path: Path) -> None:
    files = make_files(tmp_path, "multicoil")
    ds = MRIDataset(files, SPEC, train=True, slab=2, resolution=(20, 20), seed=1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = [ds[i] for i in range(len(ds))]
    assert torch.equal(states[0], torch.get_rng_state())
    assert np.array_equal(states[1], np.random.get_state()[1]) and states[2] == random.getstate()
    torch.manual_seed(123)
    np.random.seed(123)
    loaded = list(DataLoader(ds, batch_size=1, num_workers=2))
    for sample, batch in zip(first, loaded):
        torch.testing.assert_close(batch.kspace[0], sample.kspace, rtol=0, atol=0)
        assert int(batch.slice_index[0]) == sample.slice_index


# --- resolution ------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [(20, 20), (40, 28), (20, 28), (32, 24)])
def test_resolution_sets_size_and_keeps_the_centre(tmp_path: Path, challenge: str, resolution: tuple[int, int]) -> None:
    files = make_files(tmp_path, challenge)
    ds = MRIDataset(files, FULL, train=True, resolution=resolution)
    native = MRIDataset(files, FULL, train=True)
    for index in (0, 5):
        sample = ds[index]
        assert sample.kspace.shape == (coils_of(challenge), *resolution)
        assert sample.mask.shape == (1, 1, resolution[1]) and bool(sample.mask.all())
        resized = center_crop(image(sample.kspace), RECON)
        original = center_crop(image(native[index].kspace), RECON)
        torch.testing.assert_close(resized, original, rtol=1e-4, atol=1e-4)
        # the target is the centre crop of the image, which the resize does not move
        torch.testing.assert_close(sample.target, native[index].target, rtol=0, atol=0)
        magnitude = resized.abs().pow(2).sum(0).sqrt()  # magnitude or RSS, as the target
        torch.testing.assert_close(magnitude, sample.target, rtol=1e-4, atol=1e-4)


def test_resize_kspace_crop_undoes_pad() -> None:
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(2, 3, 9, 10, dtype=torch.complex64, generator=generator)
    padded = resize_kspace(kspace, (16, 15))
    assert padded.shape == (2, 3, 16, 15) and padded.dtype == torch.complex64
    torch.testing.assert_close(resize_kspace(padded, (9, 10)), kspace, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(resize_kspace(kspace, (9, 10)), kspace, rtol=1e-4, atol=1e-5)
    cropped = resize_kspace(kspace, (5, 6))
    expected = center_crop(image(kspace), (5, 6))
    torch.testing.assert_close(image(cropped), expected, rtol=1e-4, atol=1e-5)


def test_resolution_width_change_draws_mask_at_new_width(singlecoil_file: Path) -> None:
    ds = MRIDataset([singlecoil_file], SPEC, train=True, resolution=(20, 30), seed=2)
    ds.set_epoch(1)
    expected, _ = make_mask(SPEC, 30, training_seed(2, 1, 0))
    np.testing.assert_array_equal(ds[0].mask.reshape(-1).numpy(), expected)


# --- slabs -----------------------------------------------------------------------------------


def test_training_slabs_are_random_but_deterministic(tmp_path: Path) -> None:
    files = make_files(tmp_path, "singlecoil", slices=7)
    ds = MRIDataset(files, SPEC, train=True, slab=3, seed=1)
    assert len(ds) == 2 * (7 // 3)
    starts = {}
    for epoch in range(6):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            starts[epoch, index] = ds[index].slice_index
    assert all(0 <= s <= 7 - 3 for s in starts.values())
    assert len(set(starts.values())) > 1
    fresh = MRIDataset(files, SPEC, train=True, slab=3, seed=1)
    for epoch in range(6):
        fresh.set_epoch(epoch)
        again = [fresh[i].slice_index for i in range(len(ds))]
        assert again == [starts[epoch, i] for i in range(len(ds))]
    sample = ds[3]
    start = sample.slice_index
    expected = read_target(files[1], ds.volumes[1], slice(start, start + 3))
    np.testing.assert_array_equal(sample.target.numpy(), expected)


@pytest.mark.parametrize(
    ("slices", "slab", "starts"),
    [(7, 3, [0, 3, 4]), (6, 3, [0, 3]), (4, 4, [0]), (5, 2, [0, 2, 3])],
)
def test_eval_slabs_cover_every_slice(tmp_path: Path, slices: int, slab: int, starts: list[int]) -> None:
    files = make_files(tmp_path, "multicoil", slices=slices, volumes=1)
    ds = MRIDataset(files, SPEC, train=False, slab=slab)
    assert [ds[i].slice_index for i in range(len(ds))] == starts
    covered = {s + k for s in starts for k in range(slab)}
    assert covered == set(range(slices))


# --- load_volume -----------------------------------------------------------------------------


def test_load_volume_matches_eval_items(tmp_path: Path, challenge: str, singlecoil_file: Path) -> None:
    files = make_files(tmp_path, challenge)
    ds = MRIDataset(files, SPEC, train=False)
    for volume_index, path in enumerate(files):
        volume = load_volume(path, SPEC)
        info = ds.volumes[volume_index]
        assert volume.kspace.shape == (SLICES, coils_of(challenge), *KSPACE)
        assert volume.kspace.dtype == torch.complex64
        assert volume.mask.shape == (1, 1, 1, KSPACE[1]) and volume.mask.dtype == torch.float32
        assert volume.target is not None and volume.target.shape == (SLICES, *RECON)
        assert volume.info == info
        _, num_low = make_mask(SPEC, KSPACE[1], seed_for_file(path.name))
        assert volume.num_low_frequencies == num_low
        for s in range(SLICES):
            sample = ds[volume_index * SLICES + s]
            torch.testing.assert_close(volume.kspace[s], sample.kspace, rtol=0, atol=0)
            assert torch.equal(volume.mask.reshape(-1), sample.mask.reshape(-1))
            torch.testing.assert_close(volume.target[s], sample.target, rtol=0, atol=0)
            assert volume.max_value == sample.max_value
    padded = load_volume(singlecoil_file, SPEC, info=read_volume_info(singlecoil_file))
    assert padded.mask[..., 0].item() == 0  # padding_left = 1 in the fixture files


def test_max_value_falls_back_to_target_max(
    singlecoil_file: Path, edit_file: Callable[[Path, Callable[[h5py.File], None]], Path]
) -> None:
    edit_file(singlecoil_file, lambda hf: hf.attrs.__delitem__("max"))
    target = read_target(singlecoil_file, read_volume_info(singlecoil_file))
    ds = MRIDataset([singlecoil_file], SPEC, train=True)
    assert ds[0].max_value == pytest.approx(float(target.max()))
    assert load_volume(singlecoil_file, SPEC).max_value == pytest.approx(float(target.max()))


# --- refusals --------------------------------------------------------------------------------


def raises_naming(path: Path, *words: str) -> AbstractContextManager[object]:
    """Expect an IreconError whose message holds the file's name and every one of ``words``."""
    lookaheads = "".join(f"(?=.*{re.escape(w)})" for w in (path.name, *words))
    return pytest.raises(IreconError, match="(?s)" + lookaheads)


def test_mixed_challenges_are_refused(singlecoil_file: Path, multicoil_file: Path) -> None:
    with raises_naming(multicoil_file, "challenge"):
        MRIDataset([singlecoil_file, multicoil_file], SPEC, train=False)
    with raises_naming(singlecoil_file, "multicoil"):
        MRIDataset([singlecoil_file], SPEC, train=False, challenge="multicoil")
    with pytest.raises(IreconError, match="unknown challenge"):
        MRIDataset([singlecoil_file], SPEC, train=False, challenge="knee")


def test_test_style_file_in_training_is_refused(singlecoil_file: Path, test_style_file: Path) -> None:
    with raises_naming(test_style_file, "target"):
        MRIDataset([singlecoil_file, test_style_file], SPEC, train=True)


def test_missing_mask_spec_is_refused(singlecoil_file: Path, test_style_file: Path) -> None:
    with raises_naming(singlecoil_file, "mask"):
        MRIDataset([test_style_file, singlecoil_file], None, train=False)
    with raises_naming(singlecoil_file, "mask"):
        load_volume(singlecoil_file, None)
    assert len(MRIDataset([test_style_file], None, train=False)) == 3


def test_coil_counts_must_match_in_training(tmp_path: Path, volume_writer: Callable[..., Path]) -> None:
    four = volume_writer(tmp_path / "a" / "file_a.h5", "multicoil", num_coils=4)
    two = volume_writer(tmp_path / "a" / "file_b.h5", "multicoil", num_coils=2)
    with raises_naming(two, "coils"):
        MRIDataset([four, two], SPEC, train=True)
    assert len(MRIDataset([four, two], SPEC, train=False)) == 6


def test_resolution_smaller_than_target_is_refused(singlecoil_file: Path) -> None:
    with raises_naming(singlecoil_file, "resolution", "16x16"):
        MRIDataset([singlecoil_file], SPEC, train=True, resolution=(15, 20))
    with raises_naming(singlecoil_file, "resolution"):
        MRIDataset([singlecoil_file], SPEC, train=True, resolution=(20, 12))
    with pytest.raises(IreconError, match="training only"):
        MRIDataset([singlecoil_file], SPEC, train=False, resolution=(20, 20))
    with pytest.raises(IreconError, match="two positive integers"):
        MRIDataset([singlecoil_file], SPEC, train=True, resolution=(20, 0))


def test_slab_larger_than_a_volume_is_refused(
    tmp_path: Path, singlecoil_file: Path, volume_writer: Callable[..., Path]
) -> None:
    short = volume_writer(tmp_path / "short" / "file_short.h5", "singlecoil", num_slices=2)
    for train in (True, False):
        with raises_naming(short, "2 slices", "slab of 3"):
            MRIDataset([singlecoil_file, short], SPEC, train=train, slab=3)
    with pytest.raises(IreconError, match="slab"):
        MRIDataset([singlecoil_file], SPEC, train=True, slab=0)


def test_own_mask_with_target_is_used_in_training_and_resolution_must_fit(
    singlecoil_file: Path, edit_file: Callable[[Path, Callable[[h5py.File], None]], Path]
) -> None:
    own = np.zeros(KSPACE[1], dtype=bool)
    own[::3] = True
    edit_file(singlecoil_file, lambda hf: hf.create_dataset("mask", data=own))
    ds = MRIDataset([singlecoil_file], SPEC, train=True, resolution=(20, KSPACE[1]))
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        np.testing.assert_array_equal(ds[1].mask.reshape(-1).numpy(), own.astype(np.float32))
    with raises_naming(singlecoil_file, "own mask"):
        MRIDataset([singlecoil_file], SPEC, train=True, resolution=(20, 20))


def test_mask_spec_impossible_at_file_width_is_refused(singlecoil_file: Path) -> None:
    with raises_naming(singlecoil_file, "columns"):
        MRIDataset([singlecoil_file], MaskSpec("equispaced_fraction", (0.24,), (4,)), train=True)


def test_bad_input_files_and_indices(tmp_path: Path, singlecoil_file: Path) -> None:
    missing = tmp_path / "nope.h5"
    with raises_naming(missing):
        MRIDataset([singlecoil_file, missing], SPEC, train=True)
    with pytest.raises(IreconError, match="no files"):
        MRIDataset([], SPEC, train=True)
    ds = MRIDataset([singlecoil_file], SPEC, train=False)
    with pytest.raises(IndexError):
        ds[len(ds)]
    torch.testing.assert_close(ds[-1].kspace, ds[len(ds) - 1].kspace, rtol=0, atol=0)
    with pytest.raises(IreconError, match="epoch"):
        ds.set_epoch(-1)


# --- open files, workers -----------------------------------------------------------------------


def test_item_takes_the_epoch_and_keeps_one_handle_per_file(tmp_path: Path) -> None:
    files = make_files(tmp_path, "multicoil", slices=3)
    ds = MRIDataset(files, SPEC, train=True, slab=2, seed=4)
    ds.set_epoch(3)
    by_epoch = [ds[i] for i in range(len(ds))]
    ds.set_epoch(0)
    for i, sample in enumerate(by_epoch):
        again = ds.item(i, 3)
        torch.testing.assert_close(again.kspace, sample.kspace, rtol=0, atol=0)
        assert again.slice_index == sample.slice_index
    assert len(ds._files) == len(files)  # every read went through one kept handle per file
    ds.close()
    assert len(ds._files) == 0
    torch.testing.assert_close(ds.item(0, 3).kspace, by_epoch[0].kspace, rtol=0, atol=0)  # reopened on use


class _AtEpoch(torch.utils.data.Dataset):
    """``dataset.item(index, epochs[index])``: the dataset read from DataLoader workers."""

    def __init__(self, dataset: MRIDataset, epochs: list[int]) -> None:
        self.dataset, self.epochs = dataset, epochs

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset.item(index, self.epochs[index])


def test_workers_open_their_own_files_and_serve_what_the_main_process_does(tmp_path: Path) -> None:
    files = make_files(tmp_path, "singlecoil")
    ds = MRIDataset(files, SPEC, train=True)
    expected = [ds.item(i, 1) for i in range(len(ds))]  # the main process holds open handles now
    assert len(ds._files) == len(files)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives: no handles
    assert len(clone._files) == 0
    keys = [1] * len(ds)
    loader = DataLoader(_AtEpoch(ds, keys), batch_size=None, num_workers=2)
    for got, want in zip(loader, expected):
        torch.testing.assert_close(got.kspace, want.kspace, rtol=0, atol=0)
        torch.testing.assert_close(got.mask, want.mask, rtol=0, atol=0)
    ds.close()


def test_a_nan_slice_read_through_a_kept_handle_names_file_and_slice(tmp_path: Path) -> None:
    files = make_files(tmp_path, "singlecoil")
    with h5py.File(files[1], "r+") as hf:
        hf["kspace"][2, 0, 0] = np.nan
    ds = MRIDataset(files, SPEC, train=True)
    with pytest.raises(IreconError, match=re.escape(f"{files[1]}: kspace slice 2 contains NaN or Inf values")):
        ds[SLICES + 2]
    with pytest.raises(IreconError, match="kspace slice 2 contains NaN"):
        read_kspace(files[1], 2)

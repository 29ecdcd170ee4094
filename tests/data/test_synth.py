"""Tests for irecon.data.synth: fastMRI-format synthetic volumes (tiny sizes, so they run fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastmri
import h5py
import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset
from fastmri.data.subsample import create_mask_for_mask_type
from fastmri.data.transforms import center_crop

from irecon.data.synth import synth_filename, synthesize
from irecon.errors import IreconError

KSPACE = (64, 48)
RECON = (32, 32)
SMALL: dict[str, Any] = {"kspace_size": KSPACE, "recon_size": RECON, "slices": 3, "volumes": 2}


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with h5py.File(path, "r") as hf:
        return {key: hf[key][()] for key in hf}, dict(hf.attrs)


def _torch_image(kspace: np.ndarray) -> torch.Tensor:
    """fastMRI's own inverse FFT of complex numpy k-space, as a real (..., 2) tensor."""
    return fastmri.ifft2c(torch.view_as_real(torch.from_numpy(kspace)))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_slicedataset_reads_train_files(tmp_path: Path, challenge: str) -> None:
    paths = synthesize(tmp_path, challenge=challenge, coils=3, **SMALL)
    assert [p.name for p in paths] == [synth_filename("train", 0, i) for i in range(2)]
    assert [p.name for p in paths] == ["synth_train_0_000.h5", "synth_train_0_001.h5"]
    dataset = SliceDataset(tmp_path, challenge)
    assert len(dataset) == 2 * 3
    kspace, mask, target, attrs, fname, slice_num = dataset[4]
    expected = KSPACE if challenge == "singlecoil" else (3, *KSPACE)
    assert kspace.shape == expected and kspace.dtype == np.complex64
    assert mask is None
    assert target.shape == RECON and target.dtype == np.float32
    assert (fname, slice_num) == ("synth_train_0_001.h5", 1)
    assert attrs["padding_left"] == 0 and attrs["padding_right"] == KSPACE[1]
    assert attrs["encoding_size"] == (*KSPACE, 1) and attrs["recon_size"] == (*RECON, 1)
    assert attrs["acquisition"] == "CORPDFS_FBK" and attrs["patient_id"]
    data, _ = _read(paths[1])
    assert attrs["max"] == pytest.approx(float(data[dataset.recons_key].max()))
    assert attrs["norm"] == pytest.approx(float(np.linalg.norm(data[dataset.recons_key])))
    assert _read(paths[0])[1]["acquisition"] == "CORPD_FBK"


def test_slicedataset_reads_test_split(tmp_path: Path) -> None:
    synthesize(tmp_path, challenge="multicoil", split="test", coils=2, **SMALL)
    kspace, mask, target, attrs, fname, _ = SliceDataset(tmp_path, "multicoil")[0]
    assert kspace.shape == (2, *KSPACE) and target is None
    assert mask.shape == (KSPACE[1],) and mask.dtype == bool
    assert attrs["acceleration"] == 4 and attrs["num_low_frequency"] == round(KSPACE[1] * 0.08)
    assert fname == "synth_test_0_000.h5"


def test_singlecoil_target_is_cropped_magnitude(tmp_path: Path) -> None:
    data, _ = _read(synthesize(tmp_path, **SMALL)[0])
    expected = center_crop(fastmri.complex_abs(_torch_image(data["kspace"])), RECON).numpy()
    np.testing.assert_allclose(data["reconstruction_esc"], expected, rtol=1e-4, atol=1e-5 * expected.max())
    assert "reconstruction_rss" not in data


def test_multicoil_target_is_cropped_rss(tmp_path: Path) -> None:
    data, _ = _read(synthesize(tmp_path, challenge="multicoil", coils=4, **SMALL)[0])
    assert data["kspace"].shape == (3, 4, *KSPACE)
    coil_images = fastmri.complex_abs(_torch_image(data["kspace"]))
    expected = center_crop(fastmri.rss(coil_images, dim=1), RECON).numpy()
    np.testing.assert_allclose(data["reconstruction_rss"], expected, rtol=1e-4, atol=1e-5 * expected.max())
    assert "reconstruction_esc" not in data


def test_test_split_is_masked_without_target(tmp_path: Path) -> None:
    paths = synthesize(tmp_path, split="test", mask_type="equispaced", acceleration=4, center_fraction=0.1, **SMALL)
    data, attrs = _read(paths[0])
    assert set(data) == {"kspace", "mask", "ismrmrd_header"}
    mask = data["mask"]
    assert mask.dtype == bool and mask.shape == (KSPACE[1],)
    assert attrs["acceleration"] == 4 and attrs["num_low_frequency"] == round(KSPACE[1] * 0.1)
    assert "max" not in attrs and "norm" not in attrs
    assert np.all(data["kspace"][..., ~mask] == 0)
    assert np.all(np.abs(data["kspace"][..., mask]).sum(axis=(0, 1)) > 0)
    func = create_mask_for_mask_type("equispaced", [0.1], [4])
    reference, _ = func((*KSPACE, 2), seed=tuple(map(ord, paths[0].name)))
    np.testing.assert_array_equal(mask, reference.numpy().reshape(-1).astype(bool))


def test_test_split_keeps_the_train_content(tmp_path: Path) -> None:
    full, _ = _read(synthesize(tmp_path / "a", split="test", acceleration=1, center_fraction=0.1, **SMALL)[0])
    masked, _ = _read(synthesize(tmp_path / "b", split="test", **SMALL)[0])
    np.testing.assert_array_equal(masked["kspace"][..., masked["mask"]], full["kspace"][..., masked["mask"]])


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    for challenge in ("singlecoil", "multicoil"):
        first = synthesize(tmp_path / challenge / "a", challenge=challenge, coils=2, seed=7, **SMALL)
        second = synthesize(tmp_path / challenge / "b", challenge=challenge, coils=2, seed=7, **SMALL)
        for a, b in zip(first, second):
            assert a.name == b.name
            assert a.read_bytes() == b.read_bytes()


def test_content_varies_with_seed_volume_and_split(tmp_path: Path) -> None:
    seed0 = [_read(p)[0]["reconstruction_esc"] for p in synthesize(tmp_path / "a", seed=0, **SMALL)]
    seed1 = [_read(p)[0]["reconstruction_esc"] for p in synthesize(tmp_path / "b", seed=1, **SMALL)]
    val = [_read(p)[0]["reconstruction_esc"] for p in synthesize(tmp_path / "c", split="val", **SMALL)]
    assert not np.allclose(seed0[0], seed1[0])
    assert not np.allclose(seed0[0], val[0])
    assert not np.allclose(seed0[0], seed0[1])
    assert abs(_corr(seed0[0], seed0[1])) < 0.9


def test_adjacent_slices_differ_but_correlate(tmp_path: Path) -> None:
    paths = synthesize(tmp_path, kspace_size=KSPACE, recon_size=RECON, slices=8, volumes=3)
    for path in paths:
        target = _read(path)[0]["reconstruction_esc"]
        adjacent = [_corr(target[i], target[i + 1]) for i in range(7)]
        far = [_corr(target[i], target[i + 6]) for i in range(2)]
        assert min(adjacent) > 0.6
        assert np.mean(adjacent) > np.mean(far)
        for i in range(7):
            assert np.abs(target[i] - target[i + 1]).max() > 0.05 * target.max()


def test_image_lives_in_the_recon_box_and_noise_is_relative(tmp_path: Path) -> None:
    clean, _ = _read(synthesize(tmp_path / "a", noise=0.0, **SMALL)[0])
    noisy, _ = _read(synthesize(tmp_path / "b", noise=0.05, **SMALL)[0])
    image = _torch_image(clean["kspace"])
    energy = fastmri.complex_abs_sq(image)
    inside = center_crop(energy, RECON).sum()
    assert float(inside / energy.sum()) > 0.999
    rms = np.sqrt(np.mean(np.abs(clean["kspace"]) ** 2))
    ratio = np.sqrt(np.mean(np.abs(noisy["kspace"] - clean["kspace"]) ** 2)) / rms
    assert ratio == pytest.approx(0.05, rel=0.05)


def test_header_padding_and_sizes(tmp_path: Path) -> None:
    synthesize(tmp_path, kspace_size=(96, 50), recon_size=(40, 36), slices=2, volumes=1)
    _, _, target, attrs, _, _ = SliceDataset(tmp_path, "singlecoil")[1]
    assert target.shape == (40, 36)
    assert (attrs["padding_left"], attrs["padding_right"]) == (0, 50)
    assert attrs["encoding_size"] == (96, 50, 1) and attrs["recon_size"] == (40, 36, 1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_irecon_reader_accepts_the_files(tmp_path: Path, split: str) -> None:
    from irecon.data.volumes import read_volume_info

    path = synthesize(tmp_path, challenge="multicoil", split=split, coils=2, **SMALL)[0]
    info = read_volume_info(path, check_values=True)
    assert (info.num_slices, info.num_coils, info.kspace_shape) == (3, 2, KSPACE)
    assert (info.padding_left, info.padding_right) == (0, KSPACE[1])
    assert info.has_mask == (split == "test")


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    first = synthesize(tmp_path, **SMALL)
    before = first[1].read_bytes()
    with pytest.raises(IreconError) as info:
        synthesize(tmp_path, seed=0, **SMALL)
    assert info.value.path == str(first[0])
    assert str(info.value).startswith(f"{first[0]}: ")
    assert first[1].read_bytes() == before
    synthesize(tmp_path, noise=0.1, overwrite=True, **SMALL)
    assert first[1].read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in first]


def test_existing_file_blocks_the_whole_set(tmp_path: Path) -> None:
    (tmp_path / "synth_train_0_001.h5").write_bytes(b"keep")
    with pytest.raises(IreconError, match="synth_train_0_001.h5"):
        synthesize(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["synth_train_0_001.h5"]
    assert (tmp_path / "synth_train_0_001.h5").read_bytes() == b"keep"


@pytest.mark.parametrize(
    "bad",
    [
        {"challenge": "triplecoil"},
        {"split": "training"},
        {"mask_type": "spiral"},
        {"volumes": 0},
        {"slices": 0},
        {"coils": 0},
        {"seed": -1},
        {"kspace_size": (64, 7)},
        {"recon_size": (4, 32)},
        {"recon_size": (72, 32)},
        {"recon_size": (32, 50)},
        {"kspace_size": (64,)},
        {"kspace_size": (64.0, 48)},
        {"acceleration": 0},
        {"acceleration": 2.5},
        {"center_fraction": 0.0},
        {"center_fraction": 1.0},
        {"center_fraction": 0.005},
        {"center_fraction": 0.3, "acceleration": 4},
        {"noise": -0.1},
        {"noise": float("nan")},
    ],
)
def test_bad_arguments_refused_before_writing(tmp_path: Path, bad: dict[str, Any]) -> None:
    out = tmp_path / "out"
    with pytest.raises(IreconError):
        synthesize(out, **{**SMALL, **bad})
    assert not out.exists()


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(IreconError, match="not a directory"):
        synthesize(target, **SMALL)


def test_no_temporary_files_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synthesize(tmp_path / "ok", **SMALL)
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["synth_train_0_000.h5", "synth_train_0_001.h5"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize(tmp_path / "broken", **SMALL)
    assert list((tmp_path / "broken").iterdir()) == []


def test_does_not_touch_the_global_rng(tmp_path: Path) -> None:
    state = np.random.get_state()[1].copy()
    synthesize(tmp_path, split="test", **SMALL)
    assert np.array_equal(np.random.get_state()[1], state)

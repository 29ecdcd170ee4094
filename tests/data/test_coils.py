"""Coil compression: an SVD of the calibration region, applied per volume, in datasets and whole volumes."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from irecon.data.coils import calibration_columns, check_coil_count, compress, compression_matrix
from irecon.data.datasets import MRIDataset, load_volume
from irecon.data.header import write_header_xml
from irecon.data.masks import MaskSpec
from irecon.errors import IreconError


def _kspace(coils: int, sources: int | None = None, seed: int = 0) -> np.ndarray:
    """(2, coils, 16, 12) k-space: ``sources`` independent signals mixed into ``coils`` (full rank when None)."""
    rng = np.random.default_rng(seed)
    sources = coils if sources is None else sources
    signal = rng.standard_normal((2, sources, 16, 12)) + 1j * rng.standard_normal((2, sources, 16, 12))
    mixing = rng.standard_normal((coils, sources)) + 1j * rng.standard_normal((coils, sources))
    return np.einsum("cs,zshw->zchw", mixing, signal).astype(np.complex64)


def _rss(kspace: torch.Tensor) -> torch.Tensor:
    images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return images.abs().pow(2).sum(dim=-3).sqrt()


def test_as_many_virtual_coils_as_physical_keeps_the_rss_image() -> None:
    kspace = torch.from_numpy(_kspace(4))
    compressed = compress(kspace, compression_matrix(kspace[..., 4:8], 4), coil_dim=1)
    torch.testing.assert_close(_rss(compressed), _rss(kspace), rtol=1e-4, atol=1e-4)


def test_eight_coils_of_four_sources_compress_to_four_without_loss() -> None:
    kspace = torch.from_numpy(_kspace(8, sources=4, seed=1))
    compressed = compress(kspace, compression_matrix(kspace[..., 4:8], 4), coil_dim=1)
    assert compressed.shape == (2, 4, 16, 12)
    torch.testing.assert_close(_rss(compressed), _rss(kspace), rtol=1e-3, atol=1e-3)
    fewer = compress(kspace, compression_matrix(kspace[..., 4:8], 2), coil_dim=1)
    assert (_rss(fewer) - _rss(kspace)).abs().max() > 0.1  # two of four sources cannot hold them all


def test_compression_keeps_unsampled_lines_zero() -> None:
    kspace = torch.from_numpy(_kspace(6, seed=2))
    kspace[..., ::3] = 0
    compressed = compress(kspace, compression_matrix(kspace[..., 5:7], 3), coil_dim=1)
    assert compressed[..., ::3].abs().max() == 0


def test_calibration_region_is_the_masks_centre_run_at_most_24_lines() -> None:
    mask = np.zeros(100, dtype=np.float32)
    mask[44:56] = 1
    assert calibration_columns(mask, 100) == slice(44, 56)
    assert calibration_columns(None, 100) == slice(38, 62)
    with pytest.raises(IreconError, match="does not sample the k-space centre"):
        calibration_columns(np.zeros(100), 100)


def test_fewer_coils_than_virtual_is_one_line() -> None:
    with pytest.raises(IreconError, match="file has 3 coils, fewer than the 4 virtual coils"):
        check_coil_count(3, 4, "a.h5")


def _write(path: Path, kspace: np.ndarray) -> Path:
    with h5py.File(path, "w") as hf:
        hf["kspace"] = kspace
        hf["ismrmrd_header"] = write_header_xml((16, 12, 1), (8, 8, 1), center=6, maximum=11)
        images = _rss(torch.from_numpy(kspace))[..., 4:12, 2:10]
        hf["reconstruction_rss"] = images.numpy().astype(np.float32)
    return path


def test_load_volume_and_datasets_compress_any_coil_count(tmp_path: Path) -> None:
    eight = _write(tmp_path / "eight.h5", _kspace(8, seed=3))
    five = _write(tmp_path / "five.h5", _kspace(5, seed=4))
    spec = MaskSpec("equispaced", (0.34,), (2,))
    volume = load_volume(eight, spec, virtual_coils=4)
    assert volume.kspace.shape == (2, 4, 16, 12) and volume.info.num_coils == 8
    plain = load_volume(eight, spec)
    torch.testing.assert_close(volume.mask, plain.mask)
    assert volume.target is not None and plain.target is not None and torch.equal(volume.target, plain.target)
    train = MRIDataset([eight, five], spec, train=True, virtual_coils=4)
    assert {tuple(train[i].kspace.shape) for i in range(len(train))} == {(4, 16, 12)}
    with pytest.raises(IreconError, match="training needs one coil count"):
        MRIDataset([eight, five], spec, train=True)
    with pytest.raises(IreconError, match="fewer than the 6 virtual coils"):
        MRIDataset([eight, five], spec, train=False, virtual_coils=6)


def _irecon(*args: object) -> str:
    from click.testing import CliRunner

    from irecon.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], terminal_width=200)
    return f"{result.exit_code}\n{result.output}"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_4_coil_checkpoint_reconstructs_8_coil_data_and_beats_zero_filled(tmp_path: Path) -> None:
    sizes = ["--kspace-size", 64, 48, "--recon-size", 32, 32, "--slices", 4]
    multicoil = ["--challenge", "multicoil", "--split"]
    assert (
        _irecon("synth", tmp_path / "train", *multicoil, "train", "--coils", 4, "--volumes", 4, "--seed", 1, *sizes)[0]
        == "0"
    )
    assert (
        _irecon("synth", tmp_path / "val", *multicoil, "val", "--coils", 8, "--volumes", 1, "--seed", 2, *sizes)[0]
        == "0"
    )
    assert (
        _irecon("synth", tmp_path / "two", *multicoil, "val", "--coils", 2, "--volumes", 1, "--seed", 3, *sizes)[0]
        == "0"
    )
    out = _irecon(
        "train", tmp_path / "train", "--val", tmp_path / "val", "--model", "tiny-2d", "--out", tmp_path / "run",
        "--device", "cpu", "--epochs", 4, "--lr", 3e-3, "--batch-size", 2, "--virtual-coils", 4,
        "--accelerations", 4, "--center-fractions", 0.08,
    )  # fmt: skip
    assert out.startswith("0\n"), out
    checkpoint = tmp_path / "run" / "best.pt"
    assert torch.load(checkpoint, weights_only=True)["virtual_coils"] == 4
    out = _irecon(
        "reconstruct",
        tmp_path / "val",
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "r",
        "--json",
        tmp_path / "r.json",
    )
    assert out.startswith("0\n"), out
    model = json.loads((tmp_path / "r.json").read_text())
    assert model["virtual_coils"] == 4
    out = _irecon(
        "reconstruct",
        tmp_path / "val",
        "--model",
        "zero-filled",
        "--out",
        tmp_path / "z",
        "--json",
        tmp_path / "z.json",
    )
    assert out.startswith("0\n"), out
    zero_filled = json.loads((tmp_path / "z.json").read_text())  # all 8 physical coils, no compression
    assert zero_filled["virtual_coils"] is None
    assert model["mean"]["metrics"]["ssim"] > zero_filled["mean"]["metrics"]["ssim"]
    out = _irecon("reconstruct", tmp_path / "two", "--checkpoint", checkpoint, "--out", tmp_path / "r2")
    assert out.startswith("1\nerror: ") and out.count("\n") == 2, out
    assert "takes 4 virtual coils" in out and "(2 coils)" in out

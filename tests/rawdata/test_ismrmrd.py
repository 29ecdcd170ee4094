"""ISMRMRD files written with the ``ismrmrd`` API come back from ``irecon import`` as they were written."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from irecon.data.volumes import read_volume_info
from irecon.errors import IreconError
from irecon.rawdata.options import ImportOptions
from irecon.rawdata.run import import_raw
from tests.rawdata.ismrmrd_files import acquisition, header, ismrmrd, random_kspace, write_2d, write_3d, write_file

SHAPE = (3, 2, 16, 12)  # slices, coils, readout, phase


def _import(raw: Path, out: Path, **kwargs: object) -> list[Path]:
    report = import_raw(ImportOptions([raw], out, **kwargs))
    assert report.ok, [f.error for f in report.files]
    return [w.path for f in report.files for w in f.outputs]


def test_fully_sampled_2d_round_trip_is_exact_with_a_target(tmp_path: Path) -> None:
    kspace = random_kspace(SHAPE)
    [out] = _import(write_2d(tmp_path / "raw.h5", kspace), tmp_path / "out")
    with h5py.File(out) as hf:
        np.testing.assert_array_equal(hf["kspace"][()], kspace)
        assert "mask" not in hf
        target = hf["reconstruction_rss"][()]
        assert hf.attrs["max"] == pytest.approx(target.max())
        assert hf.attrs["norm"] == pytest.approx(np.linalg.norm(target), rel=1e-5)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    rss = np.sqrt((np.abs(images) ** 2).sum(axis=1))
    np.testing.assert_allclose(target, rss[:, 4:12, :], rtol=1e-4, atol=1e-6)  # recon 8x12, centred
    info = read_volume_info(out, check_values=True)
    assert (info.num_coils, info.target_key, info.recon_size[:2]) == (2, "reconstruction_rss", (8, 12))


def test_undersampled_2d_keeps_written_lines_and_derives_the_mask(tmp_path: Path) -> None:
    kspace = random_kspace(SHAPE, seed=1)
    lines = [0, 3, 5, 6, 7, 9]  # centre run 5..7 around column 6
    [out] = _import(write_2d(tmp_path / "raw.h5", kspace, lines), tmp_path / "out")
    expected = np.zeros_like(kspace)
    expected[..., lines] = kspace[..., lines]
    with h5py.File(out) as hf:
        np.testing.assert_array_equal(hf["kspace"][()], expected)
        assert "reconstruction_rss" not in hf
        np.testing.assert_array_equal(np.flatnonzero(hf["mask"][()]), lines)
        assert hf.attrs["acceleration"] == pytest.approx(12 / 6)
        assert hf.attrs["num_low_frequency"] == 3
    assert read_volume_info(out).is_test_style


def test_3d_partitions_become_slices_by_an_inverse_fft(tmp_path: Path) -> None:
    kspace = random_kspace((4, 2, 8, 6), seed=2)
    [out] = _import(write_3d(tmp_path / "raw3d.h5", kspace), tmp_path / "out")
    expected = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=0), axis=0, norm="ortho"), axes=0)
    with h5py.File(out) as hf:
        np.testing.assert_allclose(hf["kspace"][()], expected, rtol=0, atol=1e-6)


def test_undersampled_3d_along_ky_keeps_a_1d_mask(tmp_path: Path) -> None:
    kspace = random_kspace((4, 2, 8, 6), seed=3)
    lines = [1, 2, 3, 4]
    [out] = _import(write_3d(tmp_path / "raw3d.h5", kspace, lines), tmp_path / "out")
    written = np.zeros_like(kspace)
    written[..., lines] = kspace[..., lines]
    expected = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(written, axes=0), axis=0, norm="ortho"), axes=0)
    with h5py.File(out) as hf:
        np.testing.assert_allclose(hf["kspace"][()], expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(np.flatnonzero(hf["mask"][()]), lines)


def test_averages_are_averaged_repetitions_split_navigators_and_noise_left_out(tmp_path: Path) -> None:
    first, second = random_kspace((1, 2, 8, 6), seed=4), random_kspace((1, 2, 8, 6), seed=5)
    repeat = random_kspace((1, 2, 8, 6), seed=6)
    acqs = [acquisition(first[0, :, :, y], kspace_encode_step_1=y, average=0) for y in range(6)]
    acqs += [acquisition(second[0, :, :, y], kspace_encode_step_1=y, average=1) for y in range(6)]
    acqs += [acquisition(repeat[0, :, :, y], kspace_encode_step_1=y, repetition=1) for y in range(6)]
    acqs.append(acquisition(random_kspace((2, 8), 7) * 100, [ismrmrd.ACQ_IS_NAVIGATION_DATA], kspace_encode_step_1=2))
    raw = write_file(tmp_path / "scan.h5", header(8, 6), acqs)
    report = import_raw(ImportOptions([raw], tmp_path / "out", prewhiten=False))
    [imported] = report.files
    assert [w.path.name for w in imported.outputs] == ["scan_repetition0.h5", "scan_repetition1.h5"]
    assert any("navigator" in note for note in imported.notes)
    with h5py.File(imported.outputs[0].path) as hf:
        np.testing.assert_allclose(hf["kspace"][()], (first + second) / 2, rtol=0, atol=1e-6)
    with h5py.File(imported.outputs[1].path) as hf:
        np.testing.assert_array_equal(hf["kspace"][()], repeat)


def test_noise_scan_prewhitens_the_coils(tmp_path: Path) -> None:
    mixing = np.array([[1.0, 0.0], [0.8, 0.3]], dtype=np.complex64)
    noise = mixing @ random_kspace((2, 4000), seed=8)
    kspace = random_kspace((1, 2, 8, 6), seed=9)
    acqs = [acquisition(noise[:, i : i + 8], [ismrmrd.ACQ_IS_NOISE_MEASUREMENT]) for i in range(0, 4000, 8)]
    acqs += [acquisition(kspace[0, :, :, y], kspace_encode_step_1=y) for y in range(6)]
    raw = write_file(tmp_path / "noisy.h5", header(8, 6), acqs)
    [imported] = import_raw(ImportOptions([raw], tmp_path / "out")).files
    assert any("prewhitened" in note for note in imported.notes)
    covariance = noise @ noise.conj().T / (noise.shape[1] - 1)
    whiten = np.linalg.inv(np.linalg.cholesky(covariance))
    with h5py.File(imported.outputs[0].path) as hf:
        got = hf["kspace"][()]
    np.testing.assert_allclose(got, np.einsum("ij,sjhw->sihw", whiten, kspace), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_file(p, header(8, 6, trajectory="radial"), [acquisition(random_kspace((2, 8)))]), "radial"),
        (
            lambda p: write_file(p, header(8, 6), [acquisition(random_kspace((2, 8), s)) for s in range(6)]),
            "encoding counters are missing",
        ),
        (
            lambda p: write_file(p, header(8, 6), [acquisition(random_kspace((2, 8)), kspace_encode_step_1=9)]),
            "outside the encoded matrix",
        ),
    ],
)
def test_unsupported_files_are_one_line_and_write_nothing(tmp_path: Path, make: object, message: str) -> None:
    raw = make(tmp_path / "bad.h5")  # type: ignore[operator]
    [imported] = import_raw(ImportOptions([raw], tmp_path / "out")).files
    assert imported.error is not None and message in imported.error and "\n" not in imported.error
    assert not list((tmp_path / "out").iterdir())


def test_truncated_file_is_one_line(tmp_path: Path) -> None:
    raw = write_2d(tmp_path / "full.h5", random_kspace(SHAPE))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    [imported] = import_raw(ImportOptions([cut], tmp_path / "out")).files
    assert imported.error is not None and "truncated" in imported.error


def test_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    raw = write_2d(tmp_path / "raw.h5", random_kspace(SHAPE))
    _import(raw, tmp_path / "out")
    [imported] = import_raw(ImportOptions([raw], tmp_path / "out")).files
    assert imported.error is not None and "--overwrite" in imported.error
    _import(raw, tmp_path / "out", overwrite=True)


def test_unknown_suffix_is_refused_before_work(tmp_path: Path) -> None:
    (tmp_path / "scan.raw").write_bytes(b"x")
    with pytest.raises(IreconError, match="unknown raw format"):
        import_raw(ImportOptions([tmp_path / "scan.raw"], tmp_path / "out"))


def test_fastmris_own_slice_dataset_reads_imported_files(tmp_path: Path) -> None:
    from fastmri.data import SliceDataset

    full = write_2d(tmp_path / "full.h5", random_kspace(SHAPE, seed=12))
    under = write_2d(tmp_path / "under.h5", random_kspace(SHAPE, seed=13), [0, 3, 5, 6, 7, 9])
    _import(full, tmp_path / "out")
    _import(under, tmp_path / "out")
    dataset = SliceDataset(tmp_path / "out", "multicoil")
    samples = {(fname, index): (kspace, mask, target, attrs) for kspace, mask, target, attrs, fname, index in dataset}
    assert len(samples) == 2 * SHAPE[0]
    kspace, mask, target, attrs = samples[("full.h5", 1)]
    assert kspace.shape == SHAPE[1:] and mask is None and target.shape == (8, 12)
    assert (attrs["padding_left"], attrs["padding_right"]) == (0, 12)
    kspace, mask, target, attrs = samples[("under.h5", 2)]
    assert target is None and np.flatnonzero(mask).tolist() == [0, 3, 5, 6, 7, 9]
    assert attrs["num_low_frequency"] == 3


def test_mrd_suffix_and_an_asymmetric_echo_are_placed_by_centre_sample(tmp_path: Path) -> None:
    lines = random_kspace((2, 12, 6), seed=14)  # 12 of 16 readout samples, the echo at sample 4
    acqs = []
    for y in range(6):
        acq = acquisition(lines[:, :, y], kspace_encode_step_1=y)
        acq.center_sample = 4
        acqs.append(acq)
    raw = write_file(tmp_path / "partial_echo.mrd", header(16, 6), acqs)
    [out] = _import(raw, tmp_path / "out")
    with h5py.File(out) as hf:
        kspace = hf["kspace"][0]
    np.testing.assert_array_equal(kspace[:, 4:16, :], lines)  # sample 4 lands on row 16 // 2 = 8
    assert not kspace[:, :4, :].any()

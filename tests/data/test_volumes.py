"""Reading fastMRI volumes: good files read right, each bad input is one clear error."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from irecon.data.header import write_header_xml
from irecon.data.volumes import (
    find_volumes,
    read_kspace,
    read_mask,
    read_target,
    read_volume_info,
)
from irecon.errors import IreconError


def _raises(path: Path, match: str, check_values: bool = False) -> IreconError:
    with pytest.raises(IreconError, match=match) as info:
        read_volume_info(path, check_values=check_values)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return info.value


def _replace(hf: h5py.File, name: str, data: object) -> None:
    del hf[name]
    hf.create_dataset(name, data=data)


# --- good files -------------------------------------------------------------------------------


def test_singlecoil_file_reads(singlecoil_file: Path, layout) -> None:
    info = read_volume_info(singlecoil_file, check_values=True)
    assert info.path == singlecoil_file
    assert info.challenge == "singlecoil"
    assert (info.num_slices, info.num_coils, info.kspace_shape) == (
        layout.num_slices,
        1,
        layout.kspace_shape,
    )
    assert info.target_key == "reconstruction_esc"
    assert info.target_shape == layout.recon_shape
    assert not info.has_mask and not info.is_test_style
    assert info.encoding_size == (*layout.kspace_shape, 1)
    assert info.recon_size == (*layout.recon_shape, 1)
    assert info.crop_size == layout.recon_shape
    assert (info.padding_left, info.padding_right) == layout.padding
    assert info.attrs["acquisition"] == "CORPD_FBK"
    assert info.attrs["patient_id"] == "synthetic0000"
    assert type(info.attrs["max"]) is float
    assert info.max_value == info.attrs["max"]

    kspace = read_kspace(singlecoil_file)
    assert kspace.shape == (layout.num_slices, *layout.kspace_shape) and kspace.dtype == np.complex64
    target = read_target(singlecoil_file, info)
    assert target is not None
    assert target.shape == (layout.num_slices, *layout.recon_shape) and target.dtype == np.float32
    assert float(target.max()) == pytest.approx(info.max_value)
    assert read_mask(singlecoil_file) is None


def test_multicoil_file_reads(multicoil_file: Path, layout) -> None:
    info = read_volume_info(multicoil_file)
    assert info.challenge == "multicoil"
    assert (info.num_slices, info.num_coils, info.kspace_shape) == (
        layout.num_slices,
        layout.num_coils,
        layout.kspace_shape,
    )
    assert info.target_key == "reconstruction_rss"
    assert info.attrs["acquisition"] == "AXT2"
    assert read_kspace(multicoil_file, 1).shape == (layout.num_coils, *layout.kspace_shape)


def test_test_style_file_reads(test_style_file: Path, layout) -> None:
    info = read_volume_info(test_style_file)
    assert info.has_mask and info.is_test_style
    assert info.target_key is None and info.target_shape is None
    assert info.max_value is None
    assert info.attrs["acceleration"] == 4 and info.attrs["num_low_frequency"] == 4
    assert type(info.attrs["acceleration"]) is int
    assert read_target(test_style_file, info) is None
    mask = read_mask(test_style_file)
    assert mask is not None
    assert mask.shape == (layout.kspace_shape[1],) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}


def test_singlecoil_falls_back_to_rss_target(singlecoil_file: Path, edit_file) -> None:
    edit_file(singlecoil_file, lambda hf: hf.__delitem__("reconstruction_esc"))
    assert read_volume_info(singlecoil_file).target_key == "reconstruction_rss"


def test_read_kspace_slice_selections(singlecoil_file: Path) -> None:
    full = read_kspace(singlecoil_file)
    np.testing.assert_array_equal(read_kspace(singlecoil_file, slice(1, 3)), full[1:3])
    np.testing.assert_array_equal(read_kspace(singlecoil_file, -1), full[-1])
    with pytest.raises(IreconError, match="slice 3 is out of range for a volume of 3 slices"):
        read_kspace(singlecoil_file, 3)


def test_fastmri_slicedataset_reads_fixture_files(singlecoil_file: Path, test_style_file: Path, layout) -> None:
    """fastMRI's own reader accepts the files and derives the same header fields as irecon."""
    from fastmri.data import SliceDataset

    dataset = SliceDataset(singlecoil_file.parent, "singlecoil")
    assert len(dataset) == layout.num_slices
    kspace, mask, target, attrs, fname, slice_num = dataset[1]
    info = read_volume_info(singlecoil_file)
    assert mask is None and fname == singlecoil_file.name and slice_num == 1
    np.testing.assert_array_equal(kspace, read_kspace(singlecoil_file, 1))
    np.testing.assert_array_equal(target, read_target(singlecoil_file, info, 1))
    assert (attrs["padding_left"], attrs["padding_right"]) == (
        info.padding_left,
        info.padding_right,
    )
    assert attrs["encoding_size"] == info.encoding_size
    assert attrs["recon_size"] == info.recon_size

    test_dataset = SliceDataset(test_style_file.parent, "singlecoil")
    _, test_mask, test_target, _, _, _ = test_dataset[0]
    assert test_target is None
    np.testing.assert_array_equal(np.asarray(test_mask, dtype=np.float32), read_mask(test_style_file))


def test_header_writer_padding_matches_fastmri_formula(tmp_path: Path, volume_writer, layout) -> None:
    header = write_header_xml((640, 368, 1), (320, 320, 1), center=183, maximum=366)
    assert b'xmlns="http://www.ismrm.org/ISMRMRD"' in header
    path = volume_writer(tmp_path / "f.h5")
    with h5py.File(path, "r+") as hf:
        _replace(hf, "ismrmrd_header", header)
        _replace(hf, "kspace", np.zeros((layout.num_slices, 640, 368), dtype=np.complex64))
        _replace(hf, "reconstruction_esc", np.zeros((layout.num_slices, 320, 320), dtype=np.float32))
        del hf["reconstruction_rss"]
    info = read_volume_info(path)
    assert (info.padding_left, info.padding_right) == (1, 368)
    assert info.encoding_size == (640, 368, 1)


# --- finding files ----------------------------------------------------------------------------


def test_find_volumes_expands_folders_and_notes_stray_files(tmp_path: Path, volume_writer) -> None:
    folder = tmp_path / "vols"
    b = volume_writer(folder / "b.h5")
    a = volume_writer(folder / "a.h5")
    (folder / "README.txt").write_text("not data")
    (folder / "nested").mkdir()
    files, notes = find_volumes([folder, a])
    assert files == [a, b]
    assert notes == [f"skipped {folder / 'README.txt'}: not an .h5 file"]


def test_find_volumes_skips_named_non_h5_file(tmp_path: Path, volume_writer) -> None:
    good = volume_writer(tmp_path / "good.h5")
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    assert find_volumes([stray, good]) == ([good], [f"skipped {stray}: not an .h5 file"])


def test_missing_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(IreconError, match="no such file or folder") as info:
        find_volumes([missing])
    assert str(info.value) == f"{missing}: no such file or folder"
    with pytest.raises(IreconError, match=f"{missing}: no such file"):
        read_volume_info(missing)


def test_a_symbolic_link_loop_is_named_not_called_missing(tmp_path: Path) -> None:
    loop = tmp_path / "loop.h5"
    loop.symlink_to(loop)
    expected = f"{loop}: a symbolic link loop (a link that leads back to itself)"
    with pytest.raises(IreconError) as listed:
        find_volumes([loop])
    with pytest.raises(IreconError) as opened:
        read_volume_info(loop)
    assert str(listed.value) == str(opened.value) == expected


def test_folder_without_h5_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(IreconError, match="folder has no .h5 files") as info:
        find_volumes([tmp_path])
    assert str(info.value).startswith(f"{tmp_path}: ")


# --- bad files: one test per problem ----------------------------------------------------------


def test_non_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.h5"
    path.write_text("this is not HDF5")
    _raises(path, "not a readable HDF5 file")


def test_truncated_hdf5_file(singlecoil_file: Path) -> None:
    data = singlecoil_file.read_bytes()
    singlecoil_file.write_bytes(data[: len(data) // 2])
    _raises(singlecoil_file, "not a readable HDF5 file")
    with pytest.raises(IreconError, match="not a readable HDF5 file"):
        read_kspace(singlecoil_file)


def test_no_kspace(singlecoil_file: Path, edit_file) -> None:
    edit_file(singlecoil_file, lambda hf: hf.__delitem__("kspace"))
    _raises(singlecoil_file, "no kspace dataset")
    with pytest.raises(IreconError, match="no kspace dataset"):
        read_kspace(singlecoil_file)


def test_kspace_wrong_rank(singlecoil_file: Path, edit_file, layout) -> None:
    edit_file(
        singlecoil_file,
        lambda hf: _replace(hf, "kspace", np.zeros(layout.kspace_shape, np.complex64)),
    )
    _raises(singlecoil_file, r"kspace has rank 2 \(shape \(32, 24\)\)")


def test_kspace_real_dtype(singlecoil_file: Path, edit_file, layout) -> None:
    edit_file(
        singlecoil_file,
        lambda hf: _replace(hf, "kspace", np.zeros((layout.num_slices, *layout.kspace_shape), np.float32)),
    )
    _raises(singlecoil_file, "kspace has dtype float32; expected complex")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_kspace_nan_or_inf(singlecoil_file: Path, edit_file, bad: float, layout) -> None:
    def poison(hf: h5py.File) -> None:
        hf["kspace"][2, 5, 5] = bad

    edit_file(singlecoil_file, poison)
    read_volume_info(singlecoil_file)  # the header-only check does not read values
    _raises(singlecoil_file, "kspace slice 2 contains NaN or Inf", check_values=True)
    with pytest.raises(IreconError) as info:
        read_kspace(singlecoil_file)
    assert str(info.value) == f"{singlecoil_file}: kspace slice 2 contains NaN or Inf values"  # as check says
    with pytest.raises(IreconError, match="kspace slice 2 contains"):
        read_kspace(singlecoil_file, slice(1, 3))
    with pytest.raises(IreconError, match="kspace slice 2 contains"):
        read_kspace(singlecoil_file, -1)
    assert read_kspace(singlecoil_file, 0).shape == layout.kspace_shape  # a clean slice still reads


def test_missing_header(singlecoil_file: Path, edit_file) -> None:
    edit_file(singlecoil_file, lambda hf: hf.__delitem__("ismrmrd_header"))
    _raises(singlecoil_file, "no ismrmrd_header dataset")


def test_header_not_xml(singlecoil_file: Path, edit_file) -> None:
    edit_file(singlecoil_file, lambda hf: _replace(hf, "ismrmrd_header", b"<ismrmrdHeader><encoding>"))
    _raises(singlecoil_file, "ismrmrd_header is not valid XML")


def test_header_missing_field(singlecoil_file: Path, edit_file, layout) -> None:
    header = write_header_xml((*layout.kspace_shape, 1), (*layout.recon_shape, 1), 11, 22).replace(
        b"<center>11</center>", b""
    )
    edit_file(singlecoil_file, lambda hf: _replace(hf, "ismrmrd_header", header))
    _raises(
        singlecoil_file,
        "ismrmrd_header lacks encoding/encodingLimits/kspace_encoding_step_1/center",
    )


def test_header_without_namespace(singlecoil_file: Path, edit_file, layout) -> None:
    header = write_header_xml((*layout.kspace_shape, 1), (*layout.recon_shape, 1), 11, 22).replace(
        b' xmlns="http://www.ismrm.org/ISMRMRD"', b""
    )
    edit_file(singlecoil_file, lambda hf: _replace(hf, "ismrmrd_header", header))
    _raises(singlecoil_file, "ismrmrd_header lacks encoding/encodedSpace/matrixSize/x")


def test_header_field_not_integer(singlecoil_file: Path, edit_file, layout) -> None:
    header = write_header_xml((*layout.kspace_shape, 1), (*layout.recon_shape, 1), 11, 22).replace(
        b"<z>1</z>", b"<z>one</z>", 1
    )
    edit_file(singlecoil_file, lambda hf: _replace(hf, "ismrmrd_header", header))
    _raises(
        singlecoil_file,
        "ismrmrd_header field encoding/encodedSpace/matrixSize/z is not an integer: 'one'",
    )


def test_target_shape_disagrees_with_header(singlecoil_file: Path, edit_file, layout) -> None:
    edit_file(
        singlecoil_file,
        lambda hf: _replace(hf, "reconstruction_esc", np.zeros((layout.num_slices, 20, 16), np.float32)),
    )
    _raises(
        singlecoil_file,
        "reconstruction_esc images are 20x16 but the ismrmrd_header recon size is 16x16",
    )


def test_target_slice_count_disagrees_with_kspace(singlecoil_file: Path, edit_file, layout) -> None:
    edit_file(
        singlecoil_file,
        lambda hf: _replace(
            hf,
            "reconstruction_esc",
            np.zeros((layout.num_slices + 1, *layout.recon_shape), np.float32),
        ),
    )
    _raises(singlecoil_file, "reconstruction_esc has 4 slices but kspace has 3")


def test_empty_volume(tmp_path: Path, volume_writer) -> None:
    path = volume_writer(tmp_path / "empty.h5", num_slices=0)
    _raises(path, r"kspace has 0 slices \(empty volume\)")


def test_mask_length_disagrees_with_kspace(test_style_file: Path, edit_file, layout) -> None:
    edit_file(
        test_style_file,
        lambda hf: _replace(hf, "mask", np.ones(layout.kspace_shape[1] + 1, dtype=bool)),
    )
    _raises(test_style_file, "mask has length 25 but kspace width W is 24")


def test_bad_max_attribute(singlecoil_file: Path, edit_file) -> None:
    edit_file(singlecoil_file, lambda hf: hf.attrs.__setitem__("max", "big"))
    _raises(singlecoil_file, "attribute max is not a number: 'big'")


def test_folder_given_to_reader(tmp_path: Path) -> None:
    _raises(tmp_path, "is a folder, not an .h5 file")


def test_target_nan(singlecoil_file: Path, edit_file) -> None:
    def poison(hf: h5py.File) -> None:
        hf["reconstruction_esc"][0, 1, 1] = np.nan

    edit_file(singlecoil_file, poison)
    _raises(singlecoil_file, "reconstruction_esc contains NaN or Inf", check_values=True)


def test_kspace_is_a_group(singlecoil_file: Path, edit_file) -> None:
    def regroup(hf: h5py.File) -> None:
        del hf["kspace"]
        hf.create_group("kspace")

    edit_file(singlecoil_file, regroup)
    _raises(singlecoil_file, "kspace is a group, not a dataset")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.full(24, 2, dtype=np.int8), "mask holds values other than 0 and 1"),
        (np.zeros(24, dtype=bool), "mask samples no k-space lines"),
        (np.ones((2, 24), dtype=bool), r"mask is not a 1-D array \(shape \(2, 24\)\)"),
    ],
)
def test_bad_mask(test_style_file: Path, edit_file, mask: np.ndarray, message: str) -> None:
    edit_file(test_style_file, lambda hf: _replace(hf, "mask", mask))
    _raises(test_style_file, message)

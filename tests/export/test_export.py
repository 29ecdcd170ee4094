"""NIfTI and DICOM export of reconstructions: geometry, round trips through nibabel, pydicom and
dcm2niix, one-line errors, overwrite refusal and atomic output."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest

import irecon.export.dicom as dicom_module
from irecon.data.header import (
    GAP_UNKNOWN,
    ORIENTATION_UNKNOWN,
    SPACING_ASSUMED,
    geometry_from_header,
    scan_parameters_from_header,
    write_header_xml,
)
from irecon.data.synth import synthesize
from irecon.errors import IreconError, spell_options
from irecon.export import (
    ExportOptions,
    SeriesInfo,
    export_reconstruction,
    export_volume,
    images_from_nifti,
    quantise,
    write_dicom_series,
)

SLICES, ROWS, COLUMNS = 4, 32, 24
# reconSpace 14 mm over 32 rows and 12 mm over 24 columns: distinct spacings catch swapped axes.
ROW_MM, COLUMN_MM, SLICE_MM = 14 / 32, 12 / 24, 3.0
KNEE_HEADER = f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <measurementInformation><patientPosition>FFS</patientPosition>
    <protocolName>COR PD</protocolName></measurementInformation>
  <acquisitionSystemInformation><systemVendor>SIEMENS</systemVendor>
    <systemModel>Skyra</systemModel><systemFieldStrength_T>2.89362</systemFieldStrength_T>
  </acquisitionSystemInformation>
  <encoding>
    <encodedSpace><matrixSize><x>64</x><y>48</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>28</x><y>24</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{ROWS}</x><y>{COLUMNS}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>14</x><y>12</y><z>3</z></fieldOfView_mm></reconSpace>
    <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>47</maximum>
      <center>24</center></kspace_encoding_step_1></encodingLimits>
  </encoding>
  <sequenceParameters><TR>2750</TR><TE>27</TE><TI>100</TI><flipAngle_deg>140</flipAngle_deg>
  </sequenceParameters>
</ismrmrdHeader>
""".encode()
RECON_ATTRS = {"model": "irim-tiny", "checkpoint": "/runs/a/best.pt", "acceleration": 4, "mask_type": "equispaced"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny synthetic fastMRI single-coil files with ``reconstruction_esc`` targets."""
    folder = tmp_path_factory.mktemp("inputs")
    return synthesize(folder, kspace_size=(64, 48), recon_size=(ROWS, COLUMNS), volumes=2, slices=SLICES)


def target_of(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        return hf["reconstruction_esc"][()]


def write_recon(path: Path, images: np.ndarray, header: bytes | None = KNEE_HEADER, attrs: dict | None = None) -> Path:
    """A reconstruction file as ``irecon reconstruct`` writes it (or, without header, used to)."""
    with h5py.File(path, "w") as hf:
        hf.create_dataset("reconstruction", data=images.astype(np.float32))
        if header is not None:
            hf.create_dataset("ismrmrd_header", data=np.bytes_(header))
        hf.attrs.update(RECON_ATTRS if attrs is None else attrs)
    return path


@pytest.fixture
def recons(tmp_path: Path, inputs: list[Path]) -> list[Path]:
    """New-style reconstruction files of the two inputs, named like them."""
    folder = tmp_path / "recons"
    folder.mkdir()
    return [write_recon(folder / p.name, target_of(p)) for p in inputs]


def read_series(folder: Path) -> list[pydicom.Dataset]:
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"IM{i:04d}.dcm" for i in range(1, SLICES + 1)]
    return [pydicom.dcmread(f) for f in files]


def rescaled(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# Geometry


def test_geometry_comes_from_the_recon_space_and_says_orientation_is_unknown() -> None:
    geometry = geometry_from_header(KNEE_HEADER)
    assert (geometry.row_spacing, geometry.column_spacing) == (ROW_MM, COLUMN_MM)
    assert geometry.slice_thickness == geometry.slice_spacing == SLICE_MM
    assert geometry.assumptions == (ORIENTATION_UNKNOWN, GAP_UNKNOWN)
    assert not geometry.spacing_assumed
    assert geometry.patient_position == "FFS"
    scan = scan_parameters_from_header(KNEE_HEADER)
    assert (scan.manufacturer, scan.model_name, scan.protocol_name) == ("SIEMENS", "Skyra", "COR PD")
    assert (scan.repetition_time_ms, scan.echo_time_ms) == (2750, 27)
    assert (scan.field_strength_t, scan.flip_angle_deg) == (2.89362, 140)


def test_synth_headers_carry_a_field_of_view(inputs: list[Path]) -> None:
    with h5py.File(inputs[0], "r") as hf:
        geometry = geometry_from_header(hf["ismrmrd_header"][()])
    assert (geometry.row_spacing, geometry.column_spacing, geometry.slice_spacing) == (0.5, 0.5, 3.0)
    assert not geometry.spacing_assumed


def test_a_header_without_field_of_view_gets_1_mm_flagged_as_assumed() -> None:
    header = write_header_xml((32, 24, 1), (16, 16, 1), center=12, maximum=23)
    geometry = geometry_from_header(header)
    assert (geometry.row_spacing, geometry.column_spacing, geometry.slice_spacing) == (1, 1, 1)
    assert geometry.spacing_assumed and SPACING_ASSUMED in geometry.assumptions
    assert scan_parameters_from_header(header).manufacturer is None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (KNEE_HEADER.replace(b"<x>14</x>", b"<x>-14</x>"), "fieldOfView_mm/x is not a positive"),
        (KNEE_HEADER.replace(b"<x>14</x>", b"<x>wide</x>"), "fieldOfView_mm/x is not a number"),
        (KNEE_HEADER[:200], "ismrmrd_header is not valid XML"),
        (b"", "ismrmrd_header is empty"),
    ],
)
def test_a_broken_header_is_a_one_line_error(header: bytes, message: str) -> None:
    with pytest.raises(IreconError, match=message) as caught:
        geometry_from_header(header, "x.h5")
    assert caught.value.path == "x.h5" and "\n" not in str(caught.value)


# Round trips


def test_nifti_reloads_with_the_same_values_voxel_sizes_and_an_orientation_warning(
    tmp_path: Path, recons: list[Path]
) -> None:
    result = export_reconstruction(ExportOptions(inputs=[recons[0]], out_dir=tmp_path / "out"))
    assert result.errors == [] and result.exit_code == 0
    assert result.written == [tmp_path / "out" / f"{recons[0].stem}.nii.gz"]
    image = nib.load(result.written[0])
    data = np.asarray(image.dataobj)
    assert data.dtype == np.float32 and data.shape == (COLUMNS, ROWS, SLICES)
    with h5py.File(recons[0], "r") as hf:
        expected = hf["reconstruction"][()]
    assert np.array_equal(images_from_nifti(data), expected)
    assert image.header.get_zooms() == pytest.approx((COLUMN_MM, ROW_MM, SLICE_MM))
    assert np.allclose(image.header.get_sform(), np.diag([COLUMN_MM, ROW_MM, SLICE_MM, 1]))
    assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 0
    descrip = image.header["descrip"].item().decode()
    assert descrip.startswith("orientation unknown; slice gap unknown; irecon irim-tiny best.pt")
    assert len(descrip) <= 80
    (extension,) = image.header.extensions
    assert json.loads(extension.get_content())["checkpoint"] == "/runs/a/best.pt"


def test_dicom_series_reads_back_within_one_quantisation_step(tmp_path: Path, recons: list[Path]) -> None:
    out = tmp_path / "out"
    result = export_reconstruction(ExportOptions(inputs=recons, out_dir=out, formats=["dicom"]))
    assert result.errors == []
    assert result.written == [out / f"{p.stem}_dicom" for p in recons]
    series = [read_series(folder) for folder in result.written]
    for number, (datasets, recon) in enumerate(zip(series, recons, strict=True), start=1):
        with h5py.File(recon, "r") as hf:
            expected = hf["reconstruction"][()].astype(np.float64)
        slope = float(datasets[0].RescaleSlope)
        assert slope == pytest.approx(expected.max() / 65535, rel=1e-9)
        assert float(datasets[0].RescaleIntercept) == 0
        for index, ds in enumerate(datasets):
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.SOPClassUID == pydicom.uid.MRImageStorage
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.shape == (ROWS, COLUMNS)
            assert np.abs(rescaled(ds) - expected[index]).max() <= slope
            assert ds.InstanceNumber == index + 1 and ds.SeriesNumber == number
            assert [float(v) for v in ds.PixelSpacing] == pytest.approx([ROW_MM, COLUMN_MM])
            assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == SLICE_MM
            location = (index - (len(datasets) - 1) / 2) * SLICE_MM  # the volume centred on the origin
            assert float(ds.SliceLocation) == pytest.approx(location)
            corner = [-(COLUMNS - 1) / 2 * COLUMN_MM, -(ROWS - 1) / 2 * ROW_MM, location]
            assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(corner)
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert str(ds.PatientName) == "ANONYMOUS" and ds.PatientID == "irecon"
            assert ds.PatientBirthDate == "" and ds.PatientSex == ""
            assert ds.SeriesDescription == "irecon irim-tiny best.pt R4 equispaced (orientation unknown)"
            assert "Orientation and position are unknown" in ds.ImageComments
            assert "/runs/a/best.pt" in ds.DerivationDescription
            assert (ds.PatientPosition, ds.Manufacturer, float(ds.EchoTime)) == ("FFS", "SIEMENS", 27)
    all_slices = [ds for datasets in series for ds in datasets]
    assert len({ds.SOPInstanceUID for ds in all_slices}) == 2 * SLICES
    assert len({ds.StudyInstanceUID for ds in all_slices}) == 1
    for datasets in series:
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
        assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert series[0][0].SeriesInstanceUID != series[1][0].SeriesInstanceUID
    assert series[0][0].FrameOfReferenceUID != series[1][0].FrameOfReferenceUID


@pytest.fixture(scope="module")
def dcm2niix() -> str:
    """The dcm2niix program (``make test`` installs Debian's package when it can); skip without it."""
    found = shutil.which("dcm2niix")
    if not found:
        pytest.skip("dcm2niix is not installed (make test installs Debian's dcm2niix package when run as root)")
    return found


@pytest.mark.slow
def test_dcm2niix_turns_the_series_into_the_nifti_layout(tmp_path: Path, recons: list[Path], dcm2niix: str) -> None:
    out = tmp_path / "out"
    result = export_reconstruction(ExportOptions(inputs=[recons[0]], out_dir=out, formats=["nifti", "dicom"]))
    assert result.errors == []
    nifti_path, dicom_folder = result.written
    converted = tmp_path / "dcm2niix"
    converted.mkdir()
    run = subprocess.run(
        [dcm2niix, "-z", "n", "-b", "n", "-f", "volume", "-o", str(converted), str(dicom_folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert listing(converted) == ["volume.nii"]
    image = nib.load(converted / "volume.nii")
    data = image.get_fdata()
    assert data.shape == (COLUMNS, ROWS, SLICES)
    with h5py.File(recons[0], "r") as hf:
        expected = hf["reconstruction"][()]
    slope = expected.max() / 65535
    assert np.abs(images_from_nifti(data) - expected).max() <= slope
    ours = np.asarray(nib.load(nifti_path).dataobj)
    assert np.abs(data - ours).max() <= slope
    assert image.header.get_zooms() == pytest.approx((COLUMN_MM, ROW_MM, SLICE_MM))
    # dcm2niix takes the assumed identity orientation as real: i runs right-to-left, j is
    # the reversed row axis running anterior, k superior.
    assert np.sign(np.diag(image.affine)[:3]).tolist() == [-1, 1, 1]


# Other sources of the header and the target


def test_an_old_reconstruction_takes_the_header_from_its_input(tmp_path: Path, inputs: list[Path]) -> None:
    old = tmp_path / "old"
    old.mkdir()
    recon = write_recon(old / inputs[0].name, target_of(inputs[0]), header=None, attrs={})
    missing = export_reconstruction(ExportOptions(inputs=[recon], out_dir=tmp_path / "a"))
    assert [str(e) for e in missing.errors] == [
        f"{recon}: no ismrmrd_header dataset; pass --header-from with the fastMRI input file or its folder"
    ]
    for header_from in (inputs[0].parent, inputs[0]):
        out = tmp_path / f"from-{header_from.name}"
        result = export_reconstruction(ExportOptions(inputs=[recon], out_dir=out, header_from=header_from))
        assert result.errors == [] and result.written == [out / f"{recon.stem}.nii.gz"]
        image = nib.load(result.written[0])
        assert image.header.get_zooms() == (0.5, 0.5, 3.0)  # the input's header gave the spacing
        assert "orientation unknown" in image.header["descrip"].item().decode()
    short = write_recon(tmp_path / inputs[1].name, target_of(inputs[1])[:3], header=None)
    wrong = export_reconstruction(ExportOptions(inputs=[short], out_dir=tmp_path / "b", header_from=inputs[0].parent))
    assert [str(e) for e in wrong.errors] == [
        f"{inputs[1]}: has {SLICES} slices but {short} has 3; is it the right input file?"
    ]
    with pytest.raises(IreconError, match="is one file but 2 volumes"):
        export_reconstruction(ExportOptions(inputs=[recon, short], out_dir=tmp_path / "c", header_from=inputs[1]))


def test_a_target_exports_from_the_input_file_under_its_own_name(tmp_path: Path, inputs: list[Path]) -> None:
    out = tmp_path / "out"
    result = export_reconstruction(
        ExportOptions(inputs=[inputs[0]], out_dir=out, formats=["nifti", "dicom"], dataset="reconstruction_esc")
    )
    stem = f"{inputs[0].stem}_reconstruction_esc"
    assert result.errors == [] and result.written == [out / f"{stem}.nii.gz", out / f"{stem}_dicom"]
    data = np.asarray(nib.load(result.written[0]).dataobj)
    assert np.array_equal(images_from_nifti(data), target_of(inputs[0]))
    first = read_series(result.written[1])[0]
    assert first.SeriesDescription == "fastMRI reconstruction_esc (orientation unknown)"


# Errors, overwrite and atomicity


def test_each_bad_volume_is_one_error_line_and_the_others_are_written(tmp_path: Path, inputs: list[Path]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = write_recon(folder / "a_good.h5", target_of(inputs[0]))
    shutil.copy(inputs[0], folder / "b_input.h5")
    (folder / "c_broken.h5").write_text("not HDF5 at all")
    write_recon(folder / "d_noheader.h5", target_of(inputs[0]), header=None)
    with h5py.File(folder / "e_rank2.h5", "w") as hf:
        hf["reconstruction"] = np.zeros((4, 4), np.float32)
        hf["ismrmrd_header"] = np.bytes_(KNEE_HEADER)
    (folder / "notes.txt").write_text("skipped")
    out = tmp_path / "out"
    result = export_reconstruction(ExportOptions(inputs=[folder], out_dir=out, formats=["nifti", "dicom"]))
    assert result.written == [out / "a_good.nii.gz", out / "a_good_dicom"]
    bad = ("b_input.h5", "c_broken.h5", "d_noheader.h5", "e_rank2.h5")
    assert [e.path for e in result.errors] == [str(folder / name) for name in bad]
    problems = [spell_options(e.problem) for e in result.errors]
    assert problems[0] == ("no reconstruction dataset; it has reconstruction_esc (pass --dataset reconstruction_esc)")
    assert problems[1].startswith("not a readable HDF5 file")
    assert problems[2].startswith("no ismrmrd_header dataset; pass --header-from")
    assert problems[3].startswith("images have rank 2")
    assert all("\n" not in str(e) for e in result.errors) and result.exit_code == 1
    assert result.notes == [f"skipped {folder / 'notes.txt'}: not an .h5 file"]
    assert good.exists() and listing(out) == ["a_good.nii.gz", "a_good_dicom"] + [
        f"a_good_dicom/IM{i:04d}.dcm" for i in range(1, SLICES + 1)
    ]


def test_existing_outputs_are_refused_before_anything_is_written_unless_overwrite(
    tmp_path: Path, recons: list[Path]
) -> None:
    out = tmp_path / "out"
    both = ExportOptions(inputs=[recons[0]], out_dir=out, formats=["dicom"])
    assert export_reconstruction(both).errors == []
    folder = out / f"{recons[0].stem}_dicom"
    first_uid = read_series(folder)[0].SeriesInstanceUID
    again = export_reconstruction(ExportOptions(inputs=[recons[0]], out_dir=out, formats=["nifti", "dicom"]))
    assert [str(e) for e in again.errors] == [f"{folder}: folder exists; pass --overwrite to replace it"]
    assert listing(out) == [folder.name] + [f"{folder.name}/IM{i:04d}.dcm" for i in range(1, SLICES + 1)]
    replaced = export_reconstruction(
        ExportOptions(inputs=[recons[0]], out_dir=out, formats=["nifti", "dicom"], overwrite=True)
    )
    assert replaced.errors == [] and len(listing(out)) == SLICES + 2
    assert read_series(folder)[0].SeriesInstanceUID != first_uid
    images = target_of_recon(recons[0])
    with pytest.raises(IreconError, match="file exists; pass --overwrite"):
        export_volume(images, KNEE_HEADER, out, recons[0].stem, ["nifti"], SeriesInfo())
    written = export_volume(images, KNEE_HEADER, out, "other", ["dicom", "nifti"], SeriesInfo())
    assert written == [out / "other_dicom", out / "other.nii.gz"]


def target_of_recon(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        return hf["reconstruction"][()]


def test_a_failure_mid_series_leaves_no_folder_and_keeps_an_old_one(
    tmp_path: Path, recons: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    images, geometry = target_of_recon(recons[0]), geometry_from_header(KNEE_HEADER)
    real_write, calls = dicom_module.dcmwrite, []

    def full_disk_on_third_slice(handle, dataset, **kwargs) -> None:
        calls.append(dataset.InstanceNumber)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(handle, dataset, **kwargs)

    monkeypatch.setattr(dicom_module, "dcmwrite", full_disk_on_third_slice)
    work = tmp_path / "work"
    work.mkdir()
    folder = work / "series"
    with pytest.raises(IreconError) as caught:
        write_dicom_series(images, geometry, folder, SeriesInfo())
    assert str(caught.value) == f"{folder}: no space left on device"
    assert listing(work) == []
    monkeypatch.setattr(dicom_module, "dcmwrite", real_write)
    write_dicom_series(images, geometry, folder, SeriesInfo())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls.clear()
    monkeypatch.setattr(dicom_module, "dcmwrite", full_disk_on_third_slice)
    with pytest.raises(IreconError, match="no space left on device"):
        write_dicom_series(images, geometry, folder, SeriesInfo(), overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert listing(work) == ["series"] + [f"series/{name}" for name in sorted(before)]


def test_an_unwritable_output_folder_stops_the_run_before_any_output(tmp_path: Path, recons: list[Path]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    blocker = work / "file"
    blocker.write_text("a regular file")
    with pytest.raises(IreconError, match="a part of the path is a regular file"):
        export_reconstruction(ExportOptions(inputs=recons, out_dir=blocker / "out", formats=["dicom"]))
    with pytest.raises(IreconError, match="exists and is not a folder"):
        export_volume(target_of_recon(recons[0]), KNEE_HEADER, blocker, "x", ["nifti"], SeriesInfo())
    assert listing(work) == ["file"]


def test_bad_options_are_refused(tmp_path: Path, recons: list[Path]) -> None:
    with pytest.raises(IreconError, match="unknown export format 'png'"):
        export_reconstruction(ExportOptions(inputs=recons, out_dir=tmp_path, formats=["png"]))
    with pytest.raises(IreconError, match="no export format given"):
        export_reconstruction(ExportOptions(inputs=recons, out_dir=tmp_path, formats=[]))
    with pytest.raises(IreconError, match="unknown dataset 'kspace'"):
        export_reconstruction(ExportOptions(inputs=recons, out_dir=tmp_path, dataset="kspace"))


# Quantisation


def test_quantisation_keeps_negative_and_constant_volumes() -> None:
    values = np.linspace(-0.25, 1.0, 2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    q = quantise(values)
    assert q.intercept == pytest.approx(-0.25) and q.pixels.max() == 65535 and q.pixels.min() == 0
    assert np.abs(q.pixels * q.slope + q.intercept - values).max() <= q.slope / 2 * 1.001
    assert len(q.slope_text) <= 16 and len(q.intercept_text) <= 16
    constant = quantise(np.full((1, 2, 2), 0.5, np.float32))
    back = constant.pixels * constant.slope + constant.intercept
    assert np.abs(back - 0.5).max() <= constant.slope / 2
    zeros = quantise(np.zeros((1, 2, 2), np.float32))
    assert zeros.slope == 1 and not zeros.pixels.any()


def test_descriptions_name_the_checkpoint_once_and_are_cut_only_between_words() -> None:
    from irecon.export.dicom import SeriesInfo
    from irecon.export.nifti import DESCRIP_LIMIT
    from irecon.text import shorten

    info = SeriesInfo(model="tiny-2d from best.pt", checkpoint="run/best.pt", acceleration=4, mask_type="random")
    assert info.label() == "irecon tiny-2d from best.pt R4 random"
    long = (
        "orientation unknown; slice gap unknown; irecon paper-2d from checkpoint_epoch_0042.pt R8 equispaced_fraction"
    )
    cut = shorten(long, DESCRIP_LIMIT)
    assert len(cut) <= DESCRIP_LIMIT and cut.endswith("...")
    assert long.startswith(cut[:-3]) and long[len(cut) - 3] == " "  # the cut falls on a space


def test_the_nifti_and_the_dicom_series_put_every_voxel_at_the_same_point(tmp_path: Path) -> None:
    from irecon.data.header import geometry_from_header, write_header_xml
    from irecon.export import SeriesInfo, export_volume

    header = write_header_xml((6, 5, 1), (6, 5, 1), 2, 4, ((36.0, 25.0, 3.0), (36.0, 25.0, 3.0)))
    images = np.random.default_rng(0).random((3, 6, 5)).astype(np.float32) + 0.1
    nifti, dicom = export_volume(images, header, tmp_path, "v", ["nifti", "dicom"], SeriesInfo(source="v.h5"))
    geometry = geometry_from_header(header)
    assert (geometry.row_spacing, geometry.column_spacing) != (1.0, 1.0)
    affine = nib.load(nifti).affine  # codes 0: nibabel's centred fallback, in RAS
    datasets = [pydicom.dcmread(f) for f in sorted(dicom.iterdir())]
    rows = images.shape[1]
    for k, r, c in [(0, 0, 0), (2, 5, 4), (1, 3, 1)]:
        ds = datasets[k]
        lps = np.array([float(v) for v in ds.ImagePositionPatient]) + np.array(
            [c * float(ds.PixelSpacing[1]), r * float(ds.PixelSpacing[0]), 0.0]
        )
        i, j = c, rows - 1 - r  # the NIfTI voxel of row r, column c (rows bottom first)
        ras = affine @ np.array([i, j, k, 1.0])
        assert ras[:3] == pytest.approx([-lps[0], -lps[1], lps[2]]), (k, r, c)

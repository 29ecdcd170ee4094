"""Real Siemens raw data (twixtools' example GRE and EPI scans) through the importer."""

from __future__ import annotations

from pathlib import Path

import h5py

from irecon.data.header import scan_parameters_from_header
from irecon.rawdata.options import ImportOptions
from irecon.rawdata.run import import_raw
from tests.rawdata.twix_files import correlation, example, independent_rss


def test_gre_target_matches_an_independent_fft_and_rss(tmp_path: Path) -> None:
    gre = example("gre.dat")
    [imported] = import_raw(ImportOptions([gre], tmp_path)).files
    assert imported.error is None
    [written] = imported.outputs
    assert (written.slices, written.coils, written.kspace_shape, written.fully_sampled) == (1, 2, (320, 160), True)
    with h5py.File(written.path) as hf:
        target = hf["reconstruction_rss"][0]
        header = hf["ismrmrd_header"][()]
    reference = independent_rss(gre)
    assert target.shape == reference.shape == (160, 160)
    assert correlation(target, reference) >= 0.999
    scan = scan_parameters_from_header(header)
    assert (scan.manufacturer, scan.model_name, scan.repetition_time_ms) == ("Siemens", "Skyra", 10.0)


def test_epi_is_refused_in_one_line(tmp_path: Path) -> None:
    [imported] = import_raw(ImportOptions([example("epi.dat")], tmp_path)).files
    assert imported.error is not None and "EPI" in imported.error and "\n" not in imported.error
    assert not list(tmp_path.iterdir())


def test_truncated_twix_is_one_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.dat"
    data = example("gre.dat").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    [imported] = import_raw(ImportOptions([cut], tmp_path / "out")).files
    assert imported.error is not None and "truncated" in imported.error and "\n" not in imported.error
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

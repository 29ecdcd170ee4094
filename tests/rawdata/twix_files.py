"""The real Siemens raw data twixtools' source distribution ships, unpacked by ``make test-tools``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TWIXTOOLS_VERSION = "0.24"
EXAMPLES = (
    Path(__file__).resolve().parents[2] / ".cache" / "twixtools" / f"twixtools-{TWIXTOOLS_VERSION}" / "example_data"
)


def example(name: str) -> Path:
    """``example_data/<name>`` of the twixtools sdist, or skip when ``make test-tools`` has not fetched it."""
    pytest.importorskip("twixtools", reason="the raw extra (irecon[raw]: ismrmrd, twixtools) is not installed")
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: `make test-tools` fetches twixtools' sdist with its example raw data")
    return path


def independent_rss(path: Path) -> np.ndarray:
    """RSS image of a fully sampled one-slice twix scan: lines by their counter, numpy's inverse FFT.

    Placed and transformed here without irecon; the image is ``(readout, phase)`` as fastMRI
    stores it, centre-cropped to half the readout (the 2x readout oversampling) and the line count.
    """
    import twixtools

    scans = [mdb for mdb in twixtools.read_twix(str(path), verbose=False)[-1]["mdb"] if mdb.is_image_scan()]
    lines = max(mdb.cLin for mdb in scans) + 1
    coils, samples = scans[0].data.shape
    kspace = np.zeros((coils, samples, lines), dtype=np.complex128)
    for mdb in scans:
        kspace[:, :, mdb.cLin] = mdb.data
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(1, 2))), axes=(1, 2))
    rss = np.sqrt((np.abs(image) ** 2).sum(axis=0))
    top = (samples - samples // 2) // 2
    return rss[top : top + samples // 2, :]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images of one shape."""
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])

"""``irecon export-model``: the exported files reproduce ``irecon reconstruct`` on volumes the export never saw."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from irecon.data.datasets import load_volume
from irecon.data.masks import MaskSpec
from irecon.data.synth import synthesize
from irecon.deploy.exportable import ExportableReconstruction, dft_matrices, fft2c_real
from irecon.deploy.options import ExportModelOptions
from irecon.deploy.run import export_model
from irecon.errors import IreconError
from irecon.models.checkpoint import save_checkpoint
from irecon.models.presets import preset
from irecon.physics import center_crop, fft2c
from irecon.reconstruct.options import ReconstructOptions
from irecon.reconstruct.run import reconstruct

# A small tiny-2d (1 step, 2 layers) and a 4-coil i-RIM with multiplicity 2, both with perturbed weights.
MODELS = {
    "tiny-2d": ("tiny-2d", {"steps": 1, "layers": 2}),
    "multicoil": ("tiny-2d", {"steps": 1, "layers": 2, "coils": 4, "multiplicity": 2, "n_latent": 40}),
}
TORCHSCRIPT = {**MODELS, "tiny-3d": ("tiny-3d", {"steps": 1, "layers": 2})}
TOLERANCE = 1e-4


def write_checkpoint(path: Path, name: str, overrides: dict) -> Path:
    torch.manual_seed(0)
    config = preset(name, **overrides)
    model = config.build()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_checkpoint(path, {"model_config": config.to_dict(), "model": model.state_dict(), "preset": name})
    return path


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Unseen volumes of sizes the exports never saw: single-coil 40x30, 4-coil 34x27 (odd)."""
    root = tmp_path_factory.mktemp("volumes")
    synthesize(root / "single", split="val", volumes=1, seed=7, slices=3, kspace_size=(40, 30), recon_size=(20, 20))
    synthesize(
        root / "multi",
        split="val",
        volumes=1,
        seed=8,
        slices=2,
        challenge="multicoil",
        coils=4,
        kspace_size=(34, 27),
        recon_size=(16, 16),
    )
    return {1: root / "single", 4: root / "multi"}


def reconstructed(inputs: Path, out: Path, **model: object) -> np.ndarray:
    options = ReconstructOptions(inputs=[inputs], out_dir=out, threads=1, **model)
    report = reconstruct(options)
    assert report.exit_code == 0, [v.error for v in report.volumes]
    (result,) = report.volumes
    with h5py.File(result.output) as hf:
        return hf["reconstruction"][()]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_the_real_valued_dft_is_fastmris_centred_fft() -> None:
    z = torch.randn(2, 3, 7, 10, dtype=torch.complex128)
    re, im = fft2c_real(z.real, z.imag, dft_matrices(z.real))
    torch.testing.assert_close(torch.complex(re, im), fft2c(z), rtol=0, atol=1e-12)
    back = fft2c_real(re, im, dft_matrices(re), inverse=True)
    torch.testing.assert_close(torch.complex(*back), z, rtol=0, atol=1e-12)


@pytest.mark.parametrize("which", list(TORCHSCRIPT))
def test_torchscript_export_reproduces_reconstruct(which: str, volumes: dict, tmp_path: Path, one_thread: None) -> None:
    name, overrides = TORCHSCRIPT[which]
    checkpoint = write_checkpoint(tmp_path / "model.pt", name, overrides)
    result = export_model(ExportModelOptions(checkpoint, tmp_path / "model.ts", "torchscript"))
    assert result.max_relative_error < TOLERANCE
    folder = volumes[overrides.get("coils", 1)]
    expected = reconstructed(folder, tmp_path / "torch", checkpoint=checkpoint)
    path = next(folder.glob("*.h5"))
    volume = load_volume(path, MaskSpec("random", (0.08,), (4,)))
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    kspace = volume.kspace if which != "tiny-3d" else volume.kspace.transpose(0, 1).unsqueeze(0)
    images = scripted(torch.view_as_real(kspace.contiguous()), volume.mask.reshape(-1))
    images = images if which != "tiny-3d" else images[0]
    got = center_crop(images, volume.info.crop_size).numpy()
    assert got.shape == expected.shape
    assert relative(got, expected) < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("which", list(MODELS))
def test_onnx_export_run_by_reconstruct_onnx_matches_the_checkpoint(
    which: str, volumes: dict, tmp_path: Path, one_thread: None
) -> None:
    pytest.importorskip("onnxruntime", reason="needs the onnx extra (irecon[onnx])")
    pytest.importorskip("onnxscript", reason="needs the onnx extra (irecon[onnx])")
    name, overrides = MODELS[which]
    checkpoint = write_checkpoint(tmp_path / "model.pt", name, overrides)
    result = export_model(ExportModelOptions(checkpoint, tmp_path / "model.onnx", "onnx"))
    assert result.max_relative_error < TOLERANCE
    folder = volumes[overrides.get("coils", 1)]
    expected = reconstructed(folder, tmp_path / "torch", checkpoint=checkpoint)
    got = reconstructed(folder, tmp_path / "onnx", onnx=tmp_path / "model.onnx")
    assert got.shape == expected.shape
    assert relative(got, expected) < TOLERANCE


def test_the_exportable_form_of_a_3d_irim_matches_the_model(one_thread: None) -> None:
    torch.manual_seed(0)
    config = preset("tiny-3d", steps=1, layers=2)
    model = config.build().eval()
    kspace = torch.randn(1, 1, 3, 20, 17, dtype=torch.complex64)
    mask = (torch.arange(17) % 2 == 0).float()
    with torch.inference_mode():
        expected = model(kspace * mask, mask.view(1, 1, 1, 1, -1))[-1]
        got = ExportableReconstruction(config, model.state_dict())(torch.view_as_real(kspace * mask), mask)
    assert relative(got.numpy(), expected.numpy()) < TOLERANCE


def test_models_without_an_exportable_form_and_existing_files_are_refused(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "rim.pt", "tiny-rim", {})
    with pytest.raises(IreconError, match="a rim model has no exportable form"):
        export_model(ExportModelOptions(checkpoint, tmp_path / "rim.ts", "torchscript"))
    assert not (tmp_path / "rim.ts").exists()
    (tmp_path / "taken.ts").write_bytes(b"keep")
    with pytest.raises(IreconError, match="--overwrite"):
        export_model(ExportModelOptions(checkpoint, tmp_path / "taken.ts", "torchscript"))
    assert (tmp_path / "taken.ts").read_bytes() == b"keep"
    with pytest.raises(IreconError, match="--size must be"):
        export_model(ExportModelOptions(checkpoint, tmp_path / "small.ts", "torchscript", size=(4, 4)))

"""Export a checkpoint's whole reconstruction function and check the file against the torch model.

The file takes k-space ``(B, C, [S,] H, W, 2)`` float32 (real, imaginary last) and a ``(W,)`` column
mask and returns the magnitude images ``(B, [S,] H, W)``, data consistency and FFTs included
(:mod:`irecon.deploy.exportable` says what was rewritten for the exporters). The batch is always
free; H and W are free unless ``size`` fixes them in the ONNX graph (a TorchScript trace computes
every size from its input, so there ``size`` only sets the example it is traced on). Before the file is moved into place it is loaded
back (onnxruntime / ``torch.jit.load``) and run on an input size it was not exported with, and its
output compared with the checkpoint's torch model.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from irecon import __version__
from irecon.deploy.exportable import ExportableReconstruction
from irecon.deploy.options import ExportModelOptions
from irecon.errors import IreconError
from irecon.files import atomic_write, check_writable_file
from irecon.models.checkpoint import LoadedModel, load_model
from irecon.models.onnx_runtime import METADATA_KEY, session

# Spatial size the tracer and exporter see when the size is left free, and the one the check uses.
EXAMPLE_SIZE = (32, 24)
CHECK_SIZE = (37, 29)


@dataclass(frozen=True)
class ExportResult:
    """What was exported: file, format, size, and the check against the torch model."""

    out: Path
    format: str
    model_name: str
    bytes: int
    input_shape: str
    output_shape: str
    seconds: float
    checked_shape: tuple[int, ...]
    max_relative_error: float


def export_model(options: ExportModelOptions) -> ExportResult:
    """Write ``options.out``; refuse bad options, a model without an exportable form or an existing file first."""
    options.validate()
    _check_exporter(options.format)
    out = check_writable_file(options.out, overwrite=options.overwrite)
    loaded = load_model(options.checkpoint, None, torch.device("cpu"))
    if loaded.config.kind not in ("irim", "zero-filled"):
        raise IreconError(
            f"a {loaded.config.kind} model has no exportable form yet (i-RIM and zero-filled models have)",
            options.checkpoint,
        )
    module = ExportableReconstruction(loaded.config, loaded.model.state_dict())
    example = example_inputs(loaded, options.size or EXAMPLE_SIZE, seed=0)
    metadata = json.dumps(
        {
            "irecon_version": __version__,
            "model_name": loaded.name,
            "model_config": loaded.config.to_dict(),
            "size": None if options.size is None else list(options.size),
        }
    )
    started = time.perf_counter()
    with atomic_write(out, overwrite=options.overwrite) as tmp:
        if options.format == "onnx":
            _export_onnx(module, example, tmp, options.size is None, metadata)
        else:
            _export_torchscript(module, example, tmp, metadata)
        check_shape, error = _check(tmp, options, loaded)
    seconds = time.perf_counter() - started
    spatial = "S, " if loaded.config.dims == 3 else ""
    fixed = options.size is not None and options.format == "onnx"  # a trace takes the size of what it is given
    hw = f"{options.size[0]}, {options.size[1]}" if fixed else "H, W"
    return ExportResult(
        out=out,
        format=options.format,
        model_name=loaded.name,
        bytes=out.stat().st_size,
        output_shape=f"(B, {spatial}{hw})",
        input_shape=f"kspace (B, {loaded.config.coils}, {spatial}{hw}, 2) float32, mask ({hw.split(', ')[-1]},) float32",
        seconds=seconds,
        checked_shape=check_shape,
        max_relative_error=error,
    )


def _check_exporter(format: str) -> None:
    """The ONNX path needs onnx, onnxscript and onnxruntime: the ``onnx`` extra."""
    if format != "onnx":
        return
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise IreconError(f"ONNX export needs {err.name}: pip install 'irecon[onnx]'") from None


def example_inputs(loaded: LoadedModel, size: tuple[int, int], seed: int, slices: int = 2) -> tuple[Tensor, Tensor]:
    """Random k-space (``slices`` slices, or 1 slab of them) of ``size``, a mask sampling every other column."""
    generator = torch.Generator().manual_seed(seed)
    config = loaded.config
    shape = (slices, config.coils, *size) if config.dims == 2 else (1, config.coils, slices, *size)
    mask = torch.zeros(size[1])
    mask[::2] = 1.0
    mask[size[1] // 2 - 2 : size[1] // 2 + 2] = 1.0
    kspace = torch.randn(*shape, 2, generator=generator) * mask.view(-1, 1)
    return kspace, mask


def _export_onnx(
    module: ExportableReconstruction, example: tuple[Tensor, Tensor], path: Path, free: bool, metadata: str
) -> None:
    """``torch.onnx.export(dynamo=True)``; the batch (and slices) always free, H and W when ``free``."""
    import onnx

    batch = torch.export.Dim("batch")
    kspace_dims: dict[int, Any] = {0: batch}
    mask_dims: dict[int, Any] = {}
    spatial = 2 if module.dims == 2 else 3
    if module.dims == 3:
        kspace_dims[2] = torch.export.Dim("slices")
    if free:
        width = torch.export.Dim("width", min=8)
        kspace_dims[spatial] = torch.export.Dim("height", min=8)
        kspace_dims[spatial + 1] = width
        mask_dims[0] = width
    with warnings.catch_warnings():
        # The width shared by k-space and mask is named twice; the exporter warns that it keeps one name.
        warnings.filterwarnings("ignore", message=".*axis name.*")
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own deprecations inside export
        try:
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=["kspace", "mask"],
                output_names=["image"],
                dynamic_shapes={"kspace": kspace_dims, "mask": mask_dims},
                verbose=False,
            )
        except Exception as err:  # the exporter raises many types; the first line says what failed
            first = str(err).strip().splitlines()[0]
            raise IreconError(f"the ONNX exporter failed: {first}") from None
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: metadata})
    onnx.save_model(model, str(path))


def _export_torchscript(
    module: ExportableReconstruction, example: tuple[Tensor, Tensor], path: Path, metadata: str
) -> None:
    """``torch.jit.trace``: the sizes flow from the inputs' shapes, so one trace serves every size."""
    import warnings

    with warnings.catch_warnings():
        # The tracer warns about Python branches on the coil multiplicity and the Householder
        # vectors: both are fixed by the weights, not by the input.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": metadata})


def run_exported(path: Path, format: str, kspace: Tensor, mask: Tensor) -> np.ndarray:
    """Run an exported file on real k-space and a (W,) mask; the magnitude images as a numpy array."""
    if format == "onnx":
        return session(path).run(None, {"kspace": kspace.numpy(), "mask": mask.numpy()})[0]
    with torch.inference_mode():
        return torch.jit.load(str(path), map_location="cpu")(kspace, mask).numpy()


def _check(path: Path, options: ExportModelOptions, loaded: LoadedModel) -> tuple[tuple[int, ...], float]:
    """Max |exported - torch| / max |torch| on a size and batch the export never saw; refused above 1e-4."""
    kspace, mask = example_inputs(loaded, options.size or CHECK_SIZE, seed=1, slices=4)  # another batch or slab
    got = run_exported(path, options.format, kspace, mask)
    broadcast = mask.reshape(*([1] * (kspace.dim() - 2)), -1)
    with torch.inference_mode():
        expected = loaded.model(torch.view_as_complex(kspace.contiguous()), broadcast)[-1].numpy()
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    if not error <= 1e-4:
        raise IreconError(
            f"the exported model differs from the torch model by {error:.2e} (relative) on a "
            f"{tuple(kspace.shape)} input; the file was not written",
            options.out,
        )
    return tuple(kspace.shape), error

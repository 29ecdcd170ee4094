"""An exported ONNX reconstruction (``irecon export-model --format onnx``) behind the torch models' call shape.

``model(kspace, mask)`` takes complex k-space ``(B, C, [S,] H, W)`` and a mask broadcastable to it,
and returns ``[magnitudes]`` like every irecon model, so :mod:`irecon.inference` and ``irecon
reconstruct`` run it unchanged; onnxruntime does the work. The file's ``irecon`` metadata entry
(JSON) holds the model config and name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from irecon.errors import IreconError
from irecon.models.checkpoint import LoadedModel
from irecon.models.configs import config_from_dict

METADATA_KEY = "irecon"


class OnnxModel:
    """An onnxruntime session with the call shape of an irecon model; ``dims`` and ``coils`` from its metadata."""

    def __init__(self, session: Any, dims: int, coils: int) -> None:
        self.session, self.dims, self.coils = session, dims, coils

    def __call__(self, kspace: Tensor, mask: Tensor) -> list[Tensor]:
        real = torch.view_as_real(kspace.cpu().to(torch.complex64)).contiguous().numpy()
        columns = mask.reshape(-1).cpu().float().numpy()
        return [torch.from_numpy(self.session.run(None, {"kspace": real, "mask": columns})[0])]


def session(path: str | Path, device: torch.device | None = None) -> Any:
    """An onnxruntime session with torch's thread count (CUDA first for a CUDA device, when onnxruntime
    has it), or a one-line error."""
    try:
        import onnxruntime
    except ImportError:
        raise IreconError("running an ONNX model needs onnxruntime: pip install 'irecon[onnx]'") from None
    providers = ["CPUExecutionProvider"]
    if (
        device is not None
        and device.type == "cuda"
        and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ):
        providers.insert(0, "CUDAExecutionProvider")
    path = Path(path)
    if not path.is_file():
        raise IreconError("ONNX model does not exist", path)
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = torch.get_num_threads()  # --threads applies to both runtimes
    try:
        return onnxruntime.InferenceSession(str(path), settings, providers=providers)
    except Exception:  # onnxruntime raises its own exception types for foreign or truncated files
        raise IreconError("not a readable ONNX model", path) from None


def load_onnx_model(path: str | Path, device: torch.device | None = None) -> LoadedModel:
    """The exported model in ``path`` with the config it was exported from; refused without irecon's metadata."""
    runner = session(path, device)
    text = runner.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        metadata = json.loads(text or "")
        config = config_from_dict(metadata["model_config"])
    except (ValueError, KeyError, TypeError, IreconError):
        raise IreconError("not an ONNX model exported by irecon export-model (no irecon metadata)", path) from None
    name = f"{metadata.get('model_name', config.describe())} via {Path(path).name}"
    return LoadedModel(OnnxModel(runner, config.dims, config.coils), config, name)  # type: ignore[arg-type]

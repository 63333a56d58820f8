"""ONNX Runtime engine. The model config travels in the ONNX file's metadata (``dfscan_config``)."""
from __future__ import annotations

import json

import numpy as np

from engines.backends._registry import register_backend
from engines.config import ModelConfig
from engines.errors import DfscanError

CONFIG_KEY = "dfscan_config"


def _available():
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed: pip install onnxruntime"
    return True, f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"


class OnnxEngine:
    name = "onnx"

    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise DfscanError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in meta:
            raise DfscanError(f"{path}: no '{CONFIG_KEY}' metadata; export it with 'dfscan export --format onnx'")
        self.config = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        self.input_name = self.session.get_inputs()[0].name
        self.device = device

    def infer(self, batch) -> np.ndarray:
        if not isinstance(batch, np.ndarray):  # a torch tensor, possibly on the GPU
            batch = batch.detach().float().cpu().numpy()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0].astype(np.float32, copy=False)


@register_backend("onnx", (".onnx",), _available, "ONNX Runtime (CPU, or CUDA where installed)")
def load_onnx_engine(path, device="cpu"):
    return OnnxEngine(path, device)

"""ONNX Runtime engine. The model config travels in the ONNX file's metadata (``dfscan_config``).

``threads`` caps ONNX Runtime's intra-op pool, so a scan can leave cores to DALI's decoders;
None lets ONNX Runtime use one thread per physical core.
"""
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
        self.threads = threads  # None: ONNX Runtime's default (one per core)
        if threads is not None:
            if threads < 1:
                raise DfscanError(f"{path}: threads must be at least 1, got {threads}")
            options.intra_op_num_threads = threads
            # Inter-op parallelism only matters for branchy graphs; keep it inside the budget.
            options.inter_op_num_threads = 1
        # No spin-waiting between parallel sections: in a scan the decoding child works on the
        # same cores, and spinning threads took its time. 1,920-face default run on 2 cores, two
        # interleaved rounds: fp32 161/148 -> 167/170 faces/s, INT8 261/268 -> 280/303; the
        # engine alone on ready tensors was unchanged (fp32 221-235 vs 237-240).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def read_onnx_config(onnx_path) -> ModelConfig:
    """The ModelConfig stored in a dfscan ONNX export's metadata; DfscanError if absent."""
    import onnx

    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DfscanError(f"{onnx_path}: not a readable ONNX file ({reason})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if CONFIG_KEY not in meta:
        raise DfscanError(f"{onnx_path}: no '{CONFIG_KEY}' metadata; "
                          f"export it with 'dfscan export --format onnx'")
    return ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))


@register_backend("onnx", (".onnx",), _available, "ONNX Runtime (CPU, or CUDA where installed)")
def load_onnx_engine(path, device="cpu", threads: int | None = None):
    return OnnxEngine(path, device, threads=threads)

"""TensorRT engine (plans). Placeholder until the TensorRT issue; imports tensorrt lazily."""
from __future__ import annotations

from ..errors import DfscanError
from ._registry import register_backend


def _available():
    try:
        import torch
        if not torch.cuda.is_available():
            return False, "TensorRT needs an NVIDIA GPU; none is visible"
    except ImportError:
        return False, "torch is not installed"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "tensorrt is not installed: pip install 'dfscan[tensorrt]' on a CUDA 12 machine"
    return True, "tensorrt"


@register_backend("trt", (".plan", ".engine"), _available, "TensorRT plan (GPU, production)")
def load_trt_engine(path, device="cuda"):
    raise DfscanError(f"{path}: the TensorRT runtime is not built yet")

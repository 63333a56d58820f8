"""Runtime backends, chosen by engine-file suffix: torch, onnx, openvino, trt."""
from ._registry import BackendEntry, backend_for, list_backends, load_engine, register_backend
from . import onnx_backend, openvino_backend, torch_backend, trt_backend  # noqa: F401  (registers the backends)

__all__ = ["BackendEntry", "backend_for", "list_backends", "load_engine", "register_backend"]

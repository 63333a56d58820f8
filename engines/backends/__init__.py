"""Runtime backends, chosen by engine-file suffix: torch, onnx, openvino, trt."""
from engines.backends._registry import BackendEntry, backend_for, list_backends, load_engine, register_backend

# isort: split
from engines.backends import (  # noqa: F401,E402  (registers the backends)
    onnx_backend, openvino_backend, torch_backend, trt_backend)

__all__ = ["BackendEntry", "backend_for", "list_backends", "load_engine", "register_backend"]

"""Runtime backends, chosen by engine-file suffix: torch, onnx, trt."""
from engines.backends._registry import BackendEntry, backend_for, list_backends, load_engine, register_backend

# isort: split
from engines.backends import onnx_backend, torch_backend, trt_backend  # noqa: F401,E402  (registers the backends)

__all__ = ["BackendEntry", "backend_for", "list_backends", "load_engine", "register_backend"]

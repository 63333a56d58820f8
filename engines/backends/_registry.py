"""The engine-backend registry: ``torch`` (.pt/.pth), ``onnx`` (.onnx), ``openvino`` (.xml),
``trt`` (.plan/.engine).

A backend is chosen from the engine file's suffix or by name. Each backend says whether this
machine can run it (``available()``) without importing heavy GPU libraries at module import.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engines.errors import DfscanError


@dataclass(frozen=True)
class BackendEntry:
    name: str
    suffixes: tuple[str, ...]
    loader: Callable  # loader(path, device, **options) -> Engine
    available: Callable[[], tuple[bool, str]]  # () -> (usable here, why not / what it uses)
    description: str


_BACKENDS: dict[str, BackendEntry] = {}


def register_backend(name: str, suffixes: tuple[str, ...], available, description: str):
    def wrap(loader):
        if name in _BACKENDS:
            raise ValueError(f"backend {name!r} is already registered")
        for other in _BACKENDS.values():
            clash = set(other.suffixes) & set(suffixes)
            if clash:
                raise ValueError(f"suffix {clash} already belongs to backend {other.name!r}")
        _BACKENDS[name] = BackendEntry(name, tuple(suffixes), loader, available, description)
        return loader

    return wrap


def list_backends() -> list[BackendEntry]:
    return [_BACKENDS[k] for k in sorted(_BACKENDS)]


def backend_for(path, backend: str | None = None) -> BackendEntry:
    if backend is not None:
        if backend not in _BACKENDS:
            raise DfscanError(f"unknown backend {backend!r}; choose one of: {', '.join(sorted(_BACKENDS))}")
        return _BACKENDS[backend]
    suffix = Path(path).suffix.lower()
    for entry in _BACKENDS.values():
        if suffix in entry.suffixes:
            return entry
    known = ", ".join(s for e in _BACKENDS.values() for s in e.suffixes)
    raise DfscanError(f"{path}: no engine backend reads '{suffix}' files; use one of {known}")


def load_engine(path, device: str = "cpu", backend: str | None = None, **options):
    """Open an engine file for inference on ``device`` ('cpu' or 'cuda').

    ``options`` go to the backend's loader; those set to None are dropped, so callers can pass
    e.g. ``threads=None`` to every backend. CPU backends take ``threads`` (intra-op threads, to
    leave cores for DALI); ``openvino`` also takes ``hint`` and ``torch`` ``precision``.
    Returns an object with ``config`` (ModelConfig), ``name``, ``device`` and
    ``infer(batch) -> np.ndarray`` of shape (N, num_classes) holding logits.
    Raises DfscanError when the file is missing, its backend cannot run here or does not take
    one of ``options``.
    """
    path = Path(path)
    if not path.is_file():
        raise DfscanError(f"{path}: engine file not found")
    entry = backend_for(path, backend)
    ok, why = entry.available()
    if not ok:
        raise DfscanError(f"{path}: the {entry.name} backend cannot run here: {why}")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(inspect.signature(entry.loader).parameters))
    if unknown:
        raise DfscanError(f"{path}: the {entry.name} backend does not take {', '.join(unknown)}; drop it")
    return entry.loader(path, device, **options)

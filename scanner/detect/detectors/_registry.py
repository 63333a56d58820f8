"""The detector registry: one name per face detector, strict like the model registry.

A detector takes RGB ``uint8`` HWC images (already downscaled by the detection pipeline) and
returns, per image, an ``(n, 5)`` float32 array of ``x, y, w, h, score`` in that image's pixels.
Each entry says what it needs installed, and ``available()`` checks it without building anything,
so a detector shows up as usable only where it imports (as DALI's examples do for backends).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from scanner.errors import DfscanError


class Detector(Protocol):
    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, an ``(n, 5)`` float32 array ``x, y, w, h, score`` in that image's pixels."""


@dataclass(frozen=True)
class DetectorEntry:
    name: str
    builder: Callable[..., Detector]  # builder(device='cpu', min_face=20, min_score=None)
    description: str
    module: str  # the import that must succeed (and where the weights live)
    install: str  # the pip line that provides it

    def available(self) -> tuple[bool, str]:
        """``(usable, why)`` without importing heavy code."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        return (True, "installed") if found else (False, f"needs: {self.install}")


_DETECTORS: dict[str, DetectorEntry] = {}


def register_detector(name: str, *, description: str, module: str, install: str):
    """Decorator registering ``builder(device, min_face, min_score)`` under ``name``."""

    def wrap(builder):
        if name in _DETECTORS or name == "none":
            raise ValueError(f"detector {name!r} is already registered (or reserved)")
        _DETECTORS[name] = DetectorEntry(name, builder, description, module, install)
        return builder

    return wrap


def list_detectors() -> list[DetectorEntry]:
    return [_DETECTORS[n] for n in sorted(_DETECTORS)]


def get_detector_entry(name: str) -> DetectorEntry:
    if name not in _DETECTORS:
        raise DfscanError(f"--detector {name!r} unknown; one of {', '.join(sorted(_DETECTORS))} or none")
    return _DETECTORS[name]


def create_detector(name: str, device: str = "cpu", min_face: int | None = None,
                    min_score: float | None = None) -> Detector:
    """Build detector ``name``; unset options keep the detector's own defaults.

    Raises DfscanError for an unknown name or a missing package (naming the pip line).
    """
    entry = get_detector_entry(name)
    ok, why = entry.available()
    if not ok:
        raise DfscanError(f"detector {name!r} is not installed here; {why}")
    kwargs = {k: v for k, v in (("min_face", min_face), ("min_score", min_score)) if v is not None}
    return entry.builder(device=device, **kwargs)

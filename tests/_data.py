"""Shared test data: paths into ../shared/data and small images made in code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REALORFAKE = SHARED / "realorfake"
MULTIFACE = SHARED / "multiface"


def write_coco(path: Path, images: list[dict], annotations: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 0, "name": "Real"}, {"id": 1, "name": "Fake"}]}))
    return path


def gradient_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured RGB image: JPEG keeps it close to the original."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], -1)
    img += rng.normal(0, 8, size=(height // 8 + 1, width // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)[:height, :width]
    return np.clip(img, 0, 255).astype(np.uint8)

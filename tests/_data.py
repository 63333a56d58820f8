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


def write_big_set(root: Path, faces_per_image: int = 4):
    """~2,200 faces: every Train and Val image of realorfake with random boxes, and a 64-px
    MobileNetV2 ONNX engine. Returns ``(annotations, engine, number of faces)``."""
    from engines.export import export_onnx, model_from_source

    rng = np.random.default_rng(0)
    images, anns = [], []
    for split in ("Train", "Val"):
        for path in sorted((REALORFAKE / "Images" / split).glob("*.jpg")):
            images.append({"id": len(images) + 1, "file_name": str(path)})
            for _ in range(faces_per_image):
                x, y = rng.uniform(0, 380, 2)
                w, h = rng.uniform(40, 130, 2)
                anns.append({"id": len(anns) + 1, "image_id": len(images), "bbox": [x, y, w, h],
                             "category_id": int(rng.integers(0, 2))})
    ann = write_coco(root / "big_poly.json", images, anns)
    model, config = model_from_source(arch="mobilenetv2", seed=3, input_size=(64, 64))
    return ann, export_onnx(model, config, root / "m64.onnx"), len(anns)

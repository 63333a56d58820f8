"""Shared by the engine tests: real face crops from realorfake and a small model whose scores vary.

An untrained torchvision MobileNetV2 gives the same score for every input (its ReLU6 units
saturate), so comparing two engines on it proves nothing. ``varying_model`` re-estimates the
BatchNorm statistics on real crops and widens the head, which spreads the scores; every equality
test still asserts the spread (``score_std``) so a regression here cannot make them vacuous.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from _data import REALORFAKE

SIZE = (64, 64)


def crops(split: str, config, limit: int | None = None):
    """``(float32 N×3×H×W, int labels)``: each face box ×config.crop_margin about its centre,
    clipped, resized to the input size, normalised with the config's mean/std."""
    return _crops(split, tuple(config.input_size), tuple(config.mean), tuple(config.std),
                  float(config.crop_margin), limit)


@lru_cache(maxsize=None)
def _crops(split, size, mean, std, margin, limit):
    from PIL import Image

    coco = json.loads((REALORFAKE / f"{split}_poly.json").read_text())
    files = {img["id"]: img["file_name"] for img in coco["images"]}
    h, w = size
    xs, labels = [], []
    for ann in coco["annotations"][:limit]:
        image = Image.open(REALORFAKE / files[ann["image_id"]]).convert("RGB")
        x, y, bw, bh = ann["bbox"]
        cx, cy, half_w, half_h = x + bw / 2, y + bh / 2, bw * margin / 2, bh * margin / 2
        box = (max(0, cx - half_w), max(0, cy - half_h),
               min(image.width, cx + half_w), min(image.height, cy + half_h))
        arr = np.asarray(image.crop(box).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
        xs.append(((arr - mean) / std).transpose(2, 0, 1))
        labels.append(int(ann["category_id"]))
    return np.stack(xs).astype(np.float32), np.array(labels)


@lru_cache(maxsize=None)
def varying_model(seed: int = 0, size=SIZE, arch: str = "mobilenetv2"):
    """``(model, config)``: ``_data.varying_model``, cached per process (callers must not modify it)."""
    from _data import varying_model as build

    return build(arch, size, seed)


def scores(logits: np.ndarray) -> np.ndarray:
    """P(fake) from (N, 2) logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True))[:, 1]


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.eval().float()(torch.from_numpy(x)).numpy()

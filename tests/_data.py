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
    MobileNetV2 ONNX engine whose scores vary. Returns ``(annotations, engine, number of faces)``."""

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
    return ann, varying_engines(root, (64, 64), seed=3, formats=("onnx",))["onnx"], len(anns)


def calibration_crops(config, n: int = 48, seed: int = 0) -> np.ndarray:
    """Normalised random crops of realorfake Train images (N, 3, H, W), for BatchNorm statistics."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = sorted((REALORFAKE / "Images" / "Train").glob("*.jpg"))
    h, w = config.input_size
    out = []
    for k in range(n):
        with Image.open(paths[int(rng.integers(len(paths)))]) as im:
            im = im.convert("RGB")
            side = rng.uniform(0.3, 0.8) * min(im.width, im.height)  # face-sized and larger
            x0, y0 = rng.uniform(0, im.width - side), rng.uniform(0, im.height - side)
            crop = im.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
        arr = np.asarray(crop, dtype=np.float32) / 255.0
        out.append(((arr - np.array(config.mean)) / np.array(config.std)).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def varying_model(arch: str = "mobilenetv2", input_size=(64, 64), seed: int = 0):
    """``(model, config)``: a seeded model whose Fake score varies strongly from face to face.

    A freshly initialised MobileNetV2 scores every face alike (its ReLU6 activations saturate
    with BatchNorm's initial statistics), so equality tests built on it cannot fail. Here the
    BatchNorm statistics are measured on real image crops and the head is rescaled so the
    logit difference has a standard deviation of about 3 over those crops: scores spread over
    (0, 1) and follow the crop's pixels, so a wrong crop, box or order changes them.
    """
    import torch

    from engines.export import model_from_source

    model, config = model_from_source(arch=arch, seed=seed, input_size=input_size)
    x = torch.from_numpy(calibration_crops(config, seed=seed))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration passes
    model.train()
    with torch.no_grad():
        for chunk in x.split(16):
            model(chunk)
    model.eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = model(x)
        diff = logits[:, 1] - logits[:, 0]
        scale = 3.0 / float(diff.std().clamp_min(1e-6))
        head.weight.mul_(scale)
        head.bias.mul_(scale)
        centre = float((model(x)[:, 1] - model(x)[:, 0]).median())
        head.bias[1] -= centre  # half the calibration crops score above 0.5
    return model, config


def varying_engines(root: Path, input_size=(64, 64), seed: int = 0, formats=("onnx", "pt")) -> dict:
    """The varying model exported as engine files: ``{"onnx": path, "pt": path}``."""
    from engines.export import export

    model, config = varying_model(input_size=input_size, seed=seed)
    tag = f"vary{input_size[0]}x{input_size[1]}s{seed}"
    return {fmt: export(model, config, fmt, Path(root) / f"{tag}.{fmt}") for fmt in formats}


def assert_scores_spread(scores, floor: float = 0.05):
    """An equality of scores proves something only where the scores differ from face to face."""
    s = np.asarray([v for v in scores if v is not None], dtype=np.float64)
    assert len(s) >= 2 and s.std() > floor, f"scores do not spread (std {s.std():.4f}): the test engine is constant"

"""A synthetic multi-face set for benchmarks: mixed-size JPEGs, several labelled faces each.

Real face crops (with some context) are pasted at random scales and positions onto varied
backgrounds, so the set decodes and crops like photographs of groups, yet needs no data shipped:
any number of images is made from a seed. Where no face source is at hand, simple drawn faces
stand in. The layout is OpenForensics' COCO one (``ROOT/Images/<split>/*.jpg`` beside
``ROOT/<split>_poly.json``), so ``load_catalog(ROOT/Images/<split>)`` reads it as it is.
Every image is a function of ``(seed, index)`` alone, which lets workers share the work.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanner.errors import DfscanError

SPLIT = "Synthetic"
SOURCE_SPLITS = ("Val", "Test-Dev")  # held out from Train, so a trained model meets unseen faces
CONTEXT = 1.6  # a pasted crop spans this many face boxes: more than any crop_margin in use
_STORE_SIDE = 384  # source crops are kept at most this large (memory), pasted up to ~1.2x that


@dataclass(frozen=True)
class SourceFace:
    crop: object  # PIL RGB image: the face with its context
    box: tuple[float, float, float, float]  # the face inside ``crop``, [x, y, w, h]
    label: int


def default_face_source() -> Path | None:
    """``$DFSCAN_FACES``, else the project's shared realorfake folder where it exists."""
    env = os.environ.get("DFSCAN_FACES")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "realorfake"
    return shared if shared.is_dir() else None


def load_source_faces(root: Path | None, splits=SOURCE_SPLITS) -> list[SourceFace]:
    """Face crops from the COCO files ``root/<split>_poly.json``; [] when ``root`` is None."""
    from PIL import Image

    if root is None:
        return []
    root = Path(root)
    files = [root / f"{s}_poly.json" for s in splits if (root / f"{s}_poly.json").is_file()]
    if not files:
        raise DfscanError(f"{root}: no {'/'.join(f'{s}_poly.json' for s in splits)} to take faces from")
    faces = []
    for ann_file in files:
        coco = json.loads(ann_file.read_text())
        paths = {im["id"]: root / im["file_name"] for im in coco["images"]}
        for ann in coco["annotations"]:
            if ann.get("category_id") not in (0, 1) or not paths[ann["image_id"]].is_file():
                continue
            with Image.open(paths[ann["image_id"]]) as im:
                faces.append(_context_crop(im.convert("RGB"), ann["bbox"], int(ann["category_id"])))
    return faces


def _context_crop(image, bbox, label: int) -> SourceFace:
    x, y, w, h = bbox
    cx, cy, half_w, half_h = x + w / 2, y + h / 2, w * CONTEXT / 2, h * CONTEXT / 2
    x0, y0 = max(0, int(cx - half_w)), max(0, int(cy - half_h))
    x1, y1 = min(image.width, int(cx + half_w + 1)), min(image.height, int(cy + half_h + 1))
    crop = image.crop((x0, y0, x1, y1))
    s = min(1.0, _STORE_SIDE / max(crop.size))
    if s < 1.0:
        crop = crop.resize((max(1, round(crop.width * s)), max(1, round(crop.height * s))), resample=2)
    return SourceFace(crop, ((x - x0) * s, (y - y0) * s, w * s, h * s), label)


def _drawn_face(rng) -> SourceFace:
    """A plain drawn face (ellipse, eyes, mouth) for when no real faces are available."""
    from PIL import Image, ImageDraw

    w = int(rng.integers(120, 260))
    h = int(w * rng.uniform(1.15, 1.4))
    side_w, side_h = int(w * CONTEXT), int(h * CONTEXT)
    img = Image.new("RGB", (side_w, side_h), tuple(int(v) for v in rng.integers(40, 200, 3)))
    d = ImageDraw.Draw(img)
    x0, y0 = (side_w - w) // 2, (side_h - h) // 2
    skin = tuple(int(v) for v in np.clip(np.array([200, 160, 130]) * rng.uniform(0.5, 1.15), 0, 255))
    d.ellipse((x0, y0, x0 + w, y0 + h), fill=skin)
    for ex in (0.3, 0.7):
        d.ellipse((x0 + w * ex - w * 0.07, y0 + h * 0.38, x0 + w * ex + w * 0.07, y0 + h * 0.46), fill=(30, 30, 30))
    d.arc((x0 + w * 0.3, y0 + h * 0.55, x0 + w * 0.7, y0 + h * 0.8), 20, 160, fill=(120, 40, 40), width=4)
    return SourceFace(img, (x0, y0, w, h), int(rng.integers(0, 2)))


def _background(rng, width: int, height: int):
    """A smooth scene-like backdrop: gradient, blurred blobs or shapes, plus sensor noise."""
    from PIL import Image, ImageDraw, ImageFilter

    kind = int(rng.integers(0, 3))
    small_w, small_h = max(8, width // 8), max(8, height // 8)
    if kind == 0:  # two-colour gradient
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, small_h)[:, None, None] * np.ones((1, small_w, 1))
        base = (a * (1 - t) + b * t).astype(np.uint8)
        img = Image.fromarray(base)
    elif kind == 1:  # low-frequency colour blobs
        base = rng.uniform(0, 255, (max(2, small_h // 16), max(2, small_w // 16), 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((small_w, small_h), resample=3)
    else:  # a room of rectangles and ellipses
        img = Image.new("RGB", (small_w, small_h), tuple(int(v) for v in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 14))):
            x0, y0 = rng.integers(0, small_w), rng.integers(0, small_h)
            x1, y1 = x0 + rng.integers(4, small_w // 2 + 5), y0 + rng.integers(4, small_h // 2 + 5)
            shape = d.rectangle if rng.random() < 0.6 else d.ellipse
            shape((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        img = img.filter(ImageFilter.GaussianBlur(1.0))
    img = img.resize((width, height), resample=2)
    noise = rng.normal(0, rng.uniform(2, 8), (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def _overlaps(rect, taken) -> bool:
    x0, y0, x1, y1 = rect
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in taken)


def make_image(index: int, seed: int, faces: list[SourceFace], faces_per_image=(1, 8),
               size_range=(480, 1600)):
    """Image ``index`` of the set: ``(PIL image, [(bbox, label), ...], jpeg quality)``."""
    rng = np.random.default_rng([seed, index])
    width = int(rng.integers(size_range[0], size_range[1] + 1))
    height = int(width * rng.choice([0.5625, 0.667, 0.75, 1.0, 1.333]))
    height = int(np.clip(height, size_range[0] // 2, size_range[1]))
    image = _background(rng, width, height)
    wanted = int(rng.integers(faces_per_image[0], faces_per_image[1] + 1))
    placed, taken = [], []
    for _ in range(wanted * 25):
        if len(placed) == wanted:
            break
        face = faces[int(rng.integers(len(faces)))] if faces else _drawn_face(rng)
        # face widths from small background faces to close-ups, bounded by the image
        face_w = rng.uniform(40, max(41.0, min(0.45 * width, 1.2 * _STORE_SIDE / CONTEXT)))
        s = face_w / face.box[2]
        cw, ch = face.crop.width * s, face.crop.height * s
        if ch > height or cw > width:
            continue
        border = rng.random() < 0.1  # some faces are cut by the frame, as in photographs
        lo_x, lo_y = (-cw * 0.3, -ch * 0.3) if border else (0.0, 0.0)
        px = rng.uniform(lo_x, width - cw * (0.7 if border else 1.0))
        py = rng.uniform(lo_y, height - ch * (0.7 if border else 1.0))
        rect = (px, py, px + cw, py + ch)
        if _overlaps(rect, taken):
            continue
        bx, by = px + face.box[0] * s, py + face.box[1] * s
        x0, y0 = max(0.0, bx), max(0.0, by)
        x1, y1 = min(float(width), bx + face.box[2] * s), min(float(height), by + face.box[3] * s)
        if x1 - x0 < 16 or y1 - y0 < 16:
            continue
        image.paste(face.crop.resize((max(1, round(cw)), max(1, round(ch))), resample=2),
                    (int(round(px)), int(round(py))))
        taken.append(rect)
        placed.append(((round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)), face.label))
    return image, placed, int(rng.integers(80, 96))


def _write_range(args):
    root, split, seed, start, stop, source, faces_per_image, size_range = args
    faces = load_source_faces(source)
    out = []
    for i in range(start, stop):
        image, placed, quality = make_image(i, seed, faces, faces_per_image, size_range)
        rel = f"Images/{split}/{i + 1:07d}.jpg"
        image.save(Path(root) / rel, quality=quality, subsampling="4:2:0")
        out.append((i, rel, image.width, image.height, placed))
    return out


def make_synthetic_set(root, n_images: int, seed: int = 0, faces_per_image=(1, 8),
                       size_range=(480, 1600), source="default", workers: int = 1,
                       split: str = SPLIT) -> Path:
    """Write ``n_images`` images and ``root/<split>_poly.json``; returns ``root/Images/<split>``.

    ``source``: a realorfake-style folder to take faces from, ``"default"`` (see
    ``default_face_source``) or None for drawn faces. The same arguments give the same files.
    Raises DfscanError for impossible arguments.
    """
    lo, hi = faces_per_image
    if n_images < 1 or not 1 <= lo <= hi:
        raise DfscanError(f"synthetic set: need at least 1 image and 1 <= faces_per_image "
                          f"({lo}..{hi}); got {n_images} images")
    source = default_face_source() if source == "default" else source
    root = Path(root)
    (root / "Images" / split).mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers, n_images // 50 or 1))
    step = -(-n_images // workers)
    jobs = [(str(root), split, seed, a, min(n_images, a + step), source, (lo, hi), tuple(size_range))
            for a in range(0, n_images, step)]
    if workers == 1:
        parts = [_write_range(j) for j in jobs]
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_write_range, jobs))
    images, annotations = [], []
    for i, rel, width, height, placed in (r for part in parts for r in part):
        images.append({"id": i + 1, "file_name": rel, "width": width, "height": height})
        for (x, y, w, h), label in placed:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0,
                                "area": round(w * h, 1), "category_id": label, "bbox": [x, y, w, h],
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    coco = {"info": {"description": f"dfscan synthetic multi-face set, seed {seed}",
                     "face_source": str(source) if source else "drawn faces"},
            "images": images, "annotations": annotations,
            "categories": [{"id": 0, "name": "Real"}, {"id": 1, "name": "Fake"}]}
    (root / f"{split}_poly.json").write_text(json.dumps(coco))
    return root / "Images" / split

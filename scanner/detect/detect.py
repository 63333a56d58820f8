"""Faces without annotations: detect them, write COCO annotations, hand them to the scan.

Data flow: whole-image catalog → DALI decode + downscale (``scanner.pipeline.graphs``) →
detector (``scanner.detect.detectors``) → boxes in full-resolution pixels → COCO annotations
(``dfscan detect``'s file, or ``OUT/detections_poly.json`` in ``dfscan run``) → ``load_catalog``
→ the usual scan, which crops from its own full-resolution decode.

Box convention. The detector's box is enlarged by ``margin`` (``--det-margin``) about its centre
and clipped to the image; that is the box stored (COCO ``bbox``, Parquet ``x, y, w, h``). The scan
then enlarges it by the model's ``crop_margin`` as it does any annotated box, so the crop is
``margin × crop_margin`` times the detector's box. With the default MTCNN, whose boxes follow the
same convention as the OpenForensics/realorfake annotations the models were trained on, the
default ``margin`` 1.0 gives exactly the crop the model saw in training (×1.3 with the bundled
configs, the peers' usual detector margin).

An image in which no face was found keeps one row with status ``no_face``; one that could not be
read keeps one row with the reason. In the COCO file such images carry ``status`` and ``error``
fields, which ``load_catalog`` turns back into those rows.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engines.files import write_atomic
from scanner.catalog import Catalog, catalog_from_coco, load_catalog
from scanner.catalog.files import DEFAULT_MAX_PIXELS, probe_image, read_file
from scanner.errors import DfscanError
from scanner.status import DECODE_ERROR, NO_FACE, FaceError

DETECTIONS_FILE = "detections_poly.json"  # in a run's --out folder


@dataclass
class DetectSettings:
    detector: str = "mtcnn"  # a registered name, or 'none' for whole-image faces
    margin: float = 1.0  # enlarges each detected box about its centre (see the module docstring)
    # the detector sees images shrunk to at most this on the longer side (insightface's default
    # too); faces under ~20 px there (3% of the longer side) are not sought: --det-size 1280 finds them
    max_side: int = 640
    min_face: int | None = None  # pixels in the shrunk copy; None: the detector's default
    min_score: float | None = None  # None: the detector's default
    batch_size: int = 16  # images per DALI batch
    device: str = "cpu"
    num_threads: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def meta(self) -> dict:
        """What a run records (and checks on --resume) about its detection."""
        return {"detector": self.detector, "det_margin": self.margin, "det_max_side": self.max_side,
                "det_min_face": self.min_face, "det_min_score": self.min_score}


@dataclass
class ImageDetections:
    image_id: int
    width: int | None
    height: int | None
    boxes: np.ndarray  # (n, 5) x, y, w, h, score: full-resolution pixels, margin applied, clipped
    problem: tuple[str, str] | None = None  # (status, reason) when the image could not be read


def applies(catalog: Catalog, settings: DetectSettings | None) -> bool:
    """Detection runs only where there are no annotations and a detector is chosen."""
    return settings is not None and settings.detector != "none" and catalog.annotations is None


def enlarge(boxes: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
    """``boxes`` (n, ≥4, x y w h) grown by ``margin`` about their centres, clipped to the image."""
    out = boxes.astype(np.float32, copy=True)
    if not len(out):
        return out
    cx, cy = out[:, 0] + out[:, 2] / 2, out[:, 1] + out[:, 3] / 2
    hw, hh = out[:, 2] * margin / 2, out[:, 3] * margin / 2
    x0, y0 = np.clip(cx - hw, 0, width), np.clip(cy - hh, 0, height)
    x1, y1 = np.clip(cx + hw, 0, width), np.clip(cy + hh, 0, height)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x0, y0, x1 - x0, y1 - y0
    return out[(out[:, 2] >= 1) & (out[:, 3] >= 1)]


class _Decoder:
    """Owns the detection pipeline; isolates an undecodable image by bisection, as the scan does."""

    def __init__(self, settings: DetectSettings):
        self.settings, self.pipe = settings, None

    def discard(self):
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            pipe._shutdown()  # see scanner.pipeline.cropper.Cropper.discard: never leave a failed pipeline to the GC

    def decode(self, items: list[tuple[int, np.ndarray, tuple[int, int]]]):
        """``items`` = (image_id, encoded, (h, w)); returns ({image_id: copy}, {image_id: reason})."""
        from scanner.pipeline.cropper import isolate_failures
        from scanner.pipeline.graphs import build_detect_pipeline, run_detect_batch

        def attempt(part):
            if self.pipe is None:
                self.pipe = build_detect_pipeline(self.settings.batch_size, self.settings.device,
                                                  self.settings.num_threads)
            copies = run_detect_batch(self.pipe, [e for _, e, _ in part], [s for _, _, s in part])
            return {i: c for (i, _, _), c in zip(part, copies)}

        done, failed = isolate_failures(items, attempt, lambda item, reason: (item[0], reason), self.discard)
        return {i: c for part in done for i, c in part.items()}, dict(failed)


def detect_catalog(catalog: Catalog, settings: DetectSettings, on_images=None) -> Iterator[ImageDetections]:
    """Detect faces in every image of ``catalog`` (its boxes are ignored), in catalog order.

    ``on_images(n)`` is called after each batch (progress bars). Raises DfscanError for an
    unknown or uninstalled detector.
    """
    from scanner.detect.detectors import create_detector
    from scanner.pipeline.graphs import detection_size

    if settings.margin <= 0:
        raise DfscanError(f"--det-margin {settings.margin}: must be positive (1.0 keeps the detector's box)")
    detector = create_detector(settings.detector, settings.device, settings.min_face, settings.min_score)
    decoder = _Decoder(settings)
    ids = list(catalog.images)
    try:
        for start in range(0, len(ids), settings.batch_size):
            results: dict[int, ImageDetections] = {}
            items, full = [], {}
            for image_id in ids[start:start + settings.batch_size]:
                image = catalog.images[image_id]
                try:
                    if image.problem is not None:
                        raise FaceError(*image.problem)
                    data = read_file(image.path)
                    info = probe_image(data, settings.max_pixels)
                except FaceError as exc:
                    results[image_id] = ImageDetections(image_id, None, None, np.zeros((0, 5), np.float32),
                                                        (exc.code, str(exc)))
                    continue
                full[image_id] = (info.width, info.height)
                items.append((image_id, np.frombuffer(data, dtype=np.uint8),
                              detection_size(info.width, info.height, settings.max_side)))
            copies, failed = decoder.decode(items) if items else ({}, {})
            for image_id, reason in failed.items():
                w, h = full[image_id]
                results[image_id] = ImageDetections(image_id, w, h, np.zeros((0, 5), np.float32),
                                                    (DECODE_ERROR, reason))
            order = [i for i, _, _ in items if i in copies]
            for image_id, boxes in zip(order, detector.detect([copies[i] for i in order])):
                w, h = full[image_id]
                small_h, small_w = copies[image_id].shape[:2]
                boxes = boxes.copy()
                boxes[:, [0, 2]] *= w / small_w
                boxes[:, [1, 3]] *= h / small_h
                boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
                results[image_id] = ImageDetections(image_id, w, h, enlarge(boxes, settings.margin, w, h))
            for image_id in ids[start:start + settings.batch_size]:
                yield results[image_id]
            if on_images is not None:
                on_images(len(results))
    finally:
        decoder.discard()


def to_coco(catalog: Catalog, detections, settings: DetectSettings, json_dir=None) -> dict:
    """A COCO / OpenForensics-layout dict of ``detections`` (no categories; ``score`` per box).

    ``file_name`` is relative to ``json_dir`` where the image lies below it (as OpenForensics'
    ``Images/<Split>/x.jpg``), else relative to the images folder; ``load_catalog`` resolves both.
    """
    json_dir = os.path.abspath(json_dir) if json_dir is not None else None
    images, annotations = [], []
    for det in detections:
        name = _file_name(catalog.images[det.image_id], json_dir)
        entry = {"id": det.image_id, "file_name": Path(name).as_posix(), "width": det.width, "height": det.height}
        if det.problem is not None:
            entry["status"], entry["error"] = det.problem
        elif not len(det.boxes):
            entry["status"] = NO_FACE
            entry["error"] = f"the {settings.detector} detector found no face"
        images.append(entry)
        for x, y, w, h, score in det.boxes.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": det.image_id, "iscrowd": 0,
                                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "score": round(score, 5)})
    info = {"description": "faces found by dfscan detect", "detector": settings.detector,
            "settings": asdict(settings), "date_created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return {"info": info, "images": images, "annotations": annotations, "categories": []}


def _detect_all(catalog: Catalog, settings: DetectSettings, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(catalog.images), unit="img", disable=not progress, desc="detect", dynamic_ncols=True)
    start = time.perf_counter()
    try:
        detections = list(detect_catalog(catalog, settings, on_images=bar.update))
    finally:
        bar.close()
    return detections, time.perf_counter() - start


def _file_name(record, json_dir: str | None) -> str:
    if json_dir is not None and record.path is not None:
        rel = os.path.relpath(os.path.abspath(record.path), json_dir)  # links are not followed
        if not rel.startswith(".."):
            return Path(rel).as_posix()
    return Path(record.file).as_posix()


def write_coco(path, coco: dict) -> Path:
    """Write atomically (a killed run never leaves half a file under the name)."""
    return write_atomic(path, json.dumps(coco, indent=1))


def detect_to_file(images, out_path, settings: DetectSettings, progress: bool = False) -> tuple[Path, dict]:
    """``dfscan detect``: detect in every image below ``images``, write COCO to ``out_path``.

    Returns the path and counts (images, faces, no_face, unreadable, seconds).
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".json":
        raise DfscanError(f"--out {out_path}: give a .json file (OpenForensics names it <Split>_poly.json)")
    if not out_path.parent.is_dir():
        raise DfscanError(f"--out {out_path}: folder {out_path.parent} does not exist")
    catalog = whole_image_catalog(images)  # annotation files beside the images are not wanted here
    detections, seconds = _detect_all(catalog, settings, progress)
    coco = to_coco(catalog, detections, settings, out_path.parent)
    write_coco(out_path, coco)
    counts = {"images": len(detections), "faces": len(coco["annotations"]),
              "no_face": sum(1 for i in coco["images"] if i.get("status") == NO_FACE),
              "unreadable": sum(1 for i in coco["images"] if i.get("status") not in (None, NO_FACE)),
              "seconds": seconds}
    return out_path, counts


def catalog_for_run(catalog: Catalog, images, out_dir, settings: DetectSettings, resume: bool = False,
                    overwrite: bool = False, progress: bool = False, log=print):
    """``dfscan run`` on a plain folder: returns ``(catalog of the detected faces, save)``.

    The catalog is what ``dfscan run --annotations OUT/detections_poly.json`` would load; call
    ``save()`` once the run owns ``out_dir`` to write that file. On ``--resume`` an existing file
    is reused (``save`` then does nothing), so the faces and their ids stay those of the first run.
    """
    out_dir = Path(out_dir)
    path = out_dir / DETECTIONS_FILE
    if resume and path.is_file():
        return load_catalog(images, path), lambda: None
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (resume or overwrite):
        # the same refusal RunOutput makes, but before a detection pass it would waste
        raise DfscanError(f"{out_dir} is not empty; pass --resume to finish an earlier run "
                          "there, or --overwrite to start again")
    detections, seconds = _detect_all(catalog, settings, progress)
    coco = to_coco(catalog, detections, settings)
    n = len(detections)
    log(f"{settings.detector}: {len(coco['annotations'])} faces in {n} images in {seconds:.1f} s "
        f"({n / seconds if seconds > 0 else float('nan'):.2f} images/s)")
    return catalog_from_coco(images, coco, path), lambda: write_coco(path, coco)


def whole_image_catalog(images) -> Catalog:
    """Every image below ``images`` as one whole-image face, ignoring annotation files beside it."""
    from scanner.catalog import whole_image_catalog

    images = Path(images)
    if not images.is_dir():
        raise DfscanError(f"{images}: not a folder of images")
    return whole_image_catalog(images)

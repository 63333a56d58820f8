"""The catalog: which images to scan and which face boxes each holds.

Reads COCO / OpenForensics annotations with pycocotools (``bbox`` = [x, y, w, h] pixels,
``category_id`` 0 = Real, 1 = Fake). Without annotations every image is one face whose box is
the whole image.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from scanner.errors import DfscanError
from scanner.status import PATH_REFUSED, UNKNOWN_IMAGE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pnm", ".ppm"}


@dataclass
class ImageRecord:
    image_id: int
    file: str  # as the annotations name it (or relative to IMAGES without annotations)
    path: Path | None  # resolved on disk; None when it could not be found
    corruption: str | None = None
    face_ids: list[int] = field(default_factory=list)
    problem: tuple[str, str] | None = None  # (status, reason) that fails all of its faces


@dataclass
class FaceRecord:
    face_id: int
    image_id: int
    bbox: tuple[float, float, float, float] | None  # None: the whole image
    label: int | None = None  # 0 Real, 1 Fake, None unknown
    score: float | None = None  # the face detector's confidence (annotation field ``score``)


@dataclass
class Catalog:
    images: dict[int, ImageRecord]
    faces: dict[int, FaceRecord]
    annotations: Path | None = None
    n_resolved_direct: int = 0
    n_resolved_basename: int = 0
    n_missing: int = 0
    has_labels: bool = False

    def summary(self) -> str:
        src = f"annotations {self.annotations}" if self.annotations else "no annotations (whole-image faces)"
        text = f"{len(self.images)} images, {len(self.faces)} faces from {src}"
        if self.annotations:
            text += (f"; files resolved: {self.n_resolved_direct} by path, "
                     f"{self.n_resolved_basename} by base name, {self.n_missing} missing")
        return text

    def subset(self, image_ids) -> "Catalog":
        """A catalog of just these images (used for sharding and resuming)."""
        keep = [i for i in image_ids if i in self.images]
        faces = {f: self.faces[f] for i in keep for f in self.images[i].face_ids}
        return Catalog({i: self.images[i] for i in keep}, faces, self.annotations,
                       has_labels=self.has_labels)


def find_annotations(images_dir: Path) -> Path | None:
    """OpenForensics puts ``ROOT/<Split>_poly.json`` beside ``ROOT/Images/<Split>/``."""
    name = images_dir.name
    candidates = [images_dir.parent.parent / f"{name}_poly.json", images_dir.parent / f"{name}_poly.json"]
    for c in candidates:
        if c.is_file():
            return c
    for folder in (images_dir.parent, images_dir):
        polys = sorted(folder.glob("*_poly.json"))
        if len(polys) == 1:
            return polys[0]
    return None


def load_catalog(images_dir, annotations=None, allow_outside: bool = False) -> Catalog:
    """Build the catalog for ``images_dir`` from ``annotations`` (found by itself when None).

    Raises DfscanError naming the file and field when the annotation file as a whole is unusable.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DfscanError(f"{images_dir}: not a folder of images")
    if annotations is None:
        annotations = find_annotations(images_dir)
        if annotations is None:
            return whole_image_catalog(images_dir)
    return _coco_catalog(images_dir, Path(annotations), allow_outside)


def catalog_from_coco(images_dir, dataset: dict, ann_path, allow_outside: bool = False) -> Catalog:
    """The catalog of a COCO dict already in memory (``dfscan run`` builds one from its detections).

    ``ann_path`` is where the dict is, or will be, saved: file names resolve against its folder
    as they would when loading that file. Raises DfscanError as ``load_catalog`` does.
    """
    return _coco_catalog(Path(images_dir), Path(ann_path), allow_outside, copy.deepcopy(dataset))


def whole_image_catalog(images_dir: Path) -> Catalog:
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    images, faces = {}, {}
    for image_id, path in enumerate(files, start=1):
        images[image_id] = ImageRecord(image_id, str(path.relative_to(images_dir)), path, face_ids=[image_id])
        faces[image_id] = FaceRecord(image_id, image_id, None)
    return Catalog(images, faces)


def _load_coco(path: Path, dataset: dict | None = None):
    from pycocotools.coco import COCO

    if dataset is None:
        if not path.is_file():
            raise DfscanError(f"{path}: annotation file not found")
        try:
            with open(path, "rb") as fh:
                dataset = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DfscanError(f"{path}: not valid JSON ({exc}); fix or re-export the annotation file") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise DfscanError(f"{path}: no 'images' list; expected COCO / OpenForensics annotations")
    dataset.setdefault("annotations", [])
    for key, fields in (("images", ("id", "file_name")), ("annotations", ("id", "image_id", "bbox"))):
        for n, item in enumerate(dataset[key]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise DfscanError(f"{path}: {key}[{n}] lacks field {missing[0]!r}")
    for ann in dataset["annotations"]:
        ann.setdefault("category_id", None)  # unlabelled faces (pycocotools' index needs the key)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def _resolve(file_name: str, ann_root: Path, images_dir: Path, allow_outside: bool):
    """Returns ``(path or None, how)`` with how in {'direct', 'basename', 'missing', 'refused'}."""
    rel = Path(file_name)
    if (rel.is_absolute() or ".." in rel.parts) and not allow_outside:
        return None, "refused"
    # a dangling or looping link still resolves: reading it then says what is wrong with it
    for base in (ann_root, images_dir):
        candidate = base / rel
        if candidate.is_file() or candidate.is_symlink():
            return candidate, "direct"
    candidate = images_dir / rel.name
    if candidate.is_file() or candidate.is_symlink():
        return candidate, "basename"
    return None, "missing"


def _coco_catalog(images_dir: Path, ann_path: Path, allow_outside: bool, dataset: dict | None = None) -> Catalog:
    coco = _load_coco(ann_path, dataset)
    images, faces = {}, {}
    counts = {"direct": 0, "basename": 0, "missing": 0, "refused": 0}
    ann_root = ann_path.parent
    for img in coco.dataset["images"]:
        image_id = int(img["id"])
        if image_id in images:
            raise DfscanError(f"{ann_path}: duplicate image id {image_id} in 'images'")
        path, how = _resolve(str(img["file_name"]), ann_root, images_dir, allow_outside)
        counts[how] += 1
        problem = None
        if how == "refused":
            problem = (PATH_REFUSED, "file_name points outside the image and annotation folders; "
                                     "pass --allow-outside-paths if that is intended")
        images[image_id] = ImageRecord(image_id, str(img["file_name"]), path, img.get("corruption"),
                                       problem=problem)
    # dfscan detect marks images it found no face in (or could not read) with status/error
    statuses = {int(img["id"]): (img["status"], str(img.get("error") or img["status"]))
                for img in coco.dataset["images"] if isinstance(img.get("status"), str) and img["status"] != "ok"}
    has_labels = False
    for ann in coco.dataset["annotations"]:
        face_id, image_id = int(ann["id"]), int(ann["image_id"])
        if face_id in faces:
            raise DfscanError(f"{ann_path}: duplicate annotation id {face_id} in 'annotations'")
        if image_id not in images:  # the face still gets its row, with a status saying why
            images[image_id] = ImageRecord(image_id, "", None, problem=(
                UNKNOWN_IMAGE, f"annotation {face_id} names image_id {image_id}, which is not in 'images'"))
        label = ann.get("category_id")
        label = int(label) if label in (0, 1) else None
        has_labels |= label is not None
        score = ann.get("score")
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        faces[face_id] = FaceRecord(face_id, image_id, _bbox(ann["bbox"]), label, score)
        images[image_id].face_ids.append(face_id)
    next_id = max(faces, default=0) + 1
    for image_id, problem in statuses.items():  # one row each, after the annotated faces
        if not images[image_id].face_ids:
            faces[next_id] = FaceRecord(next_id, image_id, None)
            images[image_id].face_ids.append(next_id)
            if images[image_id].problem is None and images[image_id].path is not None:
                images[image_id].problem = problem  # a file gone since keeps its own status
            next_id += 1
    return Catalog(images, faces, ann_path, counts["direct"], counts["basename"],
                   counts["missing"] + counts["refused"], has_labels)


def _bbox(value) -> tuple[float, float, float, float]:
    """Keep whatever four numbers are there; validity is judged per face in ``scanner.pipeline.geometry``."""
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        return (math.nan, math.nan, math.nan, math.nan)
    return (x, y, w, h)


def split_paths(root, split: str) -> tuple[Path, Path]:
    """``(ROOT/Images/<split>, ROOT/<split>_poly.json)``, the OpenForensics layout."""
    root = Path(root)
    images, annotations = root / "Images" / split, root / f"{split}_poly.json"
    if not images.is_dir() or not annotations.is_file():
        found = sorted(p.name[:-len("_poly.json")] for p in root.glob("*_poly.json"))
        raise DfscanError(f"{root}: split {split!r} needs {images} and {annotations}; "
                          f"splits found there: {', '.join(found) or 'none'}")
    return images, annotations

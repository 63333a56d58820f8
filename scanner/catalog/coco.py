"""The catalog: which images to scan and which face boxes each holds.

Reads COCO / OpenForensics annotations (``bbox`` = [x, y, w, h] pixels, ``category_id``
0 = Real, 1 = Fake) record by record (``stream``) into columns (``compact``). Without
annotations every image is one face whose box is the whole image.
"""
from __future__ import annotations

import math
import os
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa

from scanner.catalog.compact import (BY_BASENAME, IN_ANN_ROOT, IN_IMAGES, NO_PATH, Catalog, FaceColumns, IdIndex,
                                     ImageColumns)
from scanner.catalog.stream import CocoSource
from scanner.errors import DfscanError
from scanner.status import PATH_REFUSED, UNKNOWN_IMAGE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pnm", ".ppm"}


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
    return _coco_catalog(Path(images_dir), Path(ann_path), allow_outside, dataset)


def whole_image_catalog(images_dir: Path) -> Catalog:
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    n = len(files)
    ids = np.arange(1, n + 1, dtype=np.int64)
    images = ImageColumns(ids, pa.array([str(p.relative_to(images_dir)) for p in files], type=pa.string()),
                          np.full(n, IN_IMAGES, dtype=np.int8), np.full(n, -1, dtype=np.int32), [], {}, {},
                          images_dir=str(images_dir))
    faces = FaceColumns(ids.copy(), np.arange(n, dtype=np.int64), np.full((n, 4), np.nan), np.ones(n, dtype=bool),
                        np.full(n, -1, dtype=np.int8), np.full(n, np.nan), np.zeros(n, dtype=bool))
    return Catalog.from_columns(images, faces)


class Resolver:
    """Finds each annotation ``file_name`` on disk: as given under the annotation file's folder
    or the images folder, else by base name in the images folder. Each folder is listed once
    (one ``scandir`` instead of up to three ``stat`` calls per image: 2,000,000 missing files
    cost 40 µs each that way)."""

    def __init__(self, ann_root: Path, images_dir: Path, allow_outside: bool):
        self.bases = (str(ann_root), str(images_dir))
        self.allow_outside = allow_outside
        self.listings: dict[str, frozenset] = {}
        self.folders: dict[str, tuple[str, str]] = {}

    def listing(self, folder: str) -> frozenset:
        """Names in ``folder`` that ``is_file() or is_symlink()`` accepts (a dangling or looping
        link counts: reading it then says what is wrong with it); empty if it cannot be listed."""
        names = self.listings.get(folder)
        if names is None:
            try:
                with os.scandir(folder or ".") as it:
                    names = frozenset(e.name for e in it if e.is_symlink() or e.is_file())
            except OSError:
                names = frozenset()
            self.listings[folder] = names
        return names

    def __call__(self, file_name: str) -> int:
        """One of IN_ANN_ROOT, IN_IMAGES, BY_BASENAME, NO_PATH, or -2 (refused: outside the roots)."""
        if not self.allow_outside and (os.path.isabs(file_name) or ".." in file_name.split("/")):
            return -2
        if not file_name:
            return NO_PATH
        sub, name = os.path.split(file_name)
        folders = self.folders.get(sub)
        if folders is None:  # the folders this subfolder means under each base, joined once
            folders = self.folders[sub] = tuple(os.path.join(base, sub) for base in self.bases)
        if name in self.listing(folders[0]):
            return IN_ANN_ROOT
        if name in self.listing(folders[1]):
            return IN_IMAGES
        if name in self.listing(self.bases[1]):
            return BY_BASENAME
        return NO_PATH


class Builder:
    """Columns of a COCO catalog, filled record by record (array.array: 8 bytes an id)."""

    CHUNK = 65536

    def __init__(self):
        self.image_ids, self.where, self.corruption = array("q"), array("b"), array("i")
        self.files, self.file_chunks = [], []
        self.corruption_names: dict[str, int] = {}
        self.face_ids, self.face_image, self.label = array("q"), array("q"), array("b")
        self.box, self.whole, self.score, self.has_score = array("d"), array("b"), array("d"), array("b")

    def add_image(self, image_id: int, file: str, where: int, corruption):
        self.image_ids.append(image_id)
        self.where.append(where)
        code = -1 if corruption is None else self.corruption_names.setdefault(str(corruption), len(self.corruption_names))
        self.corruption.append(code)
        self.files.append(file)
        if len(self.files) >= self.CHUNK:
            self.file_chunks.append(pa.array(self.files, type=pa.string()))
            self.files = []

    def add_face(self, face_id: int, image_id: int, box, label, score):
        self.face_ids.append(face_id)
        self.face_image.append(image_id)
        self.whole.append(box is None)
        self.box.extend((math.nan,) * 4 if box is None else box)
        self.label.append(-1 if label is None else label)
        self.has_score.append(score is not None)
        self.score.append(math.nan if score is None else score)

    def image_columns(self, problems, ann_root, images_dir) -> ImageColumns:
        chunks = self.file_chunks + [pa.array(self.files, type=pa.string())]
        return ImageColumns(np.frombuffer(self.image_ids, dtype=np.int64).copy(),
                            pa.chunked_array(chunks, type=pa.string()).combine_chunks(),
                            np.frombuffer(self.where, dtype=np.int8).copy(),
                            np.frombuffer(self.corruption, dtype=np.int32).copy(), list(self.corruption_names),
                            problems, {}, str(ann_root), str(images_dir))

    def face_columns(self, image_rows: np.ndarray) -> FaceColumns:
        return FaceColumns(np.frombuffer(self.face_ids, dtype=np.int64).copy(), image_rows,
                           np.frombuffer(self.box, dtype=np.float64).reshape(-1, 4).copy(),
                           np.frombuffer(self.whole, dtype=np.int8).astype(bool),
                           np.frombuffer(self.label, dtype=np.int8).copy(),
                           np.frombuffer(self.score, dtype=np.float64).copy(),
                           np.frombuffer(self.has_score, dtype=np.int8).astype(bool))


def _first_duplicate(ids: np.ndarray) -> int | None:
    """The id whose second occurrence comes first in ``ids`` (None: all distinct)."""
    order = np.argsort(ids, kind="stable")
    again = order[1:][ids[order][1:] == ids[order][:-1]]
    return int(ids[again.min()]) if len(again) else None


def _coco_catalog(images_dir: Path, ann_path: Path, allow_outside: bool, dataset: dict | None = None) -> Catalog:
    source = CocoSource(ann_path, dataset)
    build, resolve = Builder(), Resolver(ann_path.parent, images_dir, allow_outside)
    counts = {IN_ANN_ROOT: 0, IN_IMAGES: 0, BY_BASENAME: 0, NO_PATH: 0, -2: 0}
    problems: dict[int, tuple[str, str]] = {}
    statuses: dict[int, tuple[str, str]] = {}  # dfscan detect marks images it found no face in
    for img in source.records("images"):
        image_id, file = int(img["id"]), str(img["file_name"])
        where = resolve(file)
        counts[where] += 1
        if where == -2:
            where = NO_PATH
            problems[image_id] = (PATH_REFUSED, "file_name points outside the image and annotation folders; "
                                                "pass --allow-outside-paths if that is intended")
        build.add_image(image_id, file, where, img.get("corruption"))
        status = img.get("status")
        if isinstance(status, str) and status != "ok":
            statuses[image_id] = (status, str(img.get("error") or status))
    duplicate = _first_duplicate(np.frombuffer(build.image_ids, dtype=np.int64))
    if duplicate is not None:
        raise DfscanError(f"{ann_path}: duplicate image id {duplicate} in 'images'")
    has_labels = False
    for ann in source.records("annotations"):
        label = ann.get("category_id")
        label = int(label) if label in (0, 1) else None
        has_labels |= label is not None
        score = ann.get("score")
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        build.add_face(int(ann["id"]), int(ann["image_id"]), _bbox(ann["bbox"]), label, score)
    face_ids = np.frombuffer(build.face_ids, dtype=np.int64).copy()  # (a view would pin the array)
    duplicate = _first_duplicate(face_ids)
    if duplicate is not None:
        raise DfscanError(f"{ann_path}: duplicate annotation id {duplicate} in 'annotations'")
    image_ids = np.frombuffer(build.image_ids, dtype=np.int64).copy()
    face_image = np.frombuffer(build.face_image, dtype=np.int64).copy()
    rows = IdIndex(image_ids).rows(face_image)
    # a face naming an unknown image still gets its row: the image is added, with a status saying why
    unknown, first = np.unique(face_image[rows < 0], return_index=True)
    unknown_faces = face_ids[rows < 0]
    for k in np.argsort(first):
        image_id, face_id = int(unknown[k]), int(unknown_faces[first[k]])
        build.add_image(image_id, "", NO_PATH, None)
        problems[image_id] = (UNKNOWN_IMAGE, f"annotation {face_id} names image_id {image_id}, which is not in 'images'")
    if len(unknown):
        rows = IdIndex(np.frombuffer(build.image_ids, dtype=np.int64).copy()).rows(face_image)
    # images marked by detect that hold no face get one row each, after the annotated faces
    if statuses:
        next_id = int(face_ids.max(initial=0)) + 1
        has_face = set(face_image.tolist())
        row_of = IdIndex(np.frombuffer(build.image_ids, dtype=np.int64).copy())
        extra = []
        for image_id, problem in statuses.items():
            if image_id in has_face:
                continue
            build.add_face(next_id, image_id, None, None, None)
            extra.append(row_of.row(image_id))
            if image_id not in problems and build.where[extra[-1]] != NO_PATH:
                problems[image_id] = problem  # a file gone since keeps its own status
            next_id += 1
        rows = np.concatenate([rows, np.array(extra, dtype=np.int64)])

    return Catalog.from_columns(build.image_columns(problems, ann_path.parent, images_dir), build.face_columns(rows),
                                ann_path, counts[IN_ANN_ROOT] + counts[IN_IMAGES], counts[BY_BASENAME],
                                counts[NO_PATH] + counts[-2], has_labels)


def _bbox(value) -> tuple[float, float, float, float]:
    """Keep whatever four numbers are there; validity is judged per face in ``scanner.pipeline.geometry``."""
    try:
        x, y, w, h = value
        return (float(x), float(y), float(w), float(h))
    except (TypeError, ValueError):
        return (math.nan, math.nan, math.nan, math.nan)


def split_paths(root, split: str) -> tuple[Path, Path]:
    """``(ROOT/Images/<split>, ROOT/<split>_poly.json)``, the OpenForensics layout."""
    root = Path(root)
    images, annotations = root / "Images" / split, root / f"{split}_poly.json"
    if not images.is_dir() or not annotations.is_file():
        found = sorted(p.name[:-len("_poly.json")] for p in root.glob("*_poly.json"))
        raise DfscanError(f"{root}: split {split!r} needs {images} and {annotations}; "
                          f"splits found there: {', '.join(found) or 'none'}")
    return images, annotations

"""The catalog: which images to scan and which face boxes each holds.

Reads COCO / OpenForensics annotations (``bbox`` = [x, y, w, h] pixels, ``category_id``
0 = Real, 1 = Fake) record by record (``stream``) into columns (``compact``). Without
annotations every image is one face whose box is the whole image.
"""
from __future__ import annotations

import gc
import math
from contextlib import contextmanager
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa

from scanner.catalog.compact import (BY_BASENAME, IN_ANN_ROOT, IN_IMAGES, NO_PATH, Catalog, FaceColumns, IdIndex,
                                     ImageColumns)
from scanner.catalog.resolve import REFUSED, resolve_files
from scanner.catalog.stream import CocoReader
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


class Builder:
    """Columns of a COCO catalog, filled record by record (array.array: 8 bytes an id)."""

    CHUNK = 65536

    def __init__(self, source: str = ""):
        self.source = source  # the annotation file, for messages
        self.image_ids, self.where, self.corruption = array("q"), array("b"), array("i")
        self.files, self.file_chunks = [], []
        self.corruption_names: dict[str, int] = {}
        self.face_ids, self.face_image, self.label = array("q"), array("q"), array("b")
        self.box, self.whole, self.score, self.has_score = array("d"), array("b"), array("d"), array("b")

    def add_image(self, image_id: int, file: str, where: int, corruption):
        self.image_ids.append(image_id)
        self.where.append(where)
        names = self.corruption_names
        code = -1 if corruption is None else names.setdefault(str(corruption), len(names))
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

    def ints(self, values: list, key: str, field: str) -> np.ndarray:
        """Ids as int64, as ``int()`` takes them (``5``, ``5.0``, ``"5"``); DfscanError for one it cannot."""
        try:
            return np.array(values, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            pass
        out = np.empty(len(values), dtype=np.int64)
        for k, v in enumerate(values):
            try:
                out[k] = int(v)
            except (TypeError, ValueError, OverflowError):
                raise DfscanError(f"{self.source}: {key} {field} {v!r} is not an integer id; fix the "
                                  "annotation file") from None
        return out

    def add_images(self, records, statuses: dict, lacks):
        """``images`` records: the loop only collects, a chunk at a time is converted as columns."""
        ids, files, corruption, marked, n = [], [], [], [], len(self.image_ids)
        try:
            for r in records:
                ids.append(r["id"])
                files.append(r["file_name"])
                corruption.append(r.get("corruption"))
                if "status" in r:  # dfscan detect marks images it found no face in
                    status = r["status"]
                    if isinstance(status, str) and status != "ok":
                        marked.append((r["id"], (status, str(r.get("error") or status))))
                if len(ids) == self.CHUNK:
                    self._images(ids, files, corruption)
                    ids, files, corruption = [], [], []
        except (KeyError, TypeError, AttributeError):  # (a record taken in part counts as not taken)
            at = len(self.image_ids) - n + min(len(ids), len(files), len(corruption))
            raise lacks(at, r) or DfscanError(f"{self.source}: images[{at}] is not a record") from None
        self._images(ids, files, corruption)
        if marked:
            statuses.update(zip(self.ints([i for i, _ in marked], "images", "id").tolist(), [st for _, st in marked]))

    def _images(self, ids, files, corruption):
        self.image_ids.frombytes(self.ints(ids, "images", "id").tobytes())
        self.where.frombytes(np.full(len(ids), NO_PATH, dtype=np.int8).tobytes())
        self.file_chunks.append(pa.array([f if type(f) is str else str(f) for f in files], type=pa.string()))
        names = self.corruption_names
        if corruption.count(None) == len(corruption):
            self.corruption.frombytes(np.full(len(ids), -1, dtype=np.int32).tobytes())
        else:
            self.corruption.extend([-1 if c is None else names.setdefault(str(c), len(names)) for c in corruption])

    def add_faces(self, records, lacks) -> bool:
        """``annotations`` records, as ``add_images``; True if one has a label."""
        ids, image_ids, boxes, labels, scores = [], [], [], [], []
        n0, has_labels = len(self.face_ids), False
        try:
            for r in records:
                ids.append(r["id"])
                image_ids.append(r["image_id"])
                boxes.append(r["bbox"])
                labels.append(r.get("category_id"))
                scores.append(r.get("score"))
                if len(ids) == self.CHUNK:
                    has_labels |= self._faces(ids, image_ids, boxes, labels, scores)
                    ids, image_ids, boxes, labels, scores = [], [], [], [], []
        except (KeyError, TypeError, AttributeError):
            at = len(self.face_ids) - n0 + min(map(len, (ids, image_ids, boxes, labels, scores)))
            raise lacks(at, r) or DfscanError(f"{self.source}: annotations[{at}] is not a record") from None
        return self._faces(ids, image_ids, boxes, labels, scores) or has_labels

    def _faces(self, ids, image_ids, boxes, labels, scores) -> bool:
        self.face_ids.frombytes(self.ints(ids, "annotations", "id").tobytes())
        self.face_image.frombytes(self.ints(image_ids, "annotations", "image_id").tobytes())
        labels = [int(v) if v in (0, 1) else -1 for v in labels]
        self.label.extend(labels)
        if scores.count(None) == len(scores):
            self.has_score.frombytes(bytes(len(scores)))
            self.score.frombytes(np.full(len(scores), np.nan).tobytes())
        else:
            scores = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in scores]
            self.has_score.extend([v is not None for v in scores])
            self.score.extend([math.nan if v is None else v for v in scores])
        self.whole.frombytes(bytes(len(ids)))
        self.box.frombytes(_boxes(boxes).tobytes())
        return max(labels, default=-1) >= 0

    def file_array(self) -> pa.Array:
        if self.files or not self.file_chunks:
            self.file_chunks.append(pa.array(self.files, type=pa.string()))
            self.files = []
        if len(self.file_chunks) > 1:
            self.file_chunks = [pa.chunked_array(self.file_chunks, type=pa.string()).combine_chunks()]
        return self.file_chunks[0]

    def image_columns(self, problems, ann_root, images_dir) -> ImageColumns:
        return ImageColumns(np.frombuffer(self.image_ids, dtype=np.int64).copy(), self.file_array(),
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


@contextmanager
def gc_paused():
    """The cyclic garbage collector off while records are read: a chunk of 65,536 record dicts
    alive at once made each collection walk them all, a third of the parse time; records hold
    no cycles, so nothing is left for it to find."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _coco_catalog(images_dir: Path, ann_path: Path, allow_outside: bool, dataset: dict | None = None) -> Catalog:
    build = Builder(str(ann_path))
    statuses: dict[int, tuple[str, str]] = {}  # dfscan detect marks images it found no face in
    has_labels = False
    reader = CocoReader(ann_path, dataset)
    with gc_paused():
        for key, records in reader:  # one pass, in file order
            if key == "images":
                build.add_images(records, statuses, lambda n, r: reader.lacks("images", n, r))
            else:
                has_labels |= build.add_faces(records, lambda n, r: reader.lacks("annotations", n, r))
    files = build.file_array()
    where = resolve_files(files, ann_path.parent, images_dir, allow_outside)
    problems: dict[int, tuple[str, str]] = {}
    for row in np.flatnonzero(where == REFUSED):
        problems[int(build.image_ids[row])] = (PATH_REFUSED, "file_name points outside the image and annotation "
                                                             "folders; pass --allow-outside-paths if that is intended")
    counts = np.bincount(where.astype(np.int64) + 2, minlength=6)  # REFUSED .. BY_BASENAME
    where[where == REFUSED] = NO_PATH
    build.where = array("b", where.tobytes())
    duplicate = _first_duplicate(np.frombuffer(build.image_ids, dtype=np.int64))
    if duplicate is not None:
        raise DfscanError(f"{ann_path}: duplicate image id {duplicate} in 'images'")
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
        problems[image_id] = (UNKNOWN_IMAGE,
                              f"annotation {face_id} names image_id {image_id}, which is not in 'images'")
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
                                ann_path, int(counts[IN_ANN_ROOT + 2] + counts[IN_IMAGES + 2]),
                                int(counts[BY_BASENAME + 2]), int(counts[NO_PATH + 2] + counts[REFUSED + 2]),
                                has_labels)


def _boxes(values: list) -> np.ndarray:
    """``_bbox`` of each value, as an (n, 4) float64 array: at NumPy's speed where all are four
    numbers, value by value where one is not (or holds something NumPy took for NaN)."""
    try:
        boxes = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        boxes = None
    if boxes is None or boxes.shape != (len(values), 4):
        return np.array([_bbox(v) for v in values], dtype=np.float64).reshape(-1, 4)
    for k in np.flatnonzero(np.isnan(boxes).any(axis=1)):
        boxes[k] = _bbox(values[k])
    return boxes


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

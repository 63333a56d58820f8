"""The catalog held as columns: NumPy arrays and one Arrow string array, no Python object per face.

A catalog as dicts of dataclasses held several Python objects per face for the whole run; as
columns it takes about 100 bytes a face (ids, box, label, score, the image's row; per image its
file name, how its path was resolved, its corruption: 50 MB pickled for 500,000 faces). ``Catalog.images`` and ``Catalog.faces`` stay read-only mappings
(id → ``ImageRecord`` / ``FaceRecord``) whose records are built when asked for, so the code that
reads one record at a time is unchanged; the run loop asks the column methods instead
(``face_ids_of``, ``face_positions``, ``face_columns``, ``pending_images``).

Catalog order is the order the records were given in (COCO: ``images`` and ``annotations`` as
the file lists them), and an image's faces keep that order among themselves.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from scanner.catalog.files import NOT_FOUND
from scanner.status import MISSING_FILE

# how an image's path is found again from its file name (ImageColumns.where)
NO_PATH, IN_ANN_ROOT, IN_IMAGES, BY_BASENAME, EXPLICIT = -1, 0, 1, 2, 3


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


class IdIndex:
    """id → row for int64 ids: a direct table where the ids are dense (COCO's 1..n), else a
    binary search in a sorted copy."""

    def __init__(self, ids: np.ndarray):
        self.low = int(ids.min()) if len(ids) else 0
        span = int(ids.max()) - self.low + 1 if len(ids) else 0
        if span <= 4 * len(ids) + 1024:
            self.table = np.full(span, -1, dtype=np.int64)
            self.table[ids - self.low] = np.arange(len(ids))
            self.sorted = None
        else:
            self.table = None
            self.order = np.argsort(ids, kind="stable")
            self.sorted = ids[self.order]

    def rows(self, ids) -> np.ndarray:
        """Row of each id; -1 where it is absent."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.table is not None:
            at = ids - self.low
            inside = (at >= 0) & (at < len(self.table))
            return np.where(inside, self.table[np.where(inside, at, 0)] if len(self.table) else -1, -1)
        pos = np.minimum(np.searchsorted(self.sorted, ids), len(self.sorted) - 1)
        return np.where(self.sorted[pos] == ids, self.order[pos], -1)

    def row(self, key) -> int:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            return -1
        if self.table is not None:
            at = int(key) - self.low
            return int(self.table[at]) if 0 <= at < len(self.table) else -1
        if not -2**63 <= key < 2**63:
            return -1
        return int(self.rows([key])[0])


@dataclass
class ImageColumns:
    ids: np.ndarray  # int64, catalog order
    file: pa.Array  # string
    where: np.ndarray  # int8, one of NO_PATH .. EXPLICIT
    corruption: np.ndarray  # int32 code into corruption_names; -1 none
    corruption_names: list[str]
    problems: dict[int, tuple[str, str]]  # image id → (status, reason); rare
    explicit: dict[int, Path]  # image id → path, for records given with any path
    ann_root: str = ""
    images_dir: str = ""

    def path(self, row: int) -> Path | None:
        where = int(self.where[row])
        if where == NO_PATH:
            return None
        if where == EXPLICIT:
            return self.explicit[int(self.ids[row])]
        file = self.file[row].as_py()
        if where == BY_BASENAME:
            return Path(self.images_dir) / Path(file).name
        return Path(self.ann_root if where == IN_ANN_ROOT else self.images_dir) / file

    def take(self, rows: np.ndarray) -> "ImageColumns":
        ids = self.ids[rows]
        keep = set(ids.tolist()) if len(self.problems) + len(self.explicit) else set()
        return ImageColumns(ids, self.file.take(pa.array(rows, type=pa.int64())), self.where[rows],
                            self.corruption[rows], self.corruption_names,
                            {i: p for i, p in self.problems.items() if i in keep},
                            {i: p for i, p in self.explicit.items() if i in keep}, self.ann_root, self.images_dir)


@dataclass
class FaceColumns:
    ids: np.ndarray  # int64, catalog order
    image_row: np.ndarray  # int64 row in ImageColumns
    box: np.ndarray  # float64 (n, 4): x, y, w, h as given (NaN where not four numbers)
    whole: np.ndarray  # bool: no box, the whole image is the face
    label: np.ndarray  # int8: 0 Real, 1 Fake, -1 unknown
    score: np.ndarray  # float64, NaN where has_score is False
    has_score: np.ndarray  # bool

    def take(self, rows: np.ndarray, image_row: np.ndarray) -> "FaceColumns":
        return FaceColumns(self.ids[rows], image_row, self.box[rows], self.whole[rows], self.label[rows],
                           self.score[rows], self.has_score[rows])


@dataclass
class Decided:
    """``Catalog.decided``: faces whose status is known before any file is read, and the rest."""
    face_ids: np.ndarray  # int64, catalog order
    reason: np.ndarray  # index of each face's (status, reason) in ``reasons``
    reasons: list[tuple[str, str]]
    to_read: list[int]  # ids of the images to read and decode (those with faces), catalog order


class _RecordsView(Mapping):
    """Id → record of one kind of row, built on access, in catalog order."""

    def __init__(self, catalog: "Catalog"):
        self.catalog = catalog

    def __getitem__(self, key):
        row = self._index().row(key)
        if row < 0:
            raise KeyError(key)
        return self._record(row)

    def __iter__(self):
        return _iter_ints(self._ids())

    def __len__(self) -> int:
        return len(self._ids())

    def __contains__(self, key) -> bool:
        return self._index().row(key) >= 0


class ImagesView(_RecordsView):
    """``catalog.images``: image id → ImageRecord, built on access, in catalog order. A record is
    a copy: changing it changes nothing (build a ``Catalog`` of changed records instead)."""

    def _ids(self) -> np.ndarray:
        return self.catalog.image_cols.ids

    def _index(self) -> "IdIndex":
        return self.catalog.image_index

    def _record(self, row: int) -> ImageRecord:
        cat, img = self.catalog, self.catalog.image_cols
        code = int(img.corruption[row])
        image_id = int(img.ids[row])
        return ImageRecord(image_id, img.file[row].as_py(), img.path(row),
                           img.corruption_names[code] if code >= 0 else None,
                           cat.face_ids_of(image_id).tolist(), img.problems.get(image_id))


class FacesView(_RecordsView):
    """``catalog.faces``: face id → FaceRecord, built on access, in catalog order."""

    def _ids(self) -> np.ndarray:
        return self.catalog.face_cols.ids

    def _index(self) -> "IdIndex":
        return self.catalog.face_index

    def _record(self, row: int) -> FaceRecord:
        cat, f = self.catalog, self.catalog.face_cols
        label = int(f.label[row])
        return FaceRecord(int(f.ids[row]), int(cat.image_cols.ids[f.image_row[row]]),
                          None if f.whole[row] else tuple(float(v) for v in f.box[row]),
                          label if label >= 0 else None, float(f.score[row]) if f.has_score[row] else None)


def _iter_ints(ids: np.ndarray, chunk: int = 65536):
    for start in range(0, len(ids), chunk):
        yield from ids[start:start + chunk].tolist()


class Catalog:
    """Which images to scan and which faces each holds, as columns (see the module docstring).

    ``Catalog(images, faces, ...)`` takes mappings of records, as it always has; the loaders
    build the columns directly (``Catalog.from_columns``).
    """

    def __init__(self, images: Mapping[int, ImageRecord], faces: Mapping[int, FaceRecord], annotations=None,
                 n_resolved_direct: int = 0, n_resolved_basename: int = 0, n_missing: int = 0,
                 has_labels: bool = False):
        image_cols, face_cols = columns_from_records(images, faces)
        self.set_columns(image_cols, face_cols)
        self.annotations = None if annotations is None else Path(annotations)
        self.n_resolved_direct, self.n_resolved_basename, self.n_missing = \
            n_resolved_direct, n_resolved_basename, n_missing
        self.has_labels = has_labels

    @classmethod
    def from_columns(cls, image_cols: ImageColumns, face_cols: FaceColumns, annotations=None,
                     n_resolved_direct: int = 0, n_resolved_basename: int = 0, n_missing: int = 0,
                     has_labels: bool = False) -> "Catalog":
        cat = cls.__new__(cls)
        cat.set_columns(image_cols, face_cols)
        cat.annotations = None if annotations is None else Path(annotations)
        cat.n_resolved_direct, cat.n_resolved_basename, cat.n_missing = \
            n_resolved_direct, n_resolved_basename, n_missing
        cat.has_labels = has_labels
        return cat

    def set_columns(self, image_cols: ImageColumns, face_cols: FaceColumns):
        self.image_cols, self.face_cols = image_cols, face_cols
        self.image_index, self.face_index = IdIndex(image_cols.ids), IdIndex(face_cols.ids)
        # faces grouped by image, catalog order kept within an image (CSR: by_image[start[r]:start[r+1]])
        self.by_image = np.argsort(face_cols.image_row, kind="stable")
        self.start = np.searchsorted(face_cols.image_row[self.by_image], np.arange(len(image_cols.ids) + 1))
        self.images, self.faces = ImagesView(self), FacesView(self)

    def __getstate__(self):  # the indexes are rebuilt, not sent (Ray, the decoding process)
        return (self.image_cols, self.face_cols, self.annotations, self.n_resolved_direct,
                self.n_resolved_basename, self.n_missing, self.has_labels)

    def __setstate__(self, state):
        image_cols, face_cols, self.annotations, self.n_resolved_direct, self.n_resolved_basename, \
            self.n_missing, self.has_labels = state
        self.set_columns(image_cols, face_cols)

    def summary(self) -> str:
        src = f"annotations {self.annotations}" if self.annotations else "no annotations (whole-image faces)"
        text = f"{len(self.images)} images, {len(self.faces)} faces from {src}"
        if self.annotations:
            text += (f"; files resolved: {self.n_resolved_direct} by path, "
                     f"{self.n_resolved_basename} by base name, {self.n_missing} missing")
        return text

    def subset(self, image_ids) -> "Catalog":
        """A catalog of just these images, in this order (used for sharding and resuming)."""
        rows = self.image_index.rows(np.fromiter(image_ids, dtype=np.int64))
        rows = rows[rows >= 0]
        face_rows = self.face_rows_of_images(rows)
        new_image_row = np.repeat(np.arange(len(rows)), self.start[rows + 1] - self.start[rows])
        return Catalog.from_columns(self.image_cols.take(rows), self.face_cols.take(face_rows, new_image_row),
                                    self.annotations, has_labels=self.has_labels)

    # -- the column interface of the run loop ------------------------------------------------------
    def face_rows_of_images(self, image_rows: np.ndarray) -> np.ndarray:
        """Face rows of these image rows, image after image."""
        lo, hi = self.start[image_rows], self.start[image_rows + 1]
        n = hi - lo
        if not n.sum():
            return np.zeros(0, dtype=np.int64)
        offsets = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        return self.by_image[np.arange(n.sum()) + offsets]

    def face_ids_of(self, image_id) -> np.ndarray:
        """The image's face ids (int64, catalog order); empty for an unknown id."""
        row = self.image_index.row(image_id)
        if row < 0:
            return np.zeros(0, dtype=np.int64)
        return self.face_cols.ids[self.by_image[self.start[row]:self.start[row + 1]]]

    def face_positions(self, face_ids) -> np.ndarray:
        """Catalog position of each face id (-1 where it is not in the catalog)."""
        return self.face_index.rows(face_ids)

    def images_with_faces(self, image_ids=None) -> list[int]:
        """``image_ids`` (default: all, in catalog order) that hold at least one face."""
        if image_ids is None:
            rows = np.arange(len(self.image_cols.ids))
        else:
            rows = self.image_index.rows(np.fromiter(image_ids, dtype=np.int64))
            rows = rows[rows >= 0]
        return self.image_cols.ids[rows[self.start[rows + 1] > self.start[rows]]].tolist()

    def pending_images(self, done_face_ids: np.ndarray) -> tuple[list[int], int]:
        """``(ids of the images with a face not in done_face_ids, in catalog order, how many of
        the catalog's faces are in done_face_ids)``."""
        f = self.face_cols
        done = np.isin(f.ids, done_face_ids)
        not_done_images = np.zeros(len(self.image_cols.ids), dtype=bool)
        not_done_images[f.image_row[~done]] = True
        return self.image_cols.ids[not_done_images].tolist(), int(done.sum())

    def decided(self, image_ids=None) -> "Decided":
        """Split the images to scan (default: all) into those whose faces' status is known without
        reading a file (a ``problem`` from the annotations, or no file found: ``missing_file``)
        and those to read. Columns, so that millions of missing files cost no object each."""
        img = self.image_cols
        if image_ids is None:
            rows = np.arange(len(img.ids))
        else:
            rows = self.image_index.rows(np.fromiter(image_ids, dtype=np.int64))
            rows = rows[rows >= 0]
        reasons = {(MISSING_FILE, NOT_FOUND): 0}
        code = np.where(img.where[rows] == NO_PATH, 0, -1)
        if img.problems:
            for k in np.flatnonzero(np.isin(img.ids[rows], np.fromiter(img.problems, dtype=np.int64))):
                code[k] = reasons.setdefault(img.problems[int(img.ids[rows[k]])], len(reasons))
        known = rows[code >= 0]
        face_rows = self.face_rows_of_images(known)
        face_code = np.repeat(code[code >= 0], self.start[known + 1] - self.start[known])
        order = np.argsort(face_rows, kind="stable")  # catalog order
        return Decided(self.face_cols.ids[face_rows[order]], face_code[order], list(reasons),
                       self.images_with_faces(img.ids[rows[code < 0]]))

    def face_columns(self, face_ids) -> dict[str, object]:
        """The catalog's fields of these faces as columns (``faces.parquet``'s): image_id, file,
        x, y, w, h (NaN for whole-image faces), whole, label (-1 unknown), det_score (NaN when
        none) and corruption (an Arrow array)."""
        rows = self.face_index.rows(face_ids)
        if (rows < 0).any():
            raise KeyError(int(np.asarray(face_ids)[rows < 0][0]))
        f, img = self.face_cols, self.image_cols
        image_rows = f.image_row[rows]
        take = pa.array(image_rows, type=pa.int64())
        names = pa.array(img.corruption_names + [None], type=pa.string())
        codes = img.corruption[image_rows]
        return {"image_id": img.ids[image_rows], "file": img.file.take(take),
                "box": f.box[rows], "whole": f.whole[rows], "label": f.label[rows],
                "det_score": np.where(f.has_score[rows], f.score[rows], np.nan),
                "has_score": f.has_score[rows],
                "corruption": names.take(pa.array(np.where(codes >= 0, codes, len(img.corruption_names)),
                                                  type=pa.int64()))}


def columns_from_records(images: Mapping[int, ImageRecord], faces: Mapping[int, FaceRecord]):
    """Columns of record mappings (small catalogs: explain's selection, tests)."""
    image_ids = np.array([int(i) for i in images], dtype=np.int64)
    recs = list(images.values())
    names: dict[str, int] = {}
    corruption = np.array([-1 if r.corruption is None else names.setdefault(r.corruption, len(names))
                           for r in recs], dtype=np.int32)
    image_cols = ImageColumns(image_ids, pa.array([r.file for r in recs], type=pa.string()),
                              np.array([NO_PATH if r.path is None else EXPLICIT for r in recs], dtype=np.int8),
                              corruption, list(names), {r.image_id: r.problem for r in recs if r.problem},
                              {r.image_id: Path(r.path) for r in recs if r.path is not None})
    # faces follow the mapping's order; each image's own face_ids list decides which faces it holds
    index = IdIndex(image_ids)
    owner = {f: img.image_id for img in recs for f in img.face_ids}
    face_recs = [faces[f] for f in faces if f in owner]
    face_cols = FaceColumns(
        np.array([r.face_id for r in face_recs], dtype=np.int64),
        index.rows([owner[r.face_id] for r in face_recs]).astype(np.int64),
        np.array([r.bbox if r.bbox is not None else (np.nan,) * 4 for r in face_recs], dtype=np.float64).reshape(-1, 4),
        np.array([r.bbox is None for r in face_recs], dtype=bool),
        np.array([-1 if r.label is None else r.label for r in face_recs], dtype=np.int8),
        np.array([np.nan if r.score is None else r.score for r in face_recs], dtype=np.float64),
        np.array([r.score is not None for r in face_recs], dtype=bool))
    return image_cols, face_cols

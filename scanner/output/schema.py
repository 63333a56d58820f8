"""The ``faces.parquet`` schema: one row per annotated face, errors included."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

FACES_SCHEMA = pa.schema([
    ("image_id", pa.int64()),
    ("file", pa.string()),
    ("face_id", pa.int64()),
    ("x", pa.float32()),
    ("y", pa.float32()),
    ("w", pa.float32()),
    ("h", pa.float32()),
    ("label", pa.int8()),
    ("score_fake", pa.float32()),
    ("pred", pa.int8()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("corruption", pa.string()),
    ("det_score", pa.float32()),  # the face detector's confidence; null for annotated boxes
    # video faces only (null for still images): the decoded frame's index in the clip, its
    # timestamp, and the face's track (scanner.detect.tracking) within that clip
    ("frame", pa.int64()),
    ("time_s", pa.float64()),
    ("track_id", pa.int32()),
])

VIDEO_ONLY = ("frame", "time_s", "track_id")


def rows_to_table(catalog, face_ids, results, rois, threshold: float) -> pa.Table:
    """Rows for ``face_ids``; ``results[f] = (score or None, status, error)``.

    Whole-image faces (no box in the annotations) report the image's extent as their box.
    The catalog's fields come as columns (``Catalog.face_columns``): no record per face.
    """
    face_ids = list(face_ids)
    cat = catalog.face_columns(face_ids)
    box, no_box = cat["box"].copy(), cat["whole"].copy()
    for k in np.flatnonzero(no_box):
        roi = rois.get(face_ids[k])
        if roi is not None:
            x0, y0, x1, y1 = roi
            box[k], no_box[k] = (x0, y0, x1 - x0, y1 - y0), False
    scores = [results[f][0] for f in face_ids]
    cols = {
        "image_id": pa.array(cat["image_id"], type=pa.int64()),
        "file": cat["file"],
        "face_id": pa.array(face_ids, type=pa.int64()),
        **{name: pa.array(box[:, k].astype(np.float32), mask=no_box) for k, name in enumerate("xywh")},
        "label": pa.array(cat["label"], mask=cat["label"] < 0),
        "score_fake": pa.array(scores, type=pa.float32()),
        "pred": pa.array([None if s is None else int(s >= threshold) for s in scores], type=pa.int8()),
        "status": pa.array([results[f][1] for f in face_ids], type=pa.string()),
        "error": pa.array([results[f][2] for f in face_ids], type=pa.string()),
        "corruption": cat["corruption"],
        "det_score": pa.array(cat["det_score"].astype(np.float32), mask=~cat["has_score"]),
    }
    for name in VIDEO_ONLY:  # frame, time_s, track_id: null for still images
        cols[name] = pa.nulls(len(face_ids), FACES_SCHEMA.field(name).type)
    return pa.table(cols, schema=FACES_SCHEMA)

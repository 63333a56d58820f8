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

    Whole-image faces (no box in the annotations) report the image's extent as their box
    (``rois[f]``, the region the pipeline cropped).
    """
    face_ids = list(face_ids)
    scores = pa.array([results[f][0] for f in face_ids], type=pa.float32())
    return columns_to_table(catalog, face_ids, scores, pa.array([results[f][1] for f in face_ids], type=pa.string()),
                            pa.array([results[f][2] for f in face_ids], type=pa.string()), threshold, rois)


def columns_to_table(catalog, face_ids, scores: pa.Array, status: pa.Array, error: pa.Array, threshold: float,
                     rois=None) -> pa.Table:
    """Rows for ``face_ids`` from their result columns (``scores`` null where not scored). The
    catalog's fields come as columns (``Catalog.face_columns``): no object per face."""
    cat = catalog.face_columns(face_ids)
    box, no_box = cat["box"], cat["whole"]
    if rois and no_box.any():
        box, no_box = box.copy(), no_box.copy()
        for k in np.flatnonzero(no_box):
            roi = rois.get(int(face_ids[k]))
            if roi is not None:
                x0, y0, x1, y1 = roi
                box[k], no_box[k] = (x0, y0, x1 - x0, y1 - y0), False
    values = scores.to_numpy(zero_copy_only=False)
    scored = ~np.isnan(values)
    pred = np.zeros(len(values), dtype=np.int8)
    if scored.any():  # (rows without a score need no threshold: a Ray crash row is made before one is known)
        pred[scored] = values[scored] >= threshold
    pred = pa.array(pred, mask=~scored)
    n = len(face_ids)
    cols = {
        "image_id": pa.array(cat["image_id"], type=pa.int64()),
        "file": cat["file"],
        "face_id": pa.array(face_ids, type=pa.int64()),
        **{name: pa.array(box[:, k].astype(np.float32), mask=no_box) for k, name in enumerate("xywh")},
        "label": pa.array(cat["label"], mask=cat["label"] < 0),
        "score_fake": scores,
        "pred": pred,
        "status": status,
        "error": error,
        "corruption": cat["corruption"],
        "det_score": pa.array(cat["det_score"].astype(np.float32), mask=~cat["has_score"]),
    }
    for name in VIDEO_ONLY:  # frame, time_s, track_id: null for still images
        cols[name] = pa.nulls(n, FACES_SCHEMA.field(name).type)
    return pa.table(cols, schema=FACES_SCHEMA)

"""The ``faces.parquet`` schema: one row per annotated face, errors included."""
from __future__ import annotations

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
    """
    cols = {name: [] for name in FACES_SCHEMA.names}
    for f in face_ids:
        face = catalog.faces[f]
        image = catalog.images[face.image_id]
        score, status, error = results[f]
        box = face.bbox
        if box is None and f in rois:
            x0, y0, x1, y1 = rois[f]
            box = (x0, y0, x1 - x0, y1 - y0)
        for name, v in zip("xywh", box or (None,) * 4):
            cols[name].append(v)
        cols["image_id"].append(face.image_id)
        cols["file"].append(image.file)
        cols["face_id"].append(f)
        cols["label"].append(face.label)
        cols["score_fake"].append(score)
        cols["pred"].append(None if score is None else int(score >= threshold))
        cols["status"].append(status)
        cols["error"].append(error)
        cols["corruption"].append(image.corruption)
        cols["det_score"].append(face.score)
    for name in VIDEO_ONLY:
        cols[name] = [None] * len(cols["face_id"])
    return pa.table(cols, schema=FACES_SCHEMA)

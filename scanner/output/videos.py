"""Video rows: faces of sampled frames into ``faces.parquet``, one row per clip in ``videos.parquet``.

Per-video verdict (``score_fake``): the highest track score, a track's score being the mean of its
faces' scores, over tracks with at least ``MIN_TRACK_FACES`` faces (all tracks where none has).
Why: a fake clip usually swaps one face among real ones, so averaging over all faces dilutes it,
while one face's score alone is noisy; the track mean smooths a person's frames and the maximum
keeps the one swapped person. Tracks of one face are mostly detector false positives (measured
on the 17 clips of ../shared/data/videos: see benchmarks/results/videos-aggregate-*.md).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa

from scanner.output.schema import FACES_SCHEMA
from scanner.status import NO_FACE, OK

MIN_TRACK_FACES = 2

VIDEOS_SCHEMA = pa.schema([
    ("file", pa.string()),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("frames_sampled", pa.int64()),
    ("faces", pa.int64()),
    ("tracks", pa.int64()),
    ("score_fake", pa.float32()),
    ("pred", pa.int8()),
    ("label", pa.int8()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("width", pa.int64()),  # upright, as shown
    ("height", pa.int64()),
    ("codec", pa.string()),
    ("rotation_deg", pa.int32()),  # counter-clockwise turn applied from the display matrix
    ("vfr", pa.bool_()),  # variable frame rate: sampled by timestamp
    ("seconds", pa.float64()),  # wall time of the clip's scan (decode, detect, crop, infer)
])


def track_scores(track_ids, scores) -> dict[int, tuple[float, int]]:
    """``{track: (mean score, faces)}`` over the faces with a score."""
    by_track: dict[int, list[float]] = defaultdict(list)
    for t, s in zip(track_ids, scores):
        if t is not None and s is not None:
            by_track[t].append(float(s))
    return {t: (float(np.mean(v)), len(v)) for t, v in by_track.items()}


def video_score(track_ids, scores, min_faces: int = MIN_TRACK_FACES) -> float | None:
    """The clip's verdict score (see the module docstring); None without a scored face."""
    tracks = track_scores(track_ids, scores)
    if not tracks:
        return None
    kept = [m for m, n in tracks.values() if n >= min_faces] or [m for m, _ in tracks.values()]
    return max(kept)


def face_rows(video, faces: list[dict], threshold: float) -> pa.Table:
    """``faces.parquet`` rows of one clip. Each dict holds ``n`` (its number in the clip), ``box``
    (x, y, w, h or None), ``score``, ``status``, ``error``, ``det_score``, ``frame``, ``time_s``,
    ``track_id``."""
    cols = {name: [] for name in FACES_SCHEMA.names}
    for face in faces:
        box = face.get("box") or (None,) * 4
        score = face.get("score")
        for name, v in zip("xywh", box):
            cols[name].append(None if v is None else float(v))
        cols["image_id"].append(video.image_id)
        cols["file"].append(video.file)
        cols["face_id"].append(video.face_id(face["n"]))
        cols["label"].append(video.label)
        cols["score_fake"].append(score)
        cols["pred"].append(None if score is None else int(score >= threshold))
        cols["status"].append(face.get("status", OK))
        cols["error"].append(face.get("error"))
        cols["corruption"].append(None)
        cols["det_score"].append(face.get("det_score"))
        for name in ("frame", "time_s", "track_id"):
            cols[name].append(face.get(name))
    return pa.table(cols, schema=FACES_SCHEMA)


def video_row(video, info: dict, faces: pa.Table, threshold: float) -> dict:
    """One ``videos.parquet`` row from the clip's face rows and what decoding found (``info``:
    duration_s, fps, frames_sampled, width, height, codec, rotation_deg, vfr, status, error)."""
    d = faces.select(["status", "score_fake", "track_id"]).to_pydict()
    ok = [i for i, s in enumerate(d["status"]) if s == OK]
    score = video_score([d["track_id"][i] for i in ok], [d["score_fake"][i] for i in ok])
    status, error = info.get("status") or OK, info.get("error")
    if status == OK and not ok:
        status = NO_FACE
        error = error or f"no face found on {info.get('frames_sampled', 0)} sampled frames"
    return {"file": video.file, "duration_s": info.get("duration_s"), "fps": info.get("fps"),
            "frames_sampled": info.get("frames_sampled", 0), "faces": len(ok),
            "tracks": len({d["track_id"][i] for i in ok if d["track_id"][i] is not None}),
            "score_fake": score, "pred": None if score is None else int(score >= threshold),
            "label": video.label, "status": status, "error": error, "width": info.get("width"),
            "height": info.get("height"), "codec": info.get("codec"), "rotation_deg": info.get("rotation_deg"),
            "vfr": info.get("vfr")}


def failed_clip(video, status: str, why: str, threshold: float) -> tuple[pa.Table, dict]:
    """The one face row and the ``videos.parquet`` row of a clip whose scan never finished (its
    worker or decoding process died each time)."""
    table = face_rows(video, [{"n": 0, "status": status, "error": why}], threshold)
    return table, video_row(video, {"status": status, "error": why}, table, threshold)


def videos_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)


def video_metrics_table(videos: pa.Table, threshold: float, origin: str = "default") -> pa.Table | None:
    """metrics.parquet's columns over clips with a label and a score (subset ``videos``), or None."""
    from scanner.output.metrics import METRICS_SCHEMA, binary_metrics

    d = videos.select(["label", "score_fake"]).to_pydict()
    keep = [(lab, s) for lab, s in zip(d["label"], d["score_fake"]) if lab is not None and s is not None
            and not math.isnan(s)]
    if not keep:
        return None
    labels, scores = zip(*keep)
    row = {**binary_metrics(labels, scores, threshold, subset="videos"), "threshold_origin": origin}
    return pa.Table.from_pylist([row], schema=METRICS_SCHEMA)

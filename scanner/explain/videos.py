"""Video faces for ``dfscan explain``: each chosen face's frame is decoded again and cropped by the
scan's own frame graph, so the map is of the crop the scan scored."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator

from scanner.pipeline.frames import frames_at, open_video
from scanner.pipeline.geometry import face_roi
from scanner.status import FaceError


def video_crops(rows: list[dict], folder, config, settings, log=print) -> Iterator[tuple[list[int], object]]:
    """``(face ids, crops)`` for the video faces in ``rows`` (faces.parquet rows with ``frame``),
    clip by clip from ``folder``; faces that cannot be re-made are logged and left out."""
    from scanner.pipeline.graphs import build_frames_pipeline, run_frames_batch

    by_file: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_file[r["file"]][r["frame"]].append(r)
    pipe = build_frames_pipeline(config, settings.batch_size, settings.device, settings.num_threads)
    try:
        for file, by_frame in by_file.items():
            container = None
            try:
                container, stream = open_video(Path(folder) / file)
                for frame in frames_at(container, stream, by_frame):
                    h, w = frame.rgb.shape[:2]
                    faces = by_frame.pop(frame.index)
                    for start in range(0, len(faces), settings.batch_size):
                        part = faces[start:start + settings.batch_size]
                        rois = [face_roi((r["x"], r["y"], r["w"], r["h"]), w, h, config.crop_margin) for r in part]
                        crops = run_frames_batch(pipe, [frame.rgb] + [None] * (len(part) - 1), [0] * len(part), rois)
                        yield [r["face_id"] for r in part], crops
            except FaceError as exc:
                log(f"{file}: its faces are not explained: {exc.code}: {exc}")
            finally:
                if container is not None:
                    container.close()
            for index in by_frame:
                log(f"{file}: frame {index} was not found again; its faces are not explained")
    finally:
        pipe._shutdown()  # see scanner.pipeline.cropper.Cropper.discard

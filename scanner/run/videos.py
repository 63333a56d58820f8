"""Scanning video files: sampled frames → detector → tracker → the DALI crop graph → engine.

Each clip is scanned whole and saved whole: its rows go into one part, published before the
clip's summary (``parts/video-NNNNNN.json``), so ``--resume`` redoes exactly the clips without a
summary. Frames are streamed (``scanner.pipeline.frames``) and handled ``chunk_frames`` at a
time, so memory does not grow with a clip's length.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from engines.files import write_atomic
from scanner.detect.detect import enlarge
from scanner.detect.tracking import IouTracker
from scanner.errors import DfscanError
from scanner.output.parts import PARTS
from scanner.output.videos import face_rows, video_row
from scanner.pipeline.frames import DEFAULT_FRAMES_PER_VIDEO, sample_times
from scanner.pipeline.video_decoders import open_frame_source
from scanner.pipeline.geometry import face_roi
from scanner.run.scan import softmax_fake
from scanner.status import DECODE_ERROR, NO_FACE, OK, FaceError


@dataclass
class VideoSettings:
    frames_per_video: int | None = DEFAULT_FRAMES_PER_VIDEO  # evenly spaced; ignored with fps
    fps: float | None = None  # sampled frames per second of video, instead of a fixed count
    chunk_frames: int = 8  # sampled frames detected and cropped together (bounds memory)
    min_iou: float = 0.3  # tracker (scanner.detect.tracking)
    max_gap: int = 2
    labels: str | None = None  # the --labels CSV, recorded in the manifest
    only: frozenset | None = None  # scan just these clips (files relative to the folder): eval --held-out
    box_cache: bool = False  # keep detected boxes per clip (scanner.detect.cache): train and eval
    decoder: str = "auto"  # scanner.pipeline.video_decoders; run_job records the one it resolved to

    def sampling(self) -> dict:
        return {"frames_per_video": None if self.fps else self.frames_per_video, "sample_fps": self.fps}

    def meta(self) -> dict:
        return {**self.sampling(), "track_min_iou": self.min_iou, "track_max_gap": self.max_gap, "labels": self.labels,
                "video_decoder": self.decoder}


class VideoScanner:
    """One clip at a time: ``scan(video) → (faces table, videos.parquet row)``; never raises for
    a bad file (its status says why).

    Without an engine (``engine=None``, ``config`` given) faces are cropped but not scored:
    ``on_crops(faces, crops)`` hears each batch of face dicts and their normalised crops, which is
    how ``dfscan train`` gets video faces through this same path."""

    def __init__(self, engine, settings, detect, vs: VideoSettings, *, config=None, on_crops=None, log=print):
        self.engine, self.settings, self.detect, self.vs = engine, settings, detect, vs
        self.config = config if config is not None else engine.config
        self.on_crops = on_crops
        self.detector = self.pipe = self.source = None
        self.cache = self.known = self.found = None
        if detect is not None and vs.box_cache:
            from scanner.detect.cache import BoxCache

            self.cache = BoxCache(detect.meta(), detect.device, settings.cache_dir, log)

    def close(self):
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            pipe._shutdown()  # see scanner.pipeline.cropper.Cropper.discard
        source, self.source = self.source, None
        if source is not None:
            source.close()

    def scan(self, video):
        faces: list[dict] = []
        info = {"status": OK, "error": None, "frames_sampled": 0}
        tracker = IouTracker(self.vs.min_iou, self.vs.max_gap)
        chunk, clip, vi = [], None, None
        handle = None
        if self.cache is not None:
            self.known, handle = self.cache.get(video.path, self.vs.sampling())
            self.found = {}
        try:
            if self.source is None:
                self.source = open_frame_source(self.vs.decoder, self.settings.device, self.settings.num_threads)
            clip = self.source.open(video.path)
            vi = clip.info
            info.update(duration_s=vi.duration_s, fps=vi.fps, codec=vi.codec, width=vi.width, height=vi.height)
            targets = sample_times(vi, self.vs.frames_per_video, self.vs.fps)
            for frame in clip.frames(targets):
                info["frames_sampled"] += 1
                info.update(rotation_deg=frame.rotation, height=frame.rgb.shape[0], width=frame.rgb.shape[1])
                chunk.append(frame)
                if len(chunk) >= self.vs.chunk_frames:
                    faces += self._faces(chunk, tracker, len(faces))
                    chunk = []
        except FaceError as exc:
            info.update(status=exc.code, error=str(exc))
        finally:
            if clip is not None:
                clip.close()
            if vi is not None:
                info["vfr"] = vi.vfr
        if chunk:  # frames sampled before a decoding error still count
            faces += self._faces(chunk, tracker, len(faces))
        if handle is not None and self.known is None and info["status"] == OK:
            self.cache.put(handle, self.found)
        if not faces:  # the clip keeps one row that says why it has no face
            status, error = info["status"], info["error"]
            if status == OK:
                status, error = NO_FACE, f"no face found on {info['frames_sampled']} sampled frames"
            faces = [{"n": 0, "status": status, "error": error}]
        threshold = self.settings.threshold_for(self.config)[0]  # (bench passes settings unresolved)
        table = face_rows(video, faces, threshold)
        return table, video_row(video, info, table, threshold)

    # -- one chunk of sampled frames -------------------------------------------------------------
    def _boxes(self, frames) -> list[np.ndarray]:
        """Per frame, (n, 5) ``x, y, w, h, det_score`` in full-resolution pixels, best first."""
        if self.detect is None:  # --detector none: the whole frame is the face
            return [np.array([[0, 0, f.rgb.shape[1], f.rgb.shape[0], np.nan]], np.float32) for f in frames]
        if self.known is not None and all(f.index in self.known for f in frames):
            return [self.known[f.index] for f in frames]
        out = self._detect(frames)
        if self.found is not None:
            self.found.update((f.index, b) for f, b in zip(frames, out))
        return out

    def _detect(self, frames) -> list[np.ndarray]:
        import cv2

        from scanner.pipeline.graphs import detection_size

        if self.detector is None:  # built on first use: a clip whose boxes are cached needs none
            from scanner.detect.detectors import create_detector

            d = self.detect
            self.detector = create_detector(d.detector, d.device, d.min_face, d.min_score)
        small = []
        for f in frames:
            h, w = f.rgb.shape[:2]
            sh, sw = detection_size(w, h, self.detect.max_side)
            small.append(f.rgb if (sh, sw) == (h, w) else cv2.resize(f.rgb, (sw, sh), interpolation=cv2.INTER_AREA))
        out = []
        for f, s, boxes in zip(frames, small, self.detector.detect(small)):
            h, w = f.rgb.shape[:2]
            boxes = boxes.copy()
            boxes[:, [0, 2]] *= w / s.shape[1]
            boxes[:, [1, 3]] *= h / s.shape[0]
            boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
            out.append(enlarge(boxes, self.detect.margin, w, h))
        return out

    def _faces(self, frames, tracker: IouTracker, n0: int) -> list[dict]:
        faces, todo = [], []  # todo: (face dict, frame number in chunk, roi)
        margin = self.config.crop_margin
        for k, (frame, boxes) in enumerate(zip(frames, self._boxes(frames))):
            h, w = frame.rgb.shape[:2]
            for box, track in zip(boxes, tracker.update(boxes)):
                det = None if np.isnan(box[4]) else float(box[4])
                face = {"n": n0 + len(faces), "box": tuple(float(v) for v in box[:4]), "det_score": det,
                        "frame": frame.index, "time_s": frame.time_s, "track_id": int(track), "status": OK}
                faces.append(face)
                try:
                    todo.append((face, k, face_roi(face["box"], w, h, margin)))
                except FaceError as exc:
                    face.update(status=exc.code, error=str(exc))
        self._score(frames, todo)
        return faces

    def _score(self, frames, todo):
        from scanner.pipeline.cropper import dali_reason
        from scanner.pipeline.graphs import run_frames_batch

        size = self.settings.batch_size
        for start in range(0, len(todo), size):
            part = todo[start:start + size]
            owner: dict[int, int] = {}  # frame number in chunk → its owner slot in this batch
            slots, source = [], []
            for slot, (_, k, _) in enumerate(part):
                first = k not in owner
                owner.setdefault(k, slot)
                slots.append(frames[k].rgb if first else None)
                source.append(owner[k])
            try:
                crops = run_frames_batch(self._pipe(), slots, source, [roi for _, _, roi in part])
            except RuntimeError as exc:  # DALI refused the batch: its faces say why, the clip goes on
                self.close()
                for face, _, _ in part:
                    face.update(status=DECODE_ERROR, error=dali_reason(exc))
                continue
            if self.on_crops is not None:
                self.on_crops([face for face, _, _ in part], crops)
            if self.engine is None:
                continue
            for (face, _, _), score in zip(part, softmax_fake(self.engine.infer(crops))):
                face["score"] = float(score)

    def _pipe(self):
        from scanner.pipeline.graphs import build_frames_pipeline

        if self.pipe is None:
            self.pipe = build_frames_pipeline(self.config, self.settings.batch_size, self.settings.device,
                                              self.settings.num_threads)
        return self.pipe


def _summary_path(out_dir, video):
    return out_dir / PARTS / f"video-{video.index:06d}.json"


def saved_videos(videos, output) -> dict[int, dict]:
    """``{video index: its videos.parquet row}`` for the clips ``output`` already holds whole."""
    rows = {}
    for video in videos:
        path = _summary_path(output.dir, video)
        if path.is_file():
            rows[video.index] = json.loads(path.read_text())
    return rows


def local_clips(engine, settings, detect, vs: VideoSettings, log=print):
    """``clip_scans(videos)`` for this process: yields ``(video, faces table, videos.parquet row)``
    clip by clip, the row with the clip's wall time in ``seconds``."""
    def clip_scans(videos):
        scanner = VideoScanner(engine, settings, detect, vs, log=log)
        try:
            for video in videos:
                start = time.perf_counter()
                table, row = scanner.scan(video)
                row["seconds"] = round(time.perf_counter() - start, 3)
                yield video, table, row
        finally:
            scanner.close()

    return clip_scans


def scan_videos(videos, vs: VideoSettings, output, clip_scans, progress=True, log=print):
    """Scan each clip not yet saved in ``output`` (a RunOutput) with ``clip_scans`` (``local_clips``,
    or Ray workers': ``scanner.run.distributed``), saving each as it comes back, in any order;
    returns every clip's ``videos.parquet`` row in file order (saved ones read back) and the number
    of face rows this call wrote. Raises DfscanError when a resumed run's video settings differ."""
    before = output.manifest.get("settings", {})
    changed = [k for k, v in vs.meta().items() if k in before and before[k] != v]
    if changed:
        raise DfscanError(f"{output.dir}: the earlier run sampled videos with other settings "
                          f"({', '.join(changed)}); rerun it as it was, or --overwrite")
    rows, written = saved_videos(videos, output), 0
    todo = [v for v in videos if v.index not in rows]
    if rows:
        log(f"resuming: {len(rows)} videos already saved, {len(todo)} left")
    from tqdm import tqdm

    bar = tqdm(total=len(videos), initial=len(rows), unit="video", disable=not progress, desc="videos",
               dynamic_ncols=True)
    try:
        for video, table, row in (clip_scans(todo) if todo else ()):
            output.add(table)
            written += table.num_rows
            output.flush()  # the clip's rows are published before its summary: done or redone whole
            write_atomic(_summary_path(output.dir, video), json.dumps(row))
            rows[video.index] = row
            bar.set_postfix(faces=row["faces"], status=row["status"])
            bar.update(1)
    finally:
        bar.close()
    return [rows[v.index] for v in videos], written

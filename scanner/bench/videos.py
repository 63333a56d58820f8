"""``dfscan bench --videos DIR``: what scanning clips costs, against decoding them alone and
against the same sampled frames saved as JPEG files and scanned as images.

Three timed passes over every clip below DIR, in one process, one engine, one detector:

- ``decode``: open, decode every frame up to the last sampled one, convert the sampled ones to
  RGB, with the run's ``--video-decoder`` (``scanner.pipeline.video_decoders``) — the ceiling of
  the video path on this machine;
- ``video``: the scan as ``dfscan run`` does it (decode, detect, track, DALI crop, engine);
- ``jpeg``: the sampled frames written as JPEG (quality 95) beforehand, untimed, then scanned as a
  plain image folder by ``dfscan run`` (detection included) — the target compares faces/s of
  ``video`` with this one (the issue's goal: at least 0.8x).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from engines.files import versions, write_table
from scanner.catalog.videos import find_videos
from scanner.errors import DfscanError
from scanner.pipeline.frames import sample_times
from scanner.pipeline.video_decoders import open_frame_source, resolve_video_decoder
from scanner.status import FaceError

BENCH_VIDEOS_SCHEMA = pa.schema([
    ("pass", pa.string()), ("clips", pa.int64()), ("frames_decoded", pa.int64()), ("frames_sampled", pa.int64()),
    ("faces", pa.int64()), ("seconds", pa.float64()), ("decoded_frames_per_s", pa.float64()),
    ("sampled_frames_per_s", pa.float64()), ("faces_per_s", pa.float64()),
])


def _decode_pass(videos, vs, source, on_frame=None) -> dict:
    """Decode and sample every clip with ``source`` (a frame source); frames decoded = up to the
    last sampled one of each clip."""
    decoded = sampled = 0
    start = time.perf_counter()
    for video in videos:
        try:
            clip = source.open(video.path)
        except FaceError:
            continue
        last = -1
        try:
            for frame in clip.frames(sample_times(clip.info, vs.frames_per_video, vs.fps)):
                sampled, last = sampled + 1, frame.index
                if on_frame is not None:
                    on_frame(video, frame)
        except FaceError:
            pass
        finally:
            clip.close()
        decoded += last + 1
    return {"frames_decoded": decoded, "frames_sampled": sampled, "seconds": time.perf_counter() - start}


def _row(name, clips, frames_decoded, frames_sampled, faces, seconds) -> dict:
    rate = lambda n: n / seconds if seconds > 0 and n is not None else None  # noqa: E731
    return {"pass": name, "clips": clips, "frames_decoded": frames_decoded, "frames_sampled": frames_sampled,
            "faces": faces, "seconds": seconds, "decoded_frames_per_s": rate(frames_decoded),
            "sampled_frames_per_s": rate(frames_sampled), "faces_per_s": rate(faces)}


def bench_videos(folder, out_dir, engine_path, settings, detect, vs, progress: bool = True, log=print) -> pa.Table:
    """Time the three passes (module docstring) over the clips below ``folder``; writes
    ``out_dir/bench_videos.parquet`` and returns its table. Raises DfscanError without clips."""
    from PIL import Image

    from scanner.bench.probe import machine_info
    from scanner.run.engine import budget_threads, open_engine
    from scanner.run.job import run_job
    from scanner.run.videos import VideoScanner

    videos = find_videos(folder)
    if not videos:
        raise DfscanError(f"{folder}: no video files (.mp4 .mov .mkv .webm .avi .m4v) below it")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine, engine_path, _ = open_engine(engine_path, settings, log)
    settings.num_threads = budget_threads(settings)[0]
    settings = settings.fitted(engine.config.input_size, log)
    detect.device = settings.device
    vs = replace(vs, decoder=resolve_video_decoder(vs.decoder, settings.device))
    source = open_frame_source(vs.decoder, settings.device, settings.num_threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dfscan-bench-videos-") as tmp:
        jpegs = Path(tmp) / "frames"
        jpegs.mkdir()

        def save(video, frame):
            name = f"{video.index:04d}_{frame.index:06d}.jpg"
            Image.fromarray(frame.rgb).save(jpegs / name, quality=95)

        _decode_pass(videos[:1], vs, source)  # warm-up: libraries, file cache, DALI's pipeline
        d = _decode_pass(videos, vs, source)
        rows.append(_row("decode", len(videos), d["frames_decoded"], d["frames_sampled"], None, d["seconds"]))
        log(f"decode only ({vs.decoder}): {d['frames_decoded']} frames ({d['frames_sampled']} sampled) "
            f"in {d['seconds']:.1f} s")
        _decode_pass(videos, vs, source, on_frame=save)  # untimed: the JPEG pass's input
        source.close()
        scanner = VideoScanner(engine, settings, detect, vs)
        try:
            scanner.scan(videos[0])  # warm-up: DALI pipeline, detector
            start, faces, sampled = time.perf_counter(), 0, 0
            for video in videos:
                _, row = scanner.scan(video)
                faces, sampled = faces + row["faces"], sampled + row["frames_sampled"]
            seconds = time.perf_counter() - start
        finally:
            scanner.close()
        rows.append(_row("video", len(videos), d["frames_decoded"], sampled, faces, seconds))
        log(f"video scan: {faces} faces on {sampled} sampled frames in {seconds:.1f} s")
        from scanner.run.videos import VideoSettings

        start = time.perf_counter()
        summary = run_job(jpegs, Path(tmp) / "out", engine_path, settings=settings, progress=progress,
                          log=lambda m: None, detect=detect, videos=VideoSettings(frames_per_video=0))
        seconds = time.perf_counter() - start
        ok = summary.faces_ok
        rows.append(_row("jpeg", len(videos), None, summary.images, ok, seconds))
        log(f"same frames as JPEG: {ok} faces on {summary.images} images in {seconds:.1f} s "
            "(engine opened again: its load is in this figure)")
    meta = {"videos": str(Path(folder).resolve()), "engine": str(engine_path), "backend": engine.name,
            "frames_per_video": vs.frames_per_video, "sample_fps": vs.fps, "video_decoder": vs.decoder,
            "detector": detect.detector,
            "det_max_side": detect.max_side, "batch_size": settings.batch_size,
            "loadavg": list(os.getloadavg()), "machine": machine_info(settings.device), "versions": versions()}
    table = pa.Table.from_pylist(rows, schema=BENCH_VIDEOS_SCHEMA)
    write_table(out_dir / "bench_videos.parquet", table, meta)
    return table


def summary_lines(table: pa.Table) -> list[str]:
    rows = {r["pass"]: r for r in table.to_pylist()}
    lines = [f"{r['pass']:>6}: {r['seconds']:.1f} s, {_f(r['decoded_frames_per_s'])} decoded frames/s, "
             f"{_f(r['sampled_frames_per_s'])} sampled frames/s, {_f(r['faces_per_s'])} faces/s"
             for r in rows.values()]
    if rows.get("video", {}).get("faces_per_s") and rows.get("jpeg", {}).get("faces_per_s"):
        lines.append(f"video / jpeg faces/s: {rows['video']['faces_per_s'] / rows['jpeg']['faces_per_s']:.2f}x")
    return lines


def _f(v) -> str:
    return "-" if v is None else f"{v:.1f}"

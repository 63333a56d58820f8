"""Decode-only speed of each ``--video-decoder`` on the clips of a folder: the sampled frames
(``--frames-per-video``, as ``dfscan run`` picks them) of every clip, ``--repeats`` times after a
warm-up, median. ``dfscan bench --videos`` times one decode pass among its three; this isolates
decoding and repeats it, since a pass over short clips takes about a second.

    nice -n 5 python benchmarks/video_decoders.py DIR --decoders pyav,dali --device cpu
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from scanner.catalog.videos import find_videos
from scanner.pipeline.frames import sample_times
from scanner.pipeline.video_decoders import open_frame_source


def decode_all(source, paths, frames_per_video: int) -> tuple[int, int]:
    """(sampled frames, clip frames up to the last sampled one) of ``paths``."""
    sampled = covered = 0
    for path in paths:
        clip = source.open(path)
        try:
            for frame in clip.frames(sample_times(clip.info, frames_per_video, None)):
                sampled, last = sampled + 1, frame.index
            covered += last + 1
        finally:
            clip.close()
    return sampled, covered


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--decoders", default="pyav,dali")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--frames-per-video", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    paths = [v.path for v in find_videos(args.folder)]
    for name in args.decoders.split(","):
        source = open_frame_source(name, args.device, os.cpu_count())
        decode_all(source, paths, args.frames_per_video)  # warm-up: DALI's pipeline, file cache
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            sampled, covered = decode_all(source, paths, args.frames_per_video)
            times.append(time.perf_counter() - start)
        source.close()
        s = statistics.median(times)
        print(f"{name} ({args.device}): {len(paths)} clips, {sampled} sampled frames, median {s:.3f} s of "
              f"{args.repeats}: {sampled / s:.1f} sampled frames/s, {covered / s:.1f} clip frames/s; "
              f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

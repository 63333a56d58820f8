"""Face crops from the labelled clips in ../shared/data/videos, for multi-source training.

Research script (the clips are FF++/DFDC research-only data: never copy them or their crops
into the package). For each clip in labels.csv it decodes ~N evenly spaced frames with PyAV,
finds faces with dfscan's MTCNN (``scanner.detect``) on a copy shrunk to 640 px, keeps the
largest face per frame, enlarges its box by the models' crop margin (1.3x about its centre,
clipped to the frame) and writes the crop as PNG to OUT/real/ or OUT/fake/.

File names are ``<group>__<clip>__f<frame>.png``: ``dfscan train`` splits folder sources by
the prefix before the first ``__``, so no clip lands on both sides of train/validation. Clips
that show the same footage share a group: GHOST's two swaps and their source clip
(``ghost``), and FF++ original 519 and the Deepfakes fake made on it (``ffpp519``).

Usage: python benchmarks/training/video_faces.py --out /tmp/video-faces [--frames 24]
Because the whole crop is the face box with its margin, a folder source needs no annotations:
the scan's whole-image catalog crops it exactly as ``dfscan run`` crops the box in a frame.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

VIDEOS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "videos"
MARGIN = 1.3  # engines' ModelConfig.crop_margin for every bundled config
DETECT_SIDE = 640  # as DetectSettings.max_side


def group_of(stem: str) -> str:
    if stem.startswith("ghost_"):
        return "ghost"
    if "519" in stem and "ffpp" in stem:
        return "ffpp519"
    return stem.replace("__", "_")


def sample_frames(path: Path, n: int):
    """Yield ``(index, RGB uint8 frame)`` for ~n evenly spaced frames of the clip."""
    import av

    with av.open(str(path)) as box:
        frames = [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]
    picks = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    for i in picks:
        yield int(i), frames[i]


def largest_face(detector, frame: np.ndarray):
    from PIL import Image

    h, w = frame.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = frame if scale == 1.0 else np.asarray(
        Image.fromarray(frame).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
    boxes = detector.detect([small])[0]
    if not len(boxes):
        return None
    boxes = boxes.copy()
    boxes[:, :4] /= scale
    return boxes[np.argmax(boxes[:, 2] * boxes[:, 3])]


def main():
    from PIL import Image
    from tqdm import tqdm

    from scanner.detect.detect import enlarge
    from scanner.detect.detectors import create_detector

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=VIDEOS)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=24)
    args = ap.parse_args()
    detector = create_detector("mtcnn")
    with open(args.videos / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in tqdm(rows, desc="clips", unit="clip"):
        clip = args.videos / row["file"]
        folder = args.out / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        stem = clip.stem.replace("__", "_")
        kept = 0
        for index, frame in sample_frames(clip, args.frames):
            box = largest_face(detector, frame)
            if box is None:
                continue
            h, w = frame.shape[:2]
            x, y, bw, bh = enlarge(box[None, :4], MARGIN, w, h)[0]
            x0, y0 = int(round(x)), int(round(y))
            crop = frame[y0:y0 + max(1, int(round(bh))), x0:x0 + max(1, int(round(bw)))]
            Image.fromarray(crop).save(folder / f"{group_of(stem)}__{stem}__f{index:04d}.png")
            kept += 1
        tqdm.write(f"{row['file']}: {kept} face crops ({row['label']}, {row['kind']})")


if __name__ == "__main__":
    main()

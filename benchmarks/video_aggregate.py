"""Which per-video score separates real from fake clips best: candidates compared on a run's
``faces.parquet`` (``dfscan run CLIPS --labels CSV --out RUN``).

    python benchmarks/video_aggregate.py RUN [--threshold 0.5]

Prints, per candidate, ROC-AUC and accuracy over the labelled clips with a face, as markdown.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq

from scanner.output.metrics import binary_metrics
from scanner.output.videos import track_scores, video_score


def candidates(tracks, scores) -> dict:
    per_track = track_scores(tracks, scores)
    return {
        "mean of faces": float(np.mean(scores)),
        "median of faces": float(np.median(scores)),
        "max of faces": float(np.max(scores)),
        "max track mean (tracks >= 2 faces; the default)": video_score(tracks, scores),
        "max track mean (all tracks)": video_score(tracks, scores, min_faces=1),
        "mean of track means": float(np.mean([m for m, _ in per_track.values()])),
        "longest track's mean": max(per_track.values(), key=lambda v: v[1])[0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    faces = pq.read_table(f"{args.run}/faces.parquet").to_pylist()
    by_clip = defaultdict(list)
    for r in faces:
        if r["track_id"] is not None and r["status"] == "ok" and r["label"] is not None:
            by_clip[r["file"]].append(r)
    table = defaultdict(lambda: ([], []))
    for rows in by_clip.values():
        for name, score in candidates([r["track_id"] for r in rows], [r["score_fake"] for r in rows]).items():
            table[name][0].append(rows[0]["label"])
            table[name][1].append(score)
    print(f"| aggregate ({len(by_clip)} clips) | ROC-AUC | accuracy @ {args.threshold} |\n|---|---|---|")
    for name, (labels, scores) in table.items():
        m = binary_metrics(labels, scores, args.threshold)
        print(f"| {name} | {m['roc_auc']:.3f} | {m['accuracy']:.3f} |")


if __name__ == "__main__":
    main()

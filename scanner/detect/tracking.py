"""Following faces across a clip's sampled frames, so a verdict can be given per person.

Greedy IoU matching (the SORT family without its motion model): each box of a sampled frame joins
the track whose last box overlaps it most, best pairs first, if that IoU is at least ``min_iou``;
the rest start new tracks. A track missed on up to ``max_gap`` sampled frames in a row (a turned
head, a detector miss) can still be joined. Sampled frames are far apart (32 over a 10 s clip:
0.3 s), so a face that moves more than its own size between them starts a new track: a person
may then count as two tracks, which the per-video verdict (the highest track mean) tolerates.
"""
from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (n, ≥4) and ``b`` (m, ≥4), ``x, y, w, h``; an (n, m) array."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class IouTracker:
    """``update(boxes)`` per sampled frame, in clip order → one track id per box (0, 1, ...)."""

    def __init__(self, min_iou: float = 0.3, max_gap: int = 2):
        self.min_iou, self.max_gap = min_iou, max_gap
        self.last: list[np.ndarray] = []  # per track: its latest box
        self.missed: list[int] = []  # per track: sampled frames since it was last seen

    def update(self, boxes: np.ndarray) -> list[int]:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, max(4, np.shape(boxes)[-1] if len(boxes) else 4))
        live = [t for t, m in enumerate(self.missed) if m <= self.max_gap]
        ids = [-1] * len(boxes)
        if live and len(boxes):
            overlap = iou(np.stack([self.last[t] for t in live]), boxes)
            for flat in np.argsort(-overlap, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(boxes))
                if overlap[i, j] < self.min_iou:
                    break
                if ids[j] == -1 and live[i] is not None:
                    ids[j], live[i] = live[i], None
        for t in range(len(self.missed)):
            self.missed[t] += 1
        for j, box in enumerate(boxes):
            if ids[j] == -1:
                ids[j] = len(self.last)
                self.last.append(box[:4].copy())
                self.missed.append(0)
            else:
                self.last[ids[j]], self.missed[ids[j]] = box[:4].copy(), 0
        return ids

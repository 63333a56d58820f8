"""The crop convention, shared by scanning and training.

A face box [x, y, w, h] is enlarged by ``margin`` about its centre, clipped to the image and
resized (aspect not kept) to the model's input size. Boxes refer to the image as stored
(EXIF orientation is not applied), as COCO tools and OpenForensics do.
"""
from __future__ import annotations

import math

from scanner.status import BOX_OUTSIDE_IMAGE, EMPTY_BOX, INVALID_BOX, FaceError


def face_roi(bbox, width: int, height: int, margin: float) -> tuple[float, float, float, float]:
    """The crop window ``(x0, y0, x1, y1)`` in pixels for ``bbox`` in a ``width``×``height`` image.

    ``bbox`` None means the whole image. Raises FaceError for non-finite, empty or outside boxes.
    """
    if bbox is None:
        return 0.0, 0.0, float(width), float(height)
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise FaceError(INVALID_BOX, f"box {list(bbox)} has a non-finite value")
    if w <= 0 or h <= 0:
        raise FaceError(EMPTY_BOX, f"box {list(bbox)} has no area")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise FaceError(BOX_OUTSIDE_IMAGE, f"box {list(bbox)} lies outside the {width}x{height} image")
    cx, cy, hw, hh = x + w / 2, y + h / 2, w * margin / 2, h * margin / 2
    x0, y0 = max(0.0, cx - hw), max(0.0, cy - hh)
    x1, y1 = min(float(width), cx + hw), min(float(height), cy + hh)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise FaceError(EMPTY_BOX, f"box {list(bbox)} covers less than one pixel of the image")
    return x0, y0, x1, y1

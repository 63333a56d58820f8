"""The crop convention, shared by scanning and training, and the up-front check of each file.

A face box [x, y, w, h] is enlarged by ``margin`` about its centre, clipped to the image and
resized (aspect not kept) to the model's input size. Boxes refer to the image as stored
(EXIF orientation is not applied), as COCO tools and OpenForensics do.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

# status codes written to the ``status`` column; "ok" is the only success
OK = "ok"
MISSING_FILE = "missing_file"
UNREADABLE_FILE = "unreadable_file"
EMPTY_FILE = "empty_file"
UNSUPPORTED_FORMAT = "unsupported_format"
TRUNCATED_FILE = "truncated_file"
CORRUPT_FILE = "corrupt_file"
TOO_LARGE = "too_large"
DECODE_ERROR = "decode_error"
INVALID_BOX = "invalid_box"
EMPTY_BOX = "empty_box"
BOX_OUTSIDE_IMAGE = "box_outside_image"
NO_FACE = "no_face"  # the face detector found none in the image: one row keeps the image

DALI_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF", "JPEG2000", "PPM"}
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above it a file is refused as a possible decompression bomb


class FaceError(Exception):
    """A per-face (or per-image) failure: ``code`` goes to ``status``, the message to ``error``."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


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


def probe_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read the header of an encoded image; refuse what would fail or hurt the DALI batch.

    DALI fails a whole batch on one bad file, so the cheap checks happen here, per file.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise FaceError(EMPTY_FILE, "the file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (width, height) = im.format, im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FaceError(UNSUPPORTED_FORMAT, f"not a readable image ({exc.__class__.__name__}: {exc})") from None
    except Image.DecompressionBombError as exc:
        raise FaceError(TOO_LARGE, str(exc)) from None
    if fmt not in DALI_FORMATS:
        raise FaceError(UNSUPPORTED_FORMAT, f"{fmt} images are not decoded; convert to JPEG or PNG")
    if width * height > max_pixels:
        raise FaceError(TOO_LARGE, f"{width}x{height} is over the {max_pixels}-pixel limit (--max-pixels)")
    if fmt in ("JPEG", "MPO"):
        from .jpegcheck import JpegStructureError, check_jpeg

        try:
            check_jpeg(data)
        except JpegStructureError as exc:
            code = TRUNCATED_FILE if "truncated" in str(exc) else CORRUPT_FILE
            raise FaceError(code, f"broken JPEG: {exc}") from None
    return ImageInfo(int(width), int(height), fmt)

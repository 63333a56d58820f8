"""Read one image file and check it before DALI sees it.

DALI fails a whole batch on one bad file, so the cheap checks happen here, per file: size,
format, pixel count (decompression bombs) and, for JPEGs, the structure (``jpegcheck``).
"""
from __future__ import annotations

import io
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from scanner.status import (CORRUPT_FILE, EMPTY_FILE, MISSING_FILE, TOO_LARGE, TRUNCATED_FILE,
                            UNREADABLE_FILE, UNSUPPORTED_FORMAT, FaceError)

DALI_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF", "JPEG2000", "PPM"}

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above it a file is refused as a possible decompression bomb

@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str

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
        from scanner.catalog.jpegcheck import JpegStructureError, check_jpeg

        try:
            check_jpeg(data)
        except JpegStructureError as exc:
            code = TRUNCATED_FILE if "truncated" in str(exc) else CORRUPT_FILE
            raise FaceError(code, f"broken JPEG: {exc}") from None
    return ImageInfo(int(width), int(height), fmt)


# Fault injection for crash tests (in the spirit of fail-rs failpoints): a process that reads a
# file whose name contains this variable's value dies by a real signal, exactly where a decoder
# crash would take it down. SIGKILL, because a sent SIGSEGV can be survived: Ray workers install
# a handler that logs it and returns. Unset (always, outside tests) it costs a dictionary lookup.
CRASH_ENV = "DFSCAN_CRASH_ON"

NOT_FOUND = "the image file was not found"  # the reason of a file missing when the catalog was read


def crash_if_named(path: Path):
    """Dies by SIGKILL when ``path``'s name contains ``$DFSCAN_CRASH_ON`` (tests only): called
    where an image or a video clip is opened."""
    crash_on = os.environ.get(CRASH_ENV)
    if crash_on and crash_on in path.name:
        os.kill(os.getpid(), signal.SIGKILL)


def read_file(path: Path | None) -> bytes:
    if path is None:
        raise FaceError(MISSING_FILE, NOT_FOUND)
    crash_if_named(path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise FaceError(MISSING_FILE, f"{path} vanished before it was read") from None
    except OSError as exc:
        raise FaceError(UNREADABLE_FILE, f"{path}: {exc.strerror or exc}") from None

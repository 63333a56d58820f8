"""Every per-face status a run can write, and the exception that carries one.

``status`` is ``ok`` or one of these codes; ``error`` holds the reason in words. A face that
fails keeps its row: a run accounts for every face it was given.
"""
from __future__ import annotations

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
PATH_REFUSED = "path_refused"

UNKNOWN_IMAGE = "unknown_image"
WORKER_CRASHED = "worker_crashed"
NO_VIDEO_STREAM = "no_video_stream"  # a media file without pictures (audio only)
UNSUPPORTED_CODEC = "unsupported_codec"  # a video stream no decoder here reads
NO_FRAMES = "no_frames"  # a video stream that yields no frame
DECODER_CRASHED = "decoder_crashed"  # the image or clip killed the decoding process (a signal) each time it was read


class FaceError(Exception):
    """A per-face (or per-image) failure: ``code`` goes to ``status``, the message to ``error``."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


@dataclass
class FaceResult:
    """A face that will not reach the engine, with why."""

    face_id: int
    status: str
    error: str

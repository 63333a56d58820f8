"""The video decoders a clip's sampled frames come from (``--video-decoder``): one registry.

Every decoder is a frame source: ``open(path)`` gives a clip with ``info`` (VideoInfo),
``frames(targets)`` (the sampled ``Frame`` objects, upright, in clip order) and ``close()``;
the source's own ``close()`` frees what it keeps between clips. All of them pick frames with
``frames.FramePicker`` from the same timestamps, so detection, tracking and the DALI crop graph
after them are one path whichever decoded.

``auto`` is DALI ('mixed': NVDEC) on a GPU, PyAV on the CPU: DALI 2.4's CPU decoder refuses
H.264, most MP4s, and there PyAV reads every codec FFmpeg does.
"""
from __future__ import annotations

from pathlib import Path

from scanner.errors import DfscanError
from scanner.pipeline.dali_frames import DaliFrames
from scanner.pipeline.frames import open_video, sampled_frames, video_info


class PyAVClip:
    def __init__(self, path: Path):
        self.container, self.stream = open_video(Path(path))
        self.info = video_info(self.container, self.stream)

    def frames(self, targets):
        return sampled_frames(self.container, self.stream, targets, self.info)

    def close(self):
        self.container.close()


class PyAVFrames:
    """The ``pyav`` frame source: FFmpeg's libraries through PyAV, on the CPU."""

    name = "pyav"

    def __init__(self, device: str = "cpu", num_threads: int | None = None):
        pass  # FFmpeg picks its own threads (``open_video``)

    def open(self, path: Path) -> PyAVClip:
        return PyAVClip(path)

    def close(self):
        pass


VIDEO_DECODERS: dict[str, type] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_video_decoder(source: type, description: str):
    if source.name in VIDEO_DECODERS or source.name == "auto":
        raise ValueError(f"video decoder {source.name!r} is already registered (or reserved)")
    VIDEO_DECODERS[source.name], DESCRIPTIONS[source.name] = source, description


register_video_decoder(PyAVFrames, "PyAV (FFmpeg) on the CPU, every codec FFmpeg reads")
register_video_decoder(DaliFrames, "DALI: NVDEC on a GPU; on the CPU VP8, VP9 and MJPEG only")


def resolve_video_decoder(name: str, device: str) -> str:
    """The decoder ``name`` means on ``device`` ('cpu' or 'gpu'): ``auto`` is ``dali`` on a GPU,
    ``pyav`` on the CPU. Raises DfscanError for an unknown name."""
    if name == "auto":
        return "dali" if device == "gpu" else "pyav"
    if name not in VIDEO_DECODERS:
        raise DfscanError(f"--video-decoder {name!r} unknown; one of auto, {', '.join(VIDEO_DECODERS)}")
    return name


def open_frame_source(name: str, device: str, num_threads: int | None = None):
    """The frame source ``name`` (``auto`` resolved for ``device``), ready for ``open(path)``."""
    return VIDEO_DECODERS[resolve_video_decoder(name, device)](device=device, num_threads=num_threads)

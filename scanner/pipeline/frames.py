"""Video files → sampled RGB frames, streamed: a clip is never held, only the frames kept.

Decoder: PyAV (FFmpeg's own libraries) on the CPU, the default there; a GPU run decodes with
DALI's NVDEC (``dali_frames``; ``--video-decoder``, ``video_decoders``). DALI 2.4's CPU video
decoder refuses H.264, most MP4s; OpenCV's FFmpeg build grabbed frames ~1.6x faster on a 1080p
H.264 clip here, but says nothing about why a file fails, and PyAV gives FFmpeg's reason (no moov
atom, invalid data, no decoder), each frame's timestamp (variable frame rate) and the display
matrix. Either way PyAV opens the file: its checks give broken files their status.

Sampling: ``frames_per_video`` evenly spaced times (the middle of N equal slices of the clip) or
one every ``1 / fps`` seconds; each target takes the first frame whose timestamp reaches it
(``FramePicker``, shared by every decoder), so a variable-frame-rate clip is sampled by time, not
by frame count. Every frame is decoded (H.264 and VP9 need the frames before), but only sampled
ones are converted to RGB and kept.

Rotation: a phone clip stores its frames sideways with a display matrix; frames are turned
upright here (as players show them), so boxes and crops refer to the upright frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from scanner.catalog.files import crash_if_named
from scanner.status import (DECODE_ERROR, EMPTY_FILE, MISSING_FILE, NO_FRAMES, NO_VIDEO_STREAM, TRUNCATED_FILE,
                            UNREADABLE_FILE, UNSUPPORTED_CODEC, UNSUPPORTED_FORMAT, FaceError)

DEFAULT_FRAMES_PER_VIDEO = 32  # the DFDC winner's and deepware's choice


@dataclass
class VideoInfo:
    width: int  # as stored (before rotation)
    height: int
    duration_s: float | None
    fps: float | None  # average frame rate
    frames: int | None  # as the container states it (0 or None: unknown)
    codec: str
    rotation: int = 0  # degrees (counter-clockwise) the stored frames are turned to stand upright
    vfr: bool = False  # set while decoding: see ``sampled_frames``


@dataclass
class Frame:
    index: int  # decoded frame number in the clip, from 0
    time_s: float
    rgb: np.ndarray  # HWC uint8, upright
    rotation: int = 0  # degrees counter-clockwise it was turned (the display matrix)


def ffmpeg_reason(exc: Exception) -> str:
    return f"{exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"[:300]


def _is_mp4(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(12)[4:8] == b"ftyp"


def open_video(path: Path):
    """``(container, stream)`` of ``path``'s first video stream. Raises FaceError with the status
    and FFmpeg's reason for files that cannot be decoded."""
    import av

    if path is None or not path.is_file():
        raise FaceError(MISSING_FILE, f"{path} was not found")
    if path.stat().st_size == 0:
        raise FaceError(EMPTY_FILE, "the file is empty (0 bytes)")
    crash_if_named(path)  # where FFmpeg (and DALI's decoder, which opens it here first) meets the file
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError as exc:
        raise FaceError(UNREADABLE_FILE, f"{path}: {exc.strerror}") from None
    except av.error.EOFError:  # a header and then nothing: what muxers write for a clip of 0 frames
        raise FaceError(NO_FRAMES, "the file ends before its first frame (a clip of 0 frames, or cut "
                                   "short); re-encode or re-download it") from None
    except av.error.FFmpegError as exc:
        if _is_mp4(path):  # an MP4 header but no index: the download or copy was cut short
            raise FaceError(TRUNCATED_FILE, f"an MP4 that cannot be opened, likely truncated (no moov atom): "
                                            f"{ffmpeg_reason(exc)}; re-download or re-encode it") from None
        raise FaceError(UNSUPPORTED_FORMAT, f"not a readable video ({ffmpeg_reason(exc)})") from None
    if not container.streams:  # MP4 drops the track of a clip of 0 frames
        container.close()
        raise FaceError(NO_FRAMES, "the file holds no stream at all (a clip of 0 frames)")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise FaceError(NO_VIDEO_STREAM, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name in (None, "", "none"):
        container.close()
        raise FaceError(UNSUPPORTED_CODEC, "no decoder here reads its video codec; re-encode it to H.264 or VP9")
    stream.thread_type = "AUTO"
    return container, stream


def _rate(value) -> float | None:
    return float(value) if value else None


def video_info(container, stream) -> VideoInfo:
    """What the container says about ``stream``: size (upright), duration, frame rate, codec."""
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    avg, nominal = _rate(stream.average_rate), _rate(stream.guessed_rate or stream.base_rate)
    w, h = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(int(w), int(h), duration, avg or nominal, int(stream.frames or 0) or None,
                     stream.codec_context.name)


def sample_times(info: VideoInfo, frames_per_video: int | None, fps: float | None) -> list[float]:
    """Target times (seconds from the clip's start): ``fps`` per second, else ``frames_per_video``
    at the middles of equal slices. A clip of unknown length is sampled at 1 frame per second."""
    duration = info.duration_s
    if (duration is None or duration <= 0) and info.frames and info.fps:
        duration = info.frames / info.fps
    if fps is None and (duration is None or duration <= 0):
        fps = 1.0
    if fps is not None:
        n = math.inf if duration is None or duration <= 0 else max(1, math.ceil(duration * fps - 1e-9))
        return _every(1.0 / fps, n)
    n = frames_per_video or DEFAULT_FRAMES_PER_VIDEO
    return [duration * (k + 0.5) / n for k in range(n)]


def _every(step: float, n):
    """``[0, step, 2 step, ...]``, ``n`` of them (a lazy endless list when ``n`` is infinite)."""
    if n is math.inf:
        return _Endless(step)
    return [k * step for k in range(int(n))]


class _Endless:
    def __init__(self, step: float):
        self.step = step

    def __getitem__(self, k: int) -> float:
        return k * self.step

    def __len__(self) -> int:  # sampled_frames stops at the clip's end first
        return 2 ** 62


def turned(rgb: np.ndarray, rotation) -> tuple[np.ndarray, int]:
    """``rgb`` turned ``rotation`` degrees counter-clockwise (the display matrix, rounded to a
    quarter turn), and the degrees it was turned."""
    turns = round((rotation or 0) / 90) % 4
    return (np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb), turns * 90


def _upright(frame) -> tuple[np.ndarray, int]:
    """The RGB frame turned as its display matrix says (PyAV: counter-clockwise degrees)."""
    # FFmpeg pads rows; DALI wants them packed
    return turned(np.ascontiguousarray(frame.to_ndarray(format="rgb24")), frame.rotation)


class FramePicker:
    """Which frames serve the targets, shown the clip's frame times in order: a target takes the
    first frame whose time reaches it, and a frame serves at most once. Every decoder asks this
    one picker, so each picks the same frames of a clip.

    ``see(t)`` says for the next frame: True (keep it), False (skip it) or None (every target is
    served: stop). Sets ``info.vfr`` when the frames' intervals differ by more than a quarter
    (plus 2 ms for timestamps rounded to milliseconds, as Matroska stores them).
    """

    def __init__(self, targets, info: VideoInfo | None = None):
        self.targets, self.info = targets, info
        self.taken, self.last, self.gaps = 0, None, [math.inf, 0.0]  # shortest and longest interval

    def see(self, t: float) -> bool | None:
        if self.last is not None and t > self.last:
            self.gaps = [min(self.gaps[0], t - self.last), max(self.gaps[1], t - self.last)]
            if self.info is not None and self.gaps[1] > 1.25 * self.gaps[0] + 0.002:
                self.info.vfr = True
        self.last = t
        if self.taken >= len(self.targets):
            return None
        if t + 1e-6 < self.targets[self.taken]:
            return False
        while self.taken < len(self.targets) and self.targets[self.taken] <= t + 1e-6:
            self.taken += 1  # targets this frame reaches; a frame is used once
        return True


def start_time(stream) -> float:
    """The stream's first timestamp (seconds): frame times are counted from it."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def sampled_frames(container, stream, targets, info: VideoInfo | None = None) -> Iterator[Frame]:
    """The sampled frames in clip order, one per target (``FramePicker``). Raises
    FaceError(decode_error) when FFmpeg stops on broken data, or no_frames for a clip with none.
    """
    import av

    index, seen = -1, 0
    picker = FramePicker(targets, info)
    start = start_time(stream)
    fps = _rate(stream.average_rate) or _rate(stream.guessed_rate) or 25.0
    try:
        for frame in container.decode(stream):
            index += 1
            seen += 1
            keep = picker.see(frame.time - start if frame.time is not None else index / fps)
            if keep is None:
                break
            if keep:
                yield Frame(index, round(float(picker.last), 6), *_upright(frame))
    except av.error.FFmpegError as exc:
        where = f"after frame {index}" if index >= 0 else "at the first frame"
        raise FaceError(DECODE_ERROR, f"FFmpeg stopped {where}: {ffmpeg_reason(exc)}") from None
    if seen == 0:
        raise FaceError(NO_FRAMES, "the video stream holds no decodable frame")


def frames_at(container, stream, indices) -> Iterator[Frame]:
    """The frames with these decoded-frame ``indices`` (as ``Frame.index`` numbers them), upright,
    streamed in clip order; ``dfscan explain`` re-makes a video face's crop from its frame."""
    import av

    wanted, index = set(indices), -1
    start = start_time(stream)
    try:
        for frame in container.decode(stream):
            index += 1
            if index in wanted:
                t = frame.time - start if frame.time is not None else 0.0
                yield Frame(index, round(float(t), 6), *_upright(frame))
                wanted.discard(index)
                if not wanted:
                    return
    except av.error.FFmpegError as exc:
        raise FaceError(DECODE_ERROR, f"FFmpeg stopped after frame {index}: {ffmpeg_reason(exc)}") from None

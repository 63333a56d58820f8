"""Video clips scanned in a supervised child process (``scanner.run.clip_isolation``).

The crash is real: with ``DFSCAN_CRASH_ON`` (``scanner.catalog.files.CRASH_ENV``) naming a clip,
the process that opens it dies by SIGKILL where an FFmpeg segfault would take it down. Runs go
through ``python -m scanner.cli`` in a fresh process, so the forkserver starts with the variable
set. Three small WebM clips of ../shared/data/videos (linked, never copied), 3 frames each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from _videos import VIDEOS

from scanner.catalog.files import CRASH_ENV

CLIPS = [VIDEOS / "fake" / "ghost_elon.webm", VIDEOS / "fake" / "ghost_khabenskii.webm",
         VIDEOS / "real" / "ghost_orig.webm"]
POISONED = "ghost_khabenskii.webm"
FACE_COLS = ["file", "face_id", "frame", "track_id", "status", "error", "label"]
VIDEO_COLS = ["file", "status", "error", "faces", "tracks", "frames_sampled", "codec", "width", "height"]

pytestmark = pytest.mark.skipif(not all(c.is_file() for c in CLIPS), reason=f"needs the ghost clips in {VIDEOS}")


def dfscan_run(clips, out, engine, *extra, crash_on=None):
    """``dfscan run`` in a new process; returns it finished."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(CRASH_ENV, None)
    if crash_on:
        env[CRASH_ENV] = crash_on
    cmd = [sys.executable, "-m", "scanner.cli", "run", str(clips), "--engine", str(engine), "--out", str(out),
           "--frames-per-video", "3", "--batch-size", "8", "--quiet", "--no-report", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def face_rows(out, files):
    """faces.parquet rows of ``files`` (without scores) and their scores, in file order."""
    rows = [r for r in pq.read_table(out / "faces.parquet").to_pylist() if r["file"] in files]
    return [{k: r[k] for k in FACE_COLS} for r in rows], np.array([r["score_fake"] for r in rows], float)


def video_rows(out):
    return {r["file"]: r for r in pq.read_table(out / "videos.parquet").to_pylist()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("ghost")
    for clip in CLIPS:
        (root / clip.name).symlink_to(clip)
    return root


@pytest.fixture(scope="module")
def in_process(clips, engines_dir, tmp_path_factory):
    """The three clips scanned in the run's own process (--no-isolate), no crash trigger."""
    out = tmp_path_factory.mktemp("ref") / "o"
    proc = dfscan_run(clips, out, engines_dir / "m.onnx", "--no-isolate")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["settings"]["isolate_decoder"] is False
    videos = video_rows(out)
    assert [videos[c.name]["status"] for c in CLIPS] == ["ok"] * 3
    assert all(videos[c.name]["faces"] >= 1 for c in CLIPS)
    return out


def assert_same(out, ref, files):
    got, got_scores = face_rows(out, files)
    want, want_scores = face_rows(ref, files)
    assert got == want
    assert len(got) >= len(files) and not np.isnan(want_scores).any()
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
    videos, ref_videos = video_rows(out), video_rows(ref)
    for f in files:
        assert {k: videos[f][k] for k in VIDEO_COLS} == {k: ref_videos[f][k] for k in VIDEO_COLS}
        assert videos[f]["score_fake"] == pytest.approx(ref_videos[f]["score_fake"], abs=1e-6)


def test_isolated_clips_equal_in_process_clips(clips, in_process, engines_dir, tmp_path):
    out = tmp_path / "o"
    proc = dfscan_run(clips, out, engines_dir / "m.onnx")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["settings"]["isolate_decoder"] is True
    assert_same(out, in_process, [c.name for c in CLIPS])


def test_a_clip_that_kills_the_child_costs_only_its_own_row(clips, in_process, engines_dir, tmp_path):
    out = tmp_path / "o"
    proc = dfscan_run(clips, out, engines_dir / "m.onnx", crash_on=POISONED)
    assert proc.returncode == 0, proc.stderr
    videos = video_rows(out)
    bad = videos[POISONED]
    assert bad["status"] == "decoder_crashed" and bad["faces"] == 0
    assert bad["error"] == ("the decoding process died of SIGKILL each time it scanned this clip; "
                            "the rest of the run went on")
    retry = f"{POISONED}: the clip process died of SIGKILL; scanning the clip again in a new one"
    assert (proc.stdout + proc.stderr).count(retry) == 1  # once alone again, then given up
    rows, _ = face_rows(out, [POISONED])
    assert [(r["status"], r["error"]) for r in rows] == [("decoder_crashed", bad["error"])]
    assert_same(out, in_process, [c.name for c in CLIPS if c.name != POISONED])


def test_resume_after_an_in_process_crash_finishes_with_the_clip_isolated(clips, in_process, engines_dir, tmp_path):
    """Issue #17: in-process, the poisoned clip takes the run down (a real SIGKILL) after the clip
    before it is saved; the isolated --resume keeps that clip, gives the poisoned one its
    decoder_crashed row and scans the last one."""
    out = tmp_path / "o"
    killed = dfscan_run(clips, out, engines_dir / "m.onnx", "--no-isolate", crash_on=POISONED)
    assert killed.returncode == -9
    assert len(list((out / "parts").glob("video-*.json"))) == 1  # ghost_elon, before the poisoned clip
    resumed = dfscan_run(clips, out, engines_dir / "m.onnx", "--resume", crash_on=POISONED)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 videos already saved, 2 left" in resumed.stderr + resumed.stdout
    assert [video_rows(out)[c.name]["status"] for c in CLIPS] == ["ok", "decoder_crashed", "ok"]
    assert_same(out, in_process, [c.name for c in CLIPS if c.name != POISONED])

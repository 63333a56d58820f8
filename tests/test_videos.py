"""Video files in ``dfscan run``: sampling, rotation, variable frame rate, tracks, one crop path,
every kind of broken file, labels, per-video resume. Clips are made at test time from frames of a
real clip in ../shared/data/videos (never stored in the repository)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _data import write_coco
from _videos import FACE_CLIP, face_frames, write_bad_files, write_clip

from scanner.catalog.videos import read_labels, video_of_face
from scanner.detect.detect import DetectSettings
from scanner.detect.tracking import IouTracker
from scanner.errors import DfscanError
from scanner.pipeline.frames import VideoInfo, sample_times
from scanner.run.job import run_job
from scanner.run.videos import VideoSettings
from scanner.settings import RunSettings

pytestmark = pytest.mark.skipif(not FACE_CLIP.is_file(), reason=f"needs {FACE_CLIP}")
VFR_TIMES = [0.0, 0.03, 0.06, 0.5, 0.52, 1.4, 1.45, 1.5, 2.2, 2.9]


def _settings():
    return RunSettings(batch_size=8, device="cpu", isolate_decoder=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    frames = face_frames(12)
    write_clip(root / "face.mp4", frames)
    (root / "sub").mkdir()
    write_clip(root / "sub" / "face.webm", frames[:8], fps=25, codec="libvpx-vp9")
    write_clip(root / "rotated.mp4", frames, rotation=90)
    write_clip(root / "vfr.mkv", frames[:len(VFR_TIMES)], times_s=VFR_TIMES)
    expected = write_bad_files(root / "bad")
    from PIL import Image

    Image.fromarray(frames[0]).save(root / "still.png")  # an image beside the videos, same run
    (root / "labels.csv").write_text("file,label,kind\nface.mp4,fake,x\nsub/face.webm,0,y\nrotated.mp4,real,z\n"
                                     "gone.mp4,fake,w\n")
    return root, {f"bad/{k}": v for k, v in expected.items()}


@pytest.fixture(scope="module")
def scanned(folder, engines_dir, tmp_path_factory):
    root, _ = folder
    out = tmp_path_factory.mktemp("run") / "out"
    summary = run_job(root, out, engines_dir / "m.onnx", settings=_settings(), progress=False, log=lambda m: None,
                      detect=DetectSettings(), videos=VideoSettings(frames_per_video=4, labels="labels.csv"))
    videos = {r["file"]: r for r in pq.read_table(out / "videos.parquet").to_pylist()}
    faces = pq.read_table(out / "faces.parquet").to_pylist()
    return summary, out, videos, faces


def test_each_broken_file_gets_its_status_and_the_rest_is_scanned(folder, scanned):
    _, expected = folder
    summary, out, videos, faces = scanned
    got = {f: videos[f]["status"] for f in expected}
    assert got == expected
    for f in expected:
        assert videos[f]["error"], f
        rows = [r for r in faces if r["file"] == f]
        assert [(r["status"], r["score_fake"]) for r in rows] == [(expected[f], None)]  # kept, never dropped
    good = ["face.mp4", "sub/face.webm", "rotated.mp4", "vfr.mkv"]
    assert all(videos[f]["status"] == "ok" and videos[f]["faces"] >= 1 for f in good), [videos[f] for f in good]


def test_video_rows_carry_frame_time_and_track(scanned):
    _, _, videos, faces = scanned
    rows = [r for r in faces if r["file"] == "face.mp4"]
    # 4 evenly spaced times over 12 frames at 30 fps: the middles of 4 slices of 0.4 s
    assert [r["frame"] for r in rows] == [2, 5, 8, 11]
    assert [r["time_s"] for r in rows] == pytest.approx([2 / 30, 5 / 30, 8 / 30, 11 / 30], abs=1e-4)
    assert {r["track_id"] for r in rows} == {0}  # one person, followed through the clip
    assert all(video_of_face(r["face_id"]) is not None for r in rows)
    still = [r for r in faces if r["file"] == "still.png"]
    assert len(still) == 1 and still[0]["status"] == "ok"
    assert (still[0]["frame"], still[0]["time_s"], still[0]["track_id"]) == (None, None, None)
    v = videos["face.mp4"]
    assert (v["frames_sampled"], v["faces"], v["tracks"], v["label"]) == (4, 4, 1, 1)
    assert v["score_fake"] == pytest.approx(np.mean([r["score_fake"] for r in rows]), abs=1e-6)


def test_rotated_clip_is_scanned_upright(scanned):
    _, _, videos, faces = scanned
    v = videos["rotated.mp4"]
    assert (v["rotation_deg"], v["width"], v["height"]) == (90, 360, 640)
    for r in (r for r in faces if r["file"] == "rotated.mp4"):
        assert r["x"] + r["w"] <= 360 + 1e-3 and r["y"] + r["h"] <= 640 + 1e-3
        assert r["h"] > 100  # the face, found in the upright frame


def test_variable_frame_rate_is_sampled_by_time(scanned):
    _, _, videos, faces = scanned
    v = videos["vfr.mkv"]
    assert v["vfr"] is True and v["status"] == "ok"
    times = sorted({r["time_s"] for r in faces if r["file"] == "vfr.mkv"})
    # targets at the middles of 4 slices of the clip; each takes the first frame at or after it
    duration = v["duration_s"]
    want = [next(t for t in VFR_TIMES if t >= duration * (k + 0.5) / 4 - 1e-6) for k in range(4)]
    assert times == pytest.approx(sorted(set(want)), abs=2e-3)


def test_video_crop_is_the_image_crop(folder, scanned, engines_dir, tmp_path):
    """A video face scores as the same frame saved losslessly and scanned as an image with the
    same box: one crop path for both."""
    import av
    from PIL import Image

    root, _ = folder
    _, _, _, faces = scanned
    rows = [r for r in faces if r["file"] == "face.mp4"]
    images, anns = [], []
    with av.open(str(root / "face.mp4")) as c:
        for n, frame in enumerate(c.decode(video=0)):
            for r in rows:
                if r["frame"] == n:
                    Image.fromarray(frame.to_ndarray(format="rgb24")).save(tmp_path / f"{n}.png")
                    images.append({"id": n + 1, "file_name": f"{n}.png"})
                    anns.append({"id": n + 1, "image_id": n + 1, "bbox": [r["x"], r["y"], r["w"], r["h"]]})
    ann = write_coco(tmp_path / "frames_poly.json", images, anns)
    run_job(tmp_path, tmp_path / "out", engines_dir / "m.onnx", ann, _settings(), progress=False,
            log=lambda m: None, videos=VideoSettings(frames_per_video=0))
    as_images = pq.read_table(tmp_path / "out" / "faces.parquet").column("score_fake").to_pylist()
    assert len(set(np.round(as_images, 4))) > 1  # the varying engine: the scores say which crop it was
    assert as_images == pytest.approx([r["score_fake"] for r in rows], abs=1e-5)


def test_labels_and_per_video_metrics(scanned):
    summary, out, videos, _ = scanned
    assert (videos["face.mp4"]["label"], videos["sub/face.webm"]["label"], videos["rotated.mp4"]["label"]) == (1, 0, 0)
    assert videos["vfr.mkv"]["label"] is None
    metrics = pq.read_table(out / "video_metrics.parquet").to_pylist()
    assert len(metrics) == 1 and (metrics[0]["n"], metrics[0]["n_fake"], metrics[0]["n_real"]) == (3, 1, 2)
    assert summary.video_metrics["n"] == 3


def test_bad_labels_file_is_one_line(tmp_path):
    (tmp_path / "l.csv").write_text("file,label\na.mp4,maybe\n")
    with pytest.raises(DfscanError, match=r"line 2: label 'maybe'; use real, fake, 0 or 1"):
        read_labels(tmp_path / "l.csv", tmp_path)
    (tmp_path / "n.csv").write_text("name,verdict\na.mp4,real\n")
    with pytest.raises(DfscanError, match="columns 'file' and 'label'"):
        read_labels("n.csv", tmp_path)
    (tmp_path / "g.csv").write_text("file,label,other\na.mp4,Fake,x\nb/c.mp4,0,y\n")
    assert read_labels("g.csv", tmp_path) == {"a.mp4": 1, "b/c.mp4": 0}  # found in the folder
    from click.testing import CliRunner

    from scanner.cli import main

    res = CliRunner().invoke(main, ["run", str(tmp_path), "--labels", "l.csv", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "l.csv: line 2" in res.output.strip().splitlines()[-1]


def test_tracker_follows_people_across_gaps():
    t = IouTracker(min_iou=0.3, max_gap=1)
    a, b = [10, 10, 50, 50, 0.9], [200, 10, 50, 50, 0.9]
    assert t.update(np.array([a, b])) == [0, 1]
    assert t.update(np.array([[205, 12, 50, 50, 1], [12, 8, 50, 50, 1]])) == [1, 0]  # order does not matter
    assert t.update(np.array([[14, 10, 50, 50, 1]])) == [0]  # b missed once
    assert t.update(np.array([[206, 12, 50, 50, 1], [400, 0, 20, 20, 1]])) == [1, 2]  # b back; a new face
    t.update(np.zeros((0, 5)))
    t.update(np.zeros((0, 5)))
    assert t.update(np.array([[14, 10, 50, 50, 1]])) == [3]  # a gone too long: a new track


def test_sampling_by_count_and_by_rate():
    info = VideoInfo(640, 360, 10.0, 25.0, 250, "h264")
    assert sample_times(info, 4, None) == pytest.approx([1.25, 3.75, 6.25, 8.75])
    assert sample_times(info, None, 0.5) == pytest.approx([0, 2, 4, 6, 8])
    unknown = VideoInfo(640, 360, None, None, None, "vp9")
    assert [sample_times(unknown, 4, None)[k] for k in range(3)] == [0, 1, 2]  # 1 frame/s when the length is unknown


def test_resume_redoes_only_unsaved_clips(tmp_path, engines_dir):
    """A real SIGINT after the first clip is saved; --resume scans the rest and the result equals
    an uninterrupted run."""
    frames = face_frames(12)
    clips = tmp_path / "clips"
    clips.mkdir()
    for n in range(4):
        write_clip(clips / f"c{n}.mp4", frames[n:] + frames[:n])
    cmd = [sys.executable, "-m", "scanner.cli", "run", str(clips), "--engine", str(engines_dir / "m.onnx"),
           "--frames-per-video", "3", "--quiet", "--no-report", "--no-isolate", "--batch-size", "8"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "out"
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((out / "parts").glob("video-*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "--resume" in err
    saved = len(list((out / "parts").glob("video-*.json")))
    assert 1 <= saved < 4
    for target, resume in ((out, True), (tmp_path / "whole", False)):  # the resume, and a run never stopped
        run_job(clips, target, engines_dir / "m.onnx", settings=_settings(), resume=resume, progress=False,
                log=lambda m: None, detect=DetectSettings(), videos=VideoSettings(frames_per_video=3))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sessions"][-1]["faces_scanned"] == 3 * (4 - saved)
    keys = ["file", "face_id", "frame", "track_id", "score_fake", "status"]
    assert (pq.read_table(out / "faces.parquet").select(keys).to_pylist()
            == pq.read_table(tmp_path / "whole" / "faces.parquet").select(keys).to_pylist())
    cols = ["file", "faces", "tracks", "score_fake", "status"]
    assert (pq.read_table(out / "videos.parquet").select(cols).to_pylist()
            == pq.read_table(tmp_path / "whole" / "videos.parquet").select(cols).to_pylist())


@pytest.mark.slow
def test_bench_videos_times_three_passes(tmp_path, engines_dir):
    from scanner.bench.videos import bench_videos, summary_lines

    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "a.mp4", face_frames(10))
    table = bench_videos(tmp_path / "clips", tmp_path / "out", str(engines_dir / "m.onnx"), _settings(),
                         DetectSettings(), VideoSettings(frames_per_video=3), progress=False, log=lambda m: None)
    rows = {r["pass"]: r for r in table.to_pylist()}
    assert set(rows) == {"decode", "video", "jpeg"}
    assert rows["decode"]["frames_sampled"] == rows["video"]["frames_sampled"] == rows["jpeg"]["frames_sampled"] == 3
    assert rows["video"]["faces"] == rows["jpeg"]["faces"] == 3  # the same faces found both ways
    assert all(r["seconds"] > 0 for r in rows.values())
    assert pq.read_table(tmp_path / "out" / "bench_videos.parquet").num_rows == 3
    assert summary_lines(table)[-1].startswith("video / jpeg faces/s: ")


def test_explain_decodes_a_video_face_again(scanned, engines_dir, tmp_path):
    """explain re-makes a video face's crop from its frame (rotated clips too): the torch
    checkpoint scores the re-made crop as the ONNX engine scored the scan's crop."""
    from scanner.explain.explain import run_explain

    _, out, _, faces = scanned
    chosen = [r for r in faces if r["file"] == "face.mp4"][1:3] + [r for r in faces if r["file"] == "rotated.mp4"][:1]
    ids = ",".join(str(r["face_id"]) for r in chosen)
    run_explain(out / "faces.parquet", engines_dir / "m.pt", f"ids:{ids}", out_dir=tmp_path / "ex", device="cpu",
                progress=False, log=lambda m: None)
    rows = pq.read_table(tmp_path / "ex" / "explain.parquet").to_pylist()
    assert [r["face_id"] for r in rows] == [r["face_id"] for r in chosen]
    assert len({round(r["scan_score_fake"], 4) for r in rows}) == 3  # the varying engine tells the crops apart
    for r in rows:
        assert r["score_fake"] == pytest.approx(r["scan_score_fake"], abs=1e-4), r


def test_report_shows_video_faces_with_their_crops(folder, scanned):
    """Video faces get thumbnails, made from their clip's frame decoded again: each is close to the
    same window cut from that frame by PIL (rotated clips too); a moved folder is one note."""
    import base64
    import io

    from PIL import Image

    from scanner.pipeline.geometry import face_roi
    from scanner.report.report import load_run, thumbnails, write_report

    root, _ = folder
    _, out, _, faces = scanned
    rows = [r for r in faces if r["file"] in ("face.mp4", "rotated.mp4") and r["status"] == "ok"][:5]
    thumbs, note = thumbnails(load_run(out), rows, progress=False, log=lambda m: None)
    assert note is None and [t.face_id for t in thumbs] == [r["face_id"] for r in rows]
    run = load_run(out)
    for t, r in zip(thumbs, rows):
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(t.uri.split(",", 1)[1]))).convert("RGB"), np.float32)
        frame = face_frames(r["frame"] + 1)[r["frame"]]
        if r["file"] == "rotated.mp4":
            frame = np.rot90(frame)  # the display matrix turns it 90 degrees counter-clockwise
        roi = face_roi((r["x"], r["y"], r["w"], r["h"]), frame.shape[1], frame.shape[0], run.meta["crop_margin"])
        want = Image.fromarray(np.ascontiguousarray(frame)).resize(got.shape[1::-1], Image.Resampling.BILINEAR, box=roi)
        diff = np.abs(got - np.asarray(want, np.float32)).mean()
        assert diff < 8, r["file"]
    moved, note = thumbnails(run, rows, progress=False, log=lambda m: None, images=root / "gone")
    assert all(t.uri is None for t in moved) and "pass --images" in note
    flagged = sum(1 for r in faces if r["pred"] == 1 and r["status"] == "ok")
    html, _ = write_report(out, progress=False, log=lambda m: None)
    assert html.read_text().count("data:image/jpeg") == min(flagged, 32) > 0  # video faces among them

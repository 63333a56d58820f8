"""Video clips as training and evaluation data: ``dfscan train`` / ``dfscan eval`` with
``--data NAME=FOLDER-OF-CLIPS [--labels CSV]``. Faces come from the video scan's own path, the
split keeps clip groups whole, and the detected boxes are cached per clip. Clips: the small real
ones in ../shared/data/videos (linked, never copied) and clips made from their frames."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
from _videos import VIDEOS, face_frames, write_clip
from click.testing import CliRunner

from scanner.cli import main
from scanner.detect.cache import FOLDER, BoxCache
from scanner.detect.detect import DetectSettings
from scanner.errors import DfscanError
from scanner.run.sources import parse_source, parse_sources, video_clips, video_part
from scanner.run.training import video_crops
from scanner.run.videos import VideoSettings

GHOST = ["real/ghost_orig.webm", "fake/ghost_elon.webm", "fake/ghost_khabenskii.webm"]  # 464x560, one source
pytestmark = pytest.mark.skipif(not all((VIDEOS / f).is_file() for f in GHOST), reason=f"needs {VIDEOS}")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six clips: the three GHOST clips (a source and its two face swaps: one group in the CSV),
    two labelled by the CSV alone and one (real/c.mp4) by its folder only."""
    root = tmp_path_factory.mktemp("videosource")
    for f in GHOST:
        (root / f).parent.mkdir(exist_ok=True)
        (root / f).symlink_to(VIDEOS / f)
    frames = face_frames(12)
    write_clip(root / "a.mp4", frames)
    write_clip(root / "b.mp4", frames[::-1])
    write_clip(root / "real" / "c.mp4", frames[3:] + frames[:3])
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "group", "kind"])
        w.writerows([["a.mp4", "real", "", "x"], ["b.mp4", "1", "", "x"], [GHOST[0], "real", "ghost", "source"],
                     [GHOST[1], "fake", "ghost", "swap"], [GHOST[2], "fake", "ghost", "swap"]])
    return root


def test_clips_are_labelled_by_csv_or_folder_and_split_by_group(clips):
    source = parse_source(f"v={clips}", "labels.csv")
    assert source.kind == "videos"
    found, groups = video_clips(source)
    assert {c.file: c.label for c in found} == {"a.mp4": 0, "b.mp4": 1, "real/c.mp4": 0, GHOST[0]: 0,
                                                 GHOST[1]: 1, GHOST[2]: 1}
    assert {groups[f] for f in GHOST} == {"ghost"} and groups["a.mp4"] == "a.mp4"
    parts = {p: {c.file for c in video_part(source, p, 0.25, log=lambda m: None)} for p in ("train", "val")}
    assert parts["train"] and parts["val"] and not parts["train"] & parts["val"]
    assert parts["train"] | parts["val"] == {c.file for c in found}
    assert sum(f in parts["val"] for f in GHOST) in (0, 3)  # a swap never sits apart from its source


def test_one_line_errors_for_mixed_and_unlabelled_folders(tmp_path):
    from PIL import Image

    (tmp_path / "mixed" / "real").mkdir(parents=True)
    write_clip(tmp_path / "mixed" / "real" / "a.mp4", face_frames(2))
    Image.fromarray(face_frames(1)[0]).save(tmp_path / "mixed" / "real" / "a.png")
    with pytest.raises(DfscanError, match=r"holds both video files and images .*a\.png.*own --data"):
        parse_sources([str(tmp_path / "mixed")])
    (tmp_path / "loose").mkdir()
    write_clip(tmp_path / "loose" / "x.mp4", face_frames(2))
    res = CliRunner().invoke(main, ["train", "--arch", "customcnn", "--res", "48", "--epochs", "1",
                                    "--data", str(tmp_path / "loose"), "--out", str(tmp_path / "m.pt"), "--quiet"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    last = res.output.strip().splitlines()[-1]
    assert "x.mp4: no label" in last and "--labels" in last and "real/ or fake/" in last


def test_cached_boxes_are_used_and_a_corrupt_entry_is_rebuilt(clips):
    """The second pass takes its boxes from the cache (boxes planted there change the crops); a
    truncated entry is detected again, with a warning, and gives the first pass's crops."""
    from engines.models import get_model_config

    config = get_model_config("customcnn").with_input_size(48)
    found = [c for c in video_clips(parse_source(str(clips), "labels.csv"))[0] if c.file == "a.mp4"]
    vs, detect, logs = VideoSettings(frames_per_video=2), DetectSettings(), []

    def crops():
        out = list(video_crops(found, config, detect, vs, "t", batch_size=8, log=logs.append))
        return np.concatenate([p for p, _, _ in out]), [i for _, _, ids in out for i in ids]

    first, ids = crops()
    assert len(ids) == 2 and [i >> 32 for i in ids] == [found[0].index + 1] * 2  # the ids 'dfscan run' gives
    cache = BoxCache(detect.meta(), detect.device, None)
    known, handle = cache.get(found[0].path, vs.sampling())
    assert set(known) == {3, 9} and all(len(b) == 1 for b in known.values())  # one face per sampled frame
    cache.put(handle, {f: b + np.array([[40, 0, 0, 0, 0]], np.float32) for f, b in known.items()})
    moved, _ = crops()
    assert not np.array_equal(moved, first)  # the planted boxes were cropped, so nothing was detected
    entry = handle[0]
    assert entry.parent.name == FOLDER
    entry.write_bytes(entry.read_bytes()[:100])
    again, _ = crops()
    assert any("unreadable" in m and "detecting again" in m for m in logs)
    np.testing.assert_array_equal(again, first)
    assert cache.get(found[0].path, vs.sampling())[0] is not None  # rebuilt


def test_train_then_eval_held_out_clips(clips, tmp_path):
    out = tmp_path / "m.pt"
    res = CliRunner().invoke(main, ["train", "--arch", "customcnn", "--res", "48", "--epochs", "1",
                                    "--batch-size", "8", "--augment", "none", "--quiet", "--frames-per-video", "2",
                                    "--data", f"clips={clips}", "--labels", "labels.csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    history = pq.read_table(tmp_path / "history.parquet").to_pylist()
    assert history[0]["val_auc"] is not None
    source = parse_source(f"clips={clips}", "labels.csv")
    val = sorted(c.file for c in video_part(source, "val", 0.25, log=lambda m: None))

    ev = tmp_path / "ev"
    res = CliRunner().invoke(main, ["eval", "--engine", str(out), "--data", f"clips={clips}", "--labels",
                                    "labels.csv", "--held-out", "--frames-per-video", "2", "--out", str(ev),
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    videos = pq.read_table(ev / "clips" / "videos.parquet").to_pylist()
    assert sorted(v["file"] for v in videos) == val  # the held-out clips, and only they
    with open(ev / "clips_labels.csv") as fh:
        assert sorted(r["file"] for r in csv.DictReader(fh)) == val
    faces = pq.read_table(ev / "clips" / "faces.parquet").to_pylist()
    metrics = {m["subset"]: m for m in pq.read_table(ev / "metrics.parquet").to_pylist()}
    ok = [f for f in faces if f["status"] == "ok"]
    assert metrics["all"]["source"] == "clips" and metrics["all"]["n"] == len(ok) > len(val)  # face-level
    assert (ev / "clips" / "video_metrics.parquet").is_file()

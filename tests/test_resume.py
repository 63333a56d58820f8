"""Crash safety: a run killed with SIGKILL and resumed equals an uninterrupted run, face by face."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scanner.cli import main

from _data import REALORFAKE, assert_scores_spread, varying_engines, write_big_set, write_coco

FACES_PER_IMAGE = 4


@pytest.fixture(scope="module")
def big_set(tmp_path_factory):
    """~2,200 faces: every Train and Val image of realorfake with four boxes each."""
    root = tmp_path_factory.mktemp("big")
    return (root, *write_big_set(root, FACES_PER_IMAGE))


@pytest.fixture(scope="module")
def clean(big_set, tmp_path_factory):
    """faces.parquet of an uninterrupted run of the big set."""
    out = tmp_path_factory.mktemp("clean") / "o"
    proc = dfscan(*run_args(big_set, out))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    table = pq.read_table(out / "faces.parquet")
    assert_scores_spread(table.column("score_fake").to_pylist())
    return table


def assert_equal_runs(a, b, n_faces):
    assert a.num_rows == b.num_rows == n_faces
    assert a.column("face_id").to_pylist() == b.column("face_id").to_pylist() == list(range(1, n_faces + 1))
    assert a.column("status").to_pylist() == b.column("status").to_pylist()
    np.testing.assert_allclose(a.column("score_fake").to_numpy(zero_copy_only=False),
                               b.column("score_fake").to_numpy(zero_copy_only=False), atol=1e-5)


def kill_when(proc, parts, n_parts, sig=signal.SIGKILL, poll_s=0.05):
    """Send ``sig`` to ``proc`` as soon as ``parts`` holds ``n_parts`` published part files."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < n_parts:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(poll_s)
    proc.send_signal(sig)


def saved_face_ids(parts) -> set[int]:
    return {f for p in parts.glob("part-*.parquet") for f in pq.read_table(p).column("face_id").to_pylist()}


def last_session(out) -> dict:
    return json.loads((out / "manifest.json").read_text())["sessions"][-1]


def dfscan(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "scanner.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_args(big_set, out):
    root, ann, engine, _ = big_set
    return ["run", REALORFAKE, "--annotations", ann, "--engine", engine, "--out", out,
            "--batch-size", 32, "--part-rows", 128, "--quiet", "--allow-outside-paths"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(big_set, clean, tmp_path):
    n_faces = big_set[3]
    killed = dfscan(*run_args(big_set, tmp_path / "killed"))
    parts = tmp_path / "killed" / "parts"
    kill_when(killed, parts, 4)
    killed.wait()
    saved = len(saved_face_ids(parts))
    assert 0 < saved < n_faces
    assert not (tmp_path / "killed" / "faces.parquet").exists()

    resumed = dfscan(*run_args(big_set, tmp_path / "killed"), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert "resuming" in resumed.stderr.read()
    # batches hold whole 4-face images, so the resumed run scans exactly the faces not yet saved
    assert last_session(tmp_path / "killed")["faces_scanned"] == n_faces - saved
    assert_equal_runs(clean, pq.read_table(tmp_path / "killed" / "faces.parquet"), n_faces)
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["faces"] == n_faces


def test_kill_between_the_parts_of_a_split_image(tmp_path):
    """An image with more faces than a batch is split across batches, so across part files; a
    kill between its parts leaves it half saved. --resume scans it again whole, and nothing
    that was complete."""
    rng = np.random.default_rng(1)
    paths = sorted((REALORFAKE / "Images" / "Train").glob("*.jpg"))[:64]
    faces_per_image = [4, 40] + [4] * (len(paths) - 2)  # image 2: 32 faces in one batch, 8 in the next
    images, anns = [], []
    for n, (path, k) in enumerate(zip(paths, faces_per_image), start=1):
        images.append({"id": n, "file_name": str(path)})
        for _ in range(k):
            x, y, w, h = *rng.uniform(0, 380, 2), *rng.uniform(40, 130, 2)
            anns.append({"id": len(anns) + 1, "image_id": n, "bbox": [x, y, w, h], "category_id": 0})
    ann = write_coco(tmp_path / "split_poly.json", images, anns)
    engine = varying_engines(tmp_path, (128, 128))["onnx"]  # slow enough to stop between two parts
    n_faces = len(anns)

    def args(out):
        return ["run", REALORFAKE, "--annotations", ann, "--engine", engine, "--out", out, "--batch-size", 32,
                "--part-rows", 1, "--quiet", "--allow-outside-paths"]

    for attempt in range(5):  # the kill must land after part 2 (image 2's first half), before part 3
        out = tmp_path / f"killed{attempt}"
        proc = dfscan(*args(out))
        kill_when(proc, out / "parts", 2, poll_s=0.001)
        proc.wait()
        saved = saved_face_ids(out / "parts")
        if saved == set(range(1, 4 + 32 + 1)):
            break
    else:
        pytest.fail(f"no kill landed between the parts of the split image (last saved: {len(saved)} faces)")

    resumed = dfscan(*args(out), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    session = last_session(out)
    assert session["images_to_scan"] == len(images) - 1  # all but image 1, the only complete one
    assert session["faces_scanned"] == n_faces - 4  # image 2 again whole: 40 faces
    reference = dfscan(*args(tmp_path / "clean"))
    assert reference.wait(timeout=600) == 0
    a, b = pq.read_table(tmp_path / "clean" / "faces.parquet"), pq.read_table(out / "faces.parquet")
    assert_scores_spread(a.column("score_fake").to_pylist())
    assert_equal_runs(a, b, n_faces)


def interrupt(big_set, out, sig):
    """Start a run, send ``sig`` once two parts are saved; it must exit 130 with the resume hint."""
    proc = dfscan(*run_args(big_set, out))
    kill_when(proc, out / "parts", 2, sig=sig)
    assert proc.wait(timeout=120) == 130
    err = proc.stderr.read()
    assert "--resume" in err and "Traceback" not in err
    assert last_session(out)["interrupted"] is True


def test_sigterm_saves_exits_130_and_resumes(big_set, clean, tmp_path):
    """A scheduler's SIGTERM: exit 130, the resume hint, an output folder that --resume finishes."""
    out = tmp_path / "o"
    interrupt(big_set, out, signal.SIGTERM)
    saved = len(saved_face_ids(out / "parts"))
    assert 0 < saved < big_set[3]
    finish = dfscan(*run_args(big_set, out), "--resume")
    assert finish.wait(timeout=600) == 0, finish.stderr.read()
    assert last_session(out)["faces_scanned"] == big_set[3] - saved
    assert_equal_runs(clean, pq.read_table(out / "faces.parquet"), big_set[3])


def test_sigint_saves_and_says_how_to_resume(big_set, tmp_path):
    """Ctrl-C: exit 130 and the resume hint (the resume itself is tested with SIGTERM above)."""
    interrupt(big_set, tmp_path / "o", signal.SIGINT)
    assert saved_face_ids(tmp_path / "o" / "parts")


def test_existing_output_needs_resume_or_overwrite(big_set, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runner = CliRunner()
    res = runner.invoke(main, list(map(str, run_args(big_set, out))))
    assert res.exit_code == 1 and "--resume" in res.output and "--overwrite" in res.output
    res = runner.invoke(main, list(map(str, run_args(big_set, out))) + ["--resume"])
    assert res.exit_code == 1 and "no dfscan manifest" in res.output
    # --overwrite removes dfscan's own files only
    res = runner.invoke(main, list(map(str, run_args(big_set, out))) + ["--overwrite"])
    assert res.exit_code == 0 and (out / "faces.parquet").is_file()
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_with_other_settings_is_refused(big_set, tmp_path):
    out = tmp_path / "o"
    runner = CliRunner()
    args = list(map(str, run_args(big_set, out)))
    assert runner.invoke(main, args).exit_code == 0
    res = runner.invoke(main, args + ["--resume", "--threshold", "0.7"])
    assert res.exit_code == 1 and "threshold" in res.output
    res = runner.invoke(main, args + ["--resume"])
    assert res.exit_code == 0 and "already holds a complete run" in res.output

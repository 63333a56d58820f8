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

from _data import REALORFAKE, write_big_set

FACES_PER_IMAGE = 4


@pytest.fixture(scope="module")
def big_set(tmp_path_factory):
    """~2,200 faces: every Train and Val image of realorfake with four boxes each."""
    root = tmp_path_factory.mktemp("big")
    return (root, *write_big_set(root, FACES_PER_IMAGE))


def dfscan(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "scanner.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_args(big_set, out):
    root, ann, engine, _ = big_set
    return ["run", REALORFAKE, "--annotations", ann, "--engine", engine, "--out", out,
            "--batch-size", 32, "--part-rows", 128, "--quiet", "--allow-outside-paths"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(big_set, tmp_path):
    n_faces = big_set[3]
    clean = dfscan(*run_args(big_set, tmp_path / "clean"))
    assert clean.wait(timeout=600) == 0, clean.stderr.read()

    killed = dfscan(*run_args(big_set, tmp_path / "killed"))
    parts = tmp_path / "killed" / "parts"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 4:
        assert killed.poll() is None, killed.stderr.read()
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    saved = sum(pq.read_metadata(p).num_rows for p in parts.glob("part-*.parquet"))
    assert 0 < saved < n_faces
    assert not (tmp_path / "killed" / "faces.parquet").exists()

    resumed = dfscan(*run_args(big_set, tmp_path / "killed"), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert "resuming" in resumed.stderr.read()

    a = pq.read_table(tmp_path / "clean" / "faces.parquet")
    b = pq.read_table(tmp_path / "killed" / "faces.parquet")
    assert a.num_rows == b.num_rows == n_faces
    assert a.column("face_id").to_pylist() == b.column("face_id").to_pylist() == list(range(1, n_faces + 1))
    assert a.column("status").to_pylist() == b.column("status").to_pylist()
    np.testing.assert_allclose(a.column("score_fake").to_numpy(zero_copy_only=False),
                               b.column("score_fake").to_numpy(zero_copy_only=False), atol=1e-5)
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["faces"] == n_faces


def test_sigint_saves_and_says_how_to_resume(big_set, tmp_path):
    proc = dfscan(*run_args(big_set, tmp_path / "o"))
    parts = tmp_path / "o" / "parts"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = proc.stderr.read()
    assert "--resume" in err and "Traceback" not in err
    finish = dfscan(*run_args(big_set, tmp_path / "o"), "--resume")
    assert finish.wait(timeout=600) == 0
    assert pq.read_table(tmp_path / "o" / "faces.parquet").num_rows == big_set[3]


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

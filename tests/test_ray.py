"""``dfscan run --ray``: Ray workers give the rows a run here gives, face by face, whatever dies.

Ray is the optional extra ``dfscan[ray]``; the README's set-up (and so CI) installs it, and the
tests that need it skip themselves only where it is absent. They start a small local cluster of
their own (2 CPUs, so two CPU workers). The engine's scores vary from face to face, so equal
rows mean the same crops in the same order.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scanner.catalog import Catalog, load_catalog
from scanner.cli import main
from scanner.settings import RunSettings

from _data import MULTIFACE, REALORFAKE, assert_scores_spread, write_big_set


@pytest.fixture(scope="module")
def big_set(tmp_path_factory):
    return write_big_set(tmp_path_factory.mktemp("rayset"))


def run_args(big_set, out):
    ann, engine, _ = big_set
    return [str(a) for a in ("run", REALORFAKE, "--annotations", ann, "--engine", engine, "--out", out,
                             "--batch-size", 32, "--part-rows", 64, "--quiet", "--allow-outside-paths")]


@pytest.fixture(scope="module")
def reference(big_set, tmp_path_factory):
    """faces.parquet of a plain single-process run."""
    out = tmp_path_factory.mktemp("single") / "o"
    res = CliRunner().invoke(main, run_args(big_set, out))
    assert res.exit_code == 0, res.output
    return pq.read_table(out / "faces.parquet")


CRASH_TAG = "poison-"  # a worker that reads a file named so dies by SIGKILL (scanner.catalog.files.CRASH_ENV)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module; yields its address for drivers in other processes.
    Its workers inherit the crash trigger for files named ``poison-*``; no other test file is."""
    ray = pytest.importorskip("ray")
    from scanner.catalog.files import CRASH_ENV

    on_term = signal.getsignal(signal.SIGTERM)
    os.environ[CRASH_ENV] = CRASH_TAG
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        del os.environ[CRASH_ENV]
    signal.signal(signal.SIGTERM, on_term)  # Ray's own handler would abort pytest
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def assert_same_rows(a, b):
    assert_scores_spread(a.column("score_fake").to_pylist())
    assert a.column("face_id").to_pylist() == b.column("face_id").to_pylist()
    assert a.drop(["score_fake"]).equals(b.drop(["score_fake"]))  # boxes, labels, statuses, preds
    np.testing.assert_allclose(a.column("score_fake").to_numpy(zero_copy_only=False),
                               b.column("score_fake").to_numpy(zero_copy_only=False), atol=1e-5)


def scan_with_kills(pool, catalog, kill_after_s, after_first_shard=False):
    """Run ``pool.scan``; SIGKILL every worker process ``kill_after_s`` after the scan starts (or
    after the first shard is back, when every worker has a shard in hand). Returns the tables, the
    worker pids before and after, and how many shards had come back when the kill landed."""
    import ray

    pids = ray.get([a.pid.remote() for a in pool.actors])  # answered even by a busy worker
    tables, at_kill = [], []

    def kill():
        at_kill.append(len(tables))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(kill_after_s, kill)
    if not after_first_shard:
        timer.start()
    try:
        for table in pool.scan(catalog):
            tables.append(table)
            if not timer.is_alive() and not at_kill:
                timer.start()
    finally:
        timer.cancel()
    return tables, pids, ray.get([a.pid.remote() for a in pool.actors]), at_kill


def test_ray_run_equals_a_single_process_run(big_set, reference, cluster, tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(main, run_args(big_set, out) + ["--ray", "--workers", "2", "--shard-images", "32"])
    assert res.exit_code == 0, res.output
    assert "2 workers on CPU" in res.output
    faces = pq.read_table(out / "faces.parquet")
    assert faces.num_rows == big_set[2]
    assert_same_rows(reference, faces)
    assert faces.schema.equals(reference.schema, check_metadata=False)
    assert (out / "metrics.parquet").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["faces"] == big_set[2]
    assert manifest["settings"]["device"] == "cpu" and not (out / "parts").exists()


def test_killed_workers_cost_a_retry_never_a_face(big_set, reference, cluster):
    from scanner.run.distributed import RayOptions, RayScanner

    catalog = load_catalog(REALORFAKE, big_set[0], allow_outside=True)
    n_shards = -(-len(catalog.images) // 16)
    with RayScanner(big_set[1], RunSettings(batch_size=32), RayOptions(workers=2, shard_images=16)) as pool:
        tables, before, after, at_kill = scan_with_kills(pool, catalog, 0.3, after_first_shard=True)
    assert at_kill and at_kill[0] < n_shards  # both workers died mid-job, each with a shard in hand
    assert set(before).isdisjoint(after)  # Ray restarted them
    assert len(tables) == n_shards  # each shard re-run, none split: the retries sufficed
    ids = [f for t in tables for f in t.column("face_id").to_pylist()]
    assert Counter(ids) == Counter(list(catalog.faces))  # every face exactly once
    got = pa.concat_tables(tables).sort_by("face_id")
    assert_same_rows(reference, got.cast(reference.schema))


def test_shard_out_of_retries_is_split_and_finished(big_set, cluster):
    from scanner.run.distributed import RayOptions, RayScanner

    catalog = load_catalog(REALORFAKE, big_set[0], allow_outside=True)
    catalog = catalog.subset(list(catalog.images)[:192])
    opts = RayOptions(workers=1, shard_images=192, retries=0)
    with RayScanner(big_set[1], RunSettings(batch_size=32), opts) as pool:
        tables, before, after, _ = scan_with_kills(pool, catalog, 0.2)  # mid-shard: 768 faces take seconds
    assert before != after
    assert len(tables) >= 2  # the shard whose worker died came back in halves
    ids = [f for t in tables for f in t.column("face_id").to_pylist()]
    assert Counter(ids) == Counter(list(catalog.faces))
    assert {s for t in tables for s in t.column("status").to_pylist()} == {"ok"}


def test_an_image_that_kills_its_worker_every_time_is_worker_crashed(big_set, reference, cluster, tmp_path):
    """A real crash (SIGSEGV) each time one image is read: its faces end as worker_crashed, every
    other face is scanned once with the scores of a single-process run."""
    from scanner.run.distributed import RayOptions, RayScanner

    catalog = load_catalog(REALORFAKE, big_set[0], allow_outside=True)
    keep = list(catalog.images)[:12]
    poison = tmp_path / f"{CRASH_TAG}00001.jpg"
    poison.write_bytes(catalog.images[keep[5]].path.read_bytes())
    # the catalog's records are built on access: a changed one goes into a catalog of records
    images = {i: catalog.images[i] for i in keep}
    images[keep[5]].path = poison
    catalog = Catalog(images, {f: catalog.faces[f] for i in keep for f in images[i].face_ids},
                      catalog.annotations, has_labels=catalog.has_labels)
    with RayScanner(big_set[1], RunSettings(batch_size=32), RayOptions(workers=2, shard_images=6, retries=0)) as pool:
        tables = list(pool.scan(catalog))
    got = pa.concat_tables(tables).sort_by("face_id")
    assert Counter(got.column("face_id").to_pylist()) == Counter(list(catalog.faces))  # each face once
    crashed = {f for f, s in zip(got.column("face_id").to_pylist(), got.column("status").to_pylist()) if s != "ok"}
    assert crashed == set(catalog.images[keep[5]].face_ids)
    assert set(got.filter(pc.is_in(got.column("face_id"), pa.array(sorted(crashed))))
               .column("status").to_pylist()) == {"worker_crashed"}
    ok = got.filter(pc.equal(got.column("status"), "ok"))
    ref = reference.filter(pc.is_in(reference.column("face_id"), ok.column("face_id")))
    assert_same_rows(ref, ok.cast(ref.schema))


def test_resume_after_the_driver_is_killed(big_set, reference, cluster, tmp_path):
    import ray

    out = tmp_path / "o"
    args = [sys.executable, "-m", "scanner.cli", *run_args(big_set, out), "--ray", "--ray-address", cluster,
            "--workers", "2", "--shard-images", "16"]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / "parts").glob("part-*.parquet"))) < 3:
        assert driver.poll() is None, driver.stderr.read()
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    saved = sum(pq.read_metadata(p).num_rows for p in (out / "parts").glob("part-*.parquet"))
    assert 0 < saved < big_set[2]

    # the killed driver's workers go with its job, so the two CPUs are free for the next one
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    faces = pq.read_table(out / "faces.parquet")
    assert faces.num_rows == big_set[2]
    assert_same_rows(reference, faces)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2  # no worker outlived its driver


def test_without_ray_nothing_of_ray_is_imported(big_set, tmp_path):
    code = ("import sys; from scanner.cli import main; "
            f"main(['run', {str(MULTIFACE / 'Images')!r}, '--engine', {str(big_set[1])!r}, "
            f"'--out', {str(tmp_path / 'o')!r}, '--quiet'], standalone_mode=False); "
            "print('ray' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_ray_options_need_ray(big_set, tmp_path):
    res = CliRunner().invoke(main, run_args(big_set, tmp_path / "o") + ["--workers", "2"])
    assert res.exit_code == 1 and "--workers only apply with --ray" in res.output


def test_ray_scans_videos_as_a_run_here_does(big_set, cluster, tmp_path):
    """Two clips, each scanned whole on one of two workers: the same faces.parquet and
    videos.parquet rows (order included) as a run without Ray."""
    from _videos import FACE_CLIP, face_frames, write_clip

    from scanner.detect.detect import DetectSettings
    from scanner.run.distributed import RayOptions
    from scanner.run.job import run_job
    from scanner.run.videos import VideoSettings

    if not FACE_CLIP.is_file():
        pytest.skip(f"needs {FACE_CLIP}")
    frames = face_frames(12)
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", frames)
    write_clip(clips / "b.webm", frames[4:], fps=25, codec="libvpx-vp9")
    tables = {}
    for name, ray_opts in (("here", None), ("ray", RayOptions(workers=2))):
        summary = run_job(clips, tmp_path / name, big_set[1], settings=RunSettings(batch_size=8, device="cpu"),
                          progress=False, log=lambda m: None, ray=ray_opts, detect=DetectSettings(),
                          videos=VideoSettings(frames_per_video=3))
        tables[name] = (pq.read_table(summary.faces_path), pq.read_table(tmp_path / name / "videos.parquet"))
    (here, here_videos), (got, got_videos) = tables["here"], tables["ray"]
    assert sorted(set(got.column("file").to_pylist())) == ["a.mp4", "b.webm"] and got.num_rows == 6
    assert set(got.column("status").to_pylist()) == {"ok"}
    assert_same_rows(here, got)
    cols = [c for c in here_videos.column_names if c != "seconds"]
    assert got_videos.select(cols).equals(here_videos.select(cols))

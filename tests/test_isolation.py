"""Decoding in a supervised child process: an image that kills the decoder costs its own faces.

The crashes are real: with ``DFSCAN_CRASH_ON`` (``scanner.catalog.files.CRASH_ENV``) set to
``poison-``, a process that reads a file named ``poison-*`` dies by SIGKILL where a decoder crash
would take it. Runs that need it are separate ``dfscan run`` processes: the decoding process is
forked by a forkserver that keeps the environment it started with. A parent that read an image
file itself would die too, so a poisoned run that exits 0 shows it never did.

The set: realorfake images under new names (symlinks), its real face box each and a second box
on every third image, scanned with the 64-px engine whose scores follow the crop. The issue's
1,000-image run takes 40-90 s here (two runs, as the shared machine's load goes), so it is
``benchmarks/isolation.py crash``; these tests use 200 images (264 faces, 9 batches of 32).
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scanner.catalog.files import CRASH_ENV
from scanner.cli import main

from _data import REALORFAKE, assert_scores_spread, write_coco

CRASH_TAG = "poison-"
N_IMAGES = 200
POISONED = (36, 150)  # images with two faces each, far apart, each in a batch with others


def write_set(root, n_images, poisoned=()):
    """``n_images`` realorfake images as symlinks (``poison-*`` for the indices in ``poisoned``);
    image k and its faces get the same ids in every set, so sets compare face by face."""
    src = []
    for split in ("Train", "Val", "Test-Dev"):
        ann = json.loads((REALORFAKE / f"{split}_poly.json").read_text())
        boxes = {a["image_id"]: a for a in ann["annotations"]}
        src += [(REALORFAKE / im["file_name"], boxes[im["id"]]) for im in ann["images"] if im["id"] in boxes]
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for k in range(n_images):
        path, face = src[k % len(src)]
        name = f"{CRASH_TAG if k in poisoned else 'img-'}{k:05d}.jpg"
        (root / "img" / name).symlink_to(path)
        images.append({"id": k + 1, "file_name": name})
        x, y, w, h = face["bbox"]
        boxes = [face["bbox"]] + ([[x + w / 4, y + h / 4, w / 2, h / 2]] if k % 3 == 0 else [])
        for j, box in enumerate(boxes):
            anns.append({"id": 2 * k + j + 1, "image_id": k + 1, "bbox": box,
                         "category_id": face["category_id"]})
    return write_coco(root / "poly.json", images, anns)


def run_args(root, ann, engine, out, *extra):
    return [str(a) for a in ("run", root / "img", "--annotations", ann, "--engine", engine, "--out", out,
                             "--batch-size", 32, "--part-rows", 32, "--quiet", *extra)]


def dfscan(args, crash=False, **kw):
    env = {**os.environ, **({CRASH_ENV: CRASH_TAG} if crash else {})}
    return subprocess.Popen([sys.executable, "-m", "scanner.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def engine(engines_dir):
    return engines_dir / "m.onnx"


@pytest.fixture(scope="module")
def poison_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("poisonset")
    return root, write_set(root, N_IMAGES, POISONED)


@pytest.fixture(scope="module")
def reference(poison_set, engine, tmp_path_factory):
    """faces.parquet of the set scanned without the crash trigger (isolated, the default)."""
    out = tmp_path_factory.mktemp("ref") / "o"
    res = CliRunner().invoke(main, run_args(*poison_set, engine, out))
    assert res.exit_code == 0, res.output
    table = pq.read_table(out / "faces.parquet")
    assert_scores_spread(table.column("score_fake").to_pylist())
    assert json.loads((out / "manifest.json").read_text())["settings"]["isolate_decoder"] is True
    return table


def culprit_faces(table, indices) -> set[int]:
    return {f for f, i in zip(table.column("face_id").to_pylist(), table.column("image_id").to_pylist())
            if i - 1 in indices}


def assert_rows_as_reference(got, ref, crashed: set[int]):
    """Every face once, in order; ``crashed`` faces are decoder_crashed, every other face is the
    reference's row with its score."""
    assert got.column("face_id").to_pylist() == ref.column("face_id").to_pylist()
    status = dict(zip(got.column("face_id").to_pylist(), got.column("status").to_pylist()))
    assert {f for f, s in status.items() if s != "ok"} == crashed
    if crashed:
        assert {status[f] for f in crashed} == {"decoder_crashed"}
        errors = {e for f, e in zip(got.column("face_id").to_pylist(), got.column("error").to_pylist())
                  if f in crashed}
        assert errors == {"the decoding process died of SIGKILL each time it read this image; "
                          "the rest of the run went on"}
    ok = [k for k, f in enumerate(got.column("face_id").to_pylist()) if f not in crashed]
    a, b = got.take(ok), ref.take(ok)
    assert_scores_spread(a.column("score_fake").to_pylist())
    np.testing.assert_allclose(a.column("score_fake").to_numpy(), b.column("score_fake").to_numpy(), atol=1e-5)
    keep = ["face_id", "image_id", "status", "label"]
    assert a.select(keep).equals(b.select(keep))


def test_a_clean_isolated_run_equals_an_in_process_run(poison_set, engine, reference, tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(main, run_args(*poison_set, engine, out, "--no-isolate"))
    assert res.exit_code == 0, res.output
    got = pq.read_table(out / "faces.parquet")
    assert got.num_rows == reference.num_rows > N_IMAGES
    assert got.equals(reference)  # same batches, same crops: the very same rows, bit for bit
    assert json.loads((out / "manifest.json").read_text())["settings"]["isolate_decoder"] is False


def test_poisoned_images_cost_their_own_faces_and_nothing_else(poison_set, engine, reference, tmp_path):
    out = tmp_path / "o"
    proc = dfscan(run_args(*poison_set, engine, out), crash=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err  # -9 would mean the parent read a poisoned file itself
    crashed = culprit_faces(reference, POISONED)
    assert len(crashed) == 4  # two faces on each poisoned image
    assert_rows_as_reference(pq.read_table(out / "faces.parquet"), reference, crashed)


def test_two_poisoned_images_in_the_first_batch(engine, reference, tmp_path):
    """The very first image and another one of the first batch kill the decoder."""
    root, poisoned = tmp_path / "set", (0, 2)
    ann = write_set(root, 40, poisoned)
    out = tmp_path / "o"
    proc = dfscan(run_args(root, ann, engine, out), crash=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    ref = reference.slice(0, pq.read_metadata(out / "faces.parquet").num_rows)
    assert ref.column("image_id").to_pylist()[-1] == 40  # the same first 40 images
    assert_rows_as_reference(pq.read_table(out / "faces.parquet"), ref, culprit_faces(ref, poisoned))


def group_gone(pgid, timeout_s=30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig,to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c-to-the-process-group", "sigterm-to-dfscan"])
def test_interrupted_isolated_run_stops_cleanly_and_resumes(poison_set, engine, reference, tmp_path, sig, to_group):
    """Ctrl-C reaches the decoding process too (the terminal signals the whole group); it must
    neither die noisily nor be taken for a crash. Then --resume finishes the run."""
    out = tmp_path / "o"
    args = run_args(*poison_set, engine, out)
    proc = dfscan(args, start_new_session=True)  # its own process group, as a shell job has
    parts = out / "parts"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert group_gone(proc.pid), "a process of the run outlived it"
    saved = [s for p in parts.glob("part-*.parquet") for s in pq.read_table(p).column("status").to_pylist()]
    assert 0 < len(saved) < reference.num_rows and set(saved) == {"ok"}

    resumed = dfscan(args + ["--resume"])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming" in err
    assert_rows_as_reference(pq.read_table(out / "faces.parquet"), reference, set())


def test_the_decoding_process_ignores_ctrl_c_and_sigterm(poison_set, engine):
    """A terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the group; the
    decoding process goes on until the parent, which alone decides, stops it."""
    from engines.backends import load_engine
    from scanner.catalog import load_catalog
    from scanner.pipeline.cropper import CroppedBatch
    from scanner.pipeline.isolation import Supervisor
    from scanner.settings import RunSettings

    catalog = load_catalog(poison_set[0] / "img", poison_set[1])
    ids = list(catalog.images)[:6]
    sup = Supervisor(catalog, load_engine(engine, "cpu").config, RunSettings(batch_size=32))
    try:
        sup.start(ids)
        assert sup.child.recv()[0] == "ready"  # its signal handlers are set by now
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(sup.child.proc.pid, sig)
        got = list(sup.scan_list(ids, ids))
        assert all(isinstance(b, CroppedBatch) for b in got), got  # a str would be its death
        assert sup.child.proc.is_alive()
        assert sorted(sup.delivered) == sorted(f for i in ids for f in catalog.images[i].face_ids)
    finally:
        sup.close()
    assert sup.child is None


@pytest.mark.parametrize("batch", [[], ["--batch-size", "1000"]], ids=["as-given", "fitted"])
def test_a_checkpoint_run_starts_decoding_before_its_engine_opens(poison_set, engines_dir, reference,
                                                                  tmp_path, monkeypatch, batch):
    """With a checkpoint (the default run), the decoding child starts, and builds its DALI
    pipeline, while the engine is chosen and opened, from the config in the checkpoint's header;
    its first batch then waits for nothing, and the scan uses that child: no second one starts,
    also where the batch is lowered to the pixel budget (a settings copy made before the run
    resolves its threshold). The rows are the reference's."""
    import multiprocessing

    import scanner.pipeline.isolation as isolation
    import scanner.run.job as job

    seen, starts, real, real_start = [], [], job.open_engine, isolation.Supervisor.start

    def open_engine(*args, **kwargs):  # the real one, noting which children are already running
        seen.extend(p.name for p in multiprocessing.active_children())
        return real(*args, **kwargs)

    def start(self, *args, **kwargs):  # the real one, counted
        starts.append(self)
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(job, "open_engine", open_engine)
    monkeypatch.setattr(isolation.Supervisor, "start", start)
    out = tmp_path / "o"
    res = CliRunner().invoke(main, run_args(*poison_set, engines_dir / "m.pt", out, "--precision", "fp32", *batch))
    assert res.exit_code == 0, res.output
    assert "dfscan-decoder" in seen
    assert len(set(starts)) == 1  # one decoding child (a restart after a crash is the same one)
    got, keep = pq.read_table(out / "faces.parquet"), ["face_id", "image_id", "status", "label"]
    assert got.select(keep).equals(reference.select(keep))  # every face, in order, decoded
    # the checkpoint's own engine (the faster runtime here), the reference's ONNX Runtime one
    np.testing.assert_allclose(got.column("score_fake").to_numpy(), reference.column("score_fake").to_numpy(),
                               atol=1e-3)

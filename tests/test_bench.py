"""dfscan bench: the resolution parser, tiny real sweeps, and agreement with ``dfscan run``."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from engines.errors import DfscanError
from scanner.bench.bench import parse_faces_per_image, parse_resolutions
from scanner.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REALORFAKE = DATA / "realorfake"
needs_data = pytest.mark.skipif(not REALORFAKE.is_dir(), reason="../shared/data/realorfake is absent")


# --- the --res parser --------------------------------------------------------------------------

def test_range_is_powers_of_two_plus_native():
    assert parse_resolutions("32..1024", 224) == [32, 64, 128, 224, 256, 512, 1024]
    assert parse_resolutions("32..1024", 299) == [32, 64, 128, 256, 299, 512, 1024]
    assert parse_resolutions("32..128", 224) == [32, 64, 128]  # native outside the range
    assert parse_resolutions("48..200", 224) == [48, 64, 128, 200]  # odd ends kept
    assert parse_resolutions("224..224", 224) == [224]


def test_lists_and_defaults():
    assert parse_resolutions("64,128,224", 299) == [64, 128, 224]
    assert parse_resolutions(" 224, 64,64 ", 299) == [64, 224]
    assert parse_resolutions("native,64", 299) == [64, 299]
    assert parse_resolutions(None, 299) == [299]
    assert parse_resolutions("", 224) == [224]


@pytest.mark.parametrize("text", ["abc", "32..", "..64", "1024..32", "8", "64,abc", "1..2..3",
                                  "0..64", "-64", "64.5", "64,100000"])
def test_bad_resolutions_are_clear_errors(text):
    with pytest.raises(DfscanError, match=r"--res"):
        parse_resolutions(text, 224)


def test_faces_per_image():
    assert parse_faces_per_image("3") == (3, 3)
    assert parse_faces_per_image("1..8") == (1, 8)
    for bad in ("0", "5..2", "x", "1..100"):
        with pytest.raises(DfscanError, match="--faces-per-image"):
            parse_faces_per_image(bad)


def test_bad_res_on_the_command_line_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--res", "1024..32", "--synthetic", "2", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "runs downwards" in result.output and "Traceback" not in result.output


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded MobileNetV2 (native size 64) whose scores differ from face to face (an untrained one's do not:
    its activations saturate ReLU6, so every face gets the same score)."""
    import torch

    from engines.checkpoint import save_checkpoint
    from engines.models import create_model, get_model_config

    torch.manual_seed(0)
    model = create_model("mobilenetv2")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(12, 3, 64, 64))  # batch-norm statistics from data: outputs stay finite
        torch.nn.init.normal_(model.classifier[1].weight, std=0.05)
    model.eval()
    config = get_model_config("mobilenetv2").with_input_size(64)  # "trained at 64": a fast native size
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "mnv2.pt", model, config)


@pytest.fixture(scope="module")
def mini_split(tmp_path_factory):
    """The first 12 Test-Dev images (real and fake) as split 'Mini' of an OpenForensics root."""
    if not REALORFAKE.is_dir():
        pytest.skip("../shared/data/realorfake is absent")
    root = tmp_path_factory.mktemp("mini")
    coco = json.loads((REALORFAKE / "Test-Dev_poly.json").read_text())
    images = coco["images"][:12]
    keep = {im["id"] for im in images}
    (root / "Images" / "Mini").mkdir(parents=True)
    for im in images:
        shutil.copy(REALORFAKE / im["file_name"], root / "Images" / "Mini" / Path(im["file_name"]).name)
        im["file_name"] = f"Images/Mini/{Path(im['file_name']).name}"
    coco["images"] = images
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    (root / "Mini_poly.json").write_text(json.dumps(coco))
    return root


def _bench(args, out):
    # A real process per sweep, as a user's bench runs (it also keeps the pytest process's own
    # runtimes, threads and signal handlers out of the sweep).
    done = subprocess.run([sys.executable, "-m", "scanner.cli", "bench", *args, "--device", "cpu", "--quiet",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return pq.read_table(out / "bench.parquet")


def _check_well_formed(table, out, resolutions, with_baseline=True):
    from scanner.bench.results import BENCH_SCHEMA
    from engines.files import read_settings

    assert table.schema.names == BENCH_SCHEMA.names
    rows = table.to_pylist()
    pipelines = {"dfscan", "decode_only"} | ({"baseline"} if with_baseline else set())
    assert {(r["res"], r["pipeline"]) for r in rows} == {(res, p) for res in resolutions for p in pipelines}
    for r in rows:
        assert r["images"] > 0 and r["faces"] > 0 and r["total_s"] > 0 and r["images_per_s"] > 0
        assert r["cpu_cores"] >= 1 and r["cpu_model"] and r["device"] == "cpu"
        assert r["peak_rss_mb"] > 0
        if r["pipeline"] != "decode_only":
            assert r["faces_per_s"] > 0 and r["infer_s"] > 0 and r["mean_batch_ms"] > 0
            assert r["p95_batch_ms"] >= r["mean_batch_ms"] * 0.5
    for r in (r for r in rows if r["pipeline"] == "dfscan"):
        assert r["dali_s"] > 0 and r["read_s"] >= 0 and r["backend"] in ("onnx", "openvino")  # auto: raced
        if with_baseline:
            assert r["speedup_vs_baseline"] > 0
    meta = read_settings(out / "bench.parquet")
    assert meta["versions"]["torch"] and meta["versions"]["nvidia-dali-cuda120"]
    assert meta["machine"]["cpu_cores"] >= 1 and meta["resolutions"] == resolutions
    assert "dali_s" in meta["stages"]
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# --- sweeps -------------------------------------------------------------------------------------

@needs_data
def test_tiny_sweep_realorfake(tmp_path, checkpoint, mini_split):
    table = _bench(["--res", "32,48", "--engine", str(checkpoint), "--data", str(mini_split),
                    "--split", "Mini", "--max-faces", "6", "--batch-size", "4", "--workers", "1"], tmp_path)
    _check_well_formed(table, tmp_path, [32, 48])
    rows = table.to_pylist()
    assert all(r["faces"] == 6 for r in rows)
    for r in rows:
        if r["pipeline"] != "decode_only":
            assert 0 <= r["accuracy"] <= 1 and not math.isnan(r["roc_auc"])
        if r["pipeline"] == "baseline":  # same model, same crops: scores agree closely
            assert r["score_mae_vs_dfscan"] < 0.05


def test_tiny_sweep_synthetic(tmp_path, checkpoint):
    table = _bench(["--res", "32,64", "--engine", str(checkpoint), "--synthetic", "3",
                    "--faces-per-image", "2..4", "--batch-size", "5", "--workers", "0"], tmp_path)
    _check_well_formed(table, tmp_path, [32, 64])
    rows = table.to_pylist()
    dfscan = [r for r in rows if r["pipeline"] == "dfscan"]
    assert all(r["images"] == 3 and 6 <= r["faces"] <= 12 for r in dfscan)
    assert all(r["dataset"].startswith("synthetic-3") for r in rows)


@needs_data
def test_native_accuracy_equals_dfscan_run(tmp_path, checkpoint, mini_split):
    """bench's dfscan accuracy at the native size is what ``dfscan run`` reports, same engine."""
    runner = CliRunner()
    onnx = tmp_path / "mnv2.onnx"
    assert runner.invoke(main, ["export", str(checkpoint), "--format", "onnx", "--out", str(onnx)]).exit_code == 0
    result = runner.invoke(main, ["run", str(mini_split / "Images" / "Mini"), "--engine", str(onnx),
                                  "--out", str(tmp_path / "run"), "--batch-size", "8", "--device", "cpu",
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()[0]
    table = _bench(["--engine", str(checkpoint), "--data", str(mini_split), "--split", "Mini",
                    "--batch-size", "8", "--no-baseline"], tmp_path / "bench")
    row = [r for r in table.to_pylist() if r["pipeline"] == "dfscan"][0]
    assert row["res"] == 64 and row["faces"] == metrics["n"]
    assert row["accuracy"] == metrics["accuracy"]
    assert row["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-12)
    assert 0 < metrics["roc_auc"] < 1  # scores that differ, so the comparison means something


@needs_data
def test_baseline_crops_match_dali_crops(mini_split):
    """PIL (baseline) and DALI (dfscan) crops of the same faces differ by well under one grey level."""
    from engines.models import get_model_config
    from scanner.bench.baseline import FaceCrops
    from scanner.catalog import load_catalog
    from scanner.settings import RunSettings
    from scanner.pipeline.cropper import iter_crops

    catalog = load_catalog(mini_split / "Images" / "Mini")
    config = get_model_config("mobilenetv2").with_input_size((72, 56))
    std = np.array(config.std, dtype=np.float32).reshape(3, 1, 1) * 255
    for batch in iter_crops(catalog, config, RunSettings(batch_size=5)):
        for ids, crops in batch.pieces:
            items = [(f, catalog.images[catalog.faces[f].image_id].path, catalog.faces[f].bbox) for f in ids]
            pil = FaceCrops(items, config)
            for k in range(len(ids)):
                diff = np.abs(pil[k][0].numpy() - crops[k]) * std
                assert diff.shape == (3, 72, 56) and diff.mean() < 0.5


def test_engine_must_be_a_checkpoint(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not used")
    result = CliRunner().invoke(main, ["bench", "--engine", str(onnx), "--synthetic", "2", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "checkpoint (.pt)" in result.output


def test_data_or_synthetic_is_required(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--synthetic" in result.output
    result = CliRunner().invoke(main, ["bench", "--data", str(tmp_path), "--faces-per-image", "3",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--faces-per-image shapes a --synthetic set" in result.output


# --- memory bounded at every resolution; the limit beside the measurement -------------------------

def test_batch_for_keeps_a_batch_within_the_pixel_budget():
    from scanner.settings import BATCH_PIXELS, RunSettings, batch_for

    assert BATCH_PIXELS == 64 * 224 * 224
    assert batch_for(224, 64) == 64 and batch_for((224, 224), 16) == 16  # never raised
    assert batch_for(32, 64) == 64
    assert batch_for(256, 64) == 49 and batch_for(512, 64) == 12 and batch_for(1024, 64) == 3
    assert batch_for((4096, 4096), 64) == 1  # at least one face
    assert batch_for((100, 50), 10, budget=100 * 50 * 3) == 3
    said = []
    s = RunSettings(batch_size=64)
    assert s.fitted(224, said.append) is s and not said
    fitted = s.fitted(1024, said.append)
    assert fitted.batch_size == 3 and s.batch_size == 64  # a copy: the caller's settings stay
    assert len(said) == 1 and "64 -> 3" in said[0]


class _Recorder:
    """A real engine whose batch sizes are written down."""

    def __init__(self, engine):
        self.engine, self.sizes = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def infer(self, batch):
        self.sizes.append(len(batch))
        return self.engine.infer(batch)


@needs_data
def test_run_lowers_the_batch_to_the_budget_and_says_so(tmp_path, checkpoint, mini_split):
    from engines.backends import load_engine
    from engines.export import export_onnx, model_from_source
    from engines.files import read_settings
    from scanner.catalog import load_catalog
    from scanner.run.job import run_job
    from scanner.run.scan import scan
    from scanner.settings import RunSettings

    onnx = export_onnx(*model_from_source(checkpoint), tmp_path / "m.onnx")  # input 64x64
    budget = 64 * 64 * 3  # three faces per batch
    images = mini_split / "Images" / "Mini"
    engine = _Recorder(load_engine(onnx))
    tables = list(scan(load_catalog(images), engine, RunSettings(batch_size=8, batch_pixels=budget)))
    assert sum(t.num_rows for t in tables) == 12 and max(engine.sizes) == 3
    said = []
    summary = run_job(images, tmp_path / "run", onnx, settings=RunSettings(batch_size=8, batch_pixels=budget),
                      progress=False, log=said.append)
    assert [m for m in said if "batch size 8 -> 3" in m]
    assert read_settings(summary.faces_path)["batch_size"] == 3


@needs_data
def test_limit_columns_and_batch_per_resolution(tmp_path, checkpoint, mini_split):
    from engines.files import read_settings

    result = CliRunner().invoke(main, ["bench", "--res", "32,256", "--engine", str(checkpoint), "--data",
                                       str(mini_split), "--split", "Mini", "--max-faces", "6", "--batch-size",
                                       "64", "--no-baseline", "--device", "cpu", "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "batch size 64 -> 49 faces for 256x256" in result.output
    table = pq.read_table(tmp_path / "bench.parquet")
    _check_well_formed(table, tmp_path, [32, 256], with_baseline=False)
    rows = {(r["res"], r["pipeline"]): r for r in table.to_pylist()}
    assert rows[32, "dfscan"]["batch_size"] == 64 and rows[256, "dfscan"]["batch_size"] == 49
    assert rows[256, "decode_only"]["batch_size"] == 49  # decode-only runs the scan's batches
    for res in (32, 256):
        d, c = rows[res, "dfscan"], rows[res, "decode_only"]
        assert d["precision"] == "fp32" and d["engine_faces_per_s"] > 0
        assert d["decode_faces_per_s"] == pytest.approx(c["images_per_s"] * c["faces"] / c["images"])
        limit = 1 / (1 / d["decode_faces_per_s"] + 1 / d["engine_faces_per_s"])  # CPU: the stages add up
        assert d["limit_faces_per_s"] == pytest.approx(limit)
        assert d["efficiency"] == pytest.approx(d["faces_per_s"] / d["limit_faces_per_s"])
        # the ceiling with the crops counted: the producer pass (read + DALI graph) in place of decode alone
        assert d["producer_faces_per_s"] == pytest.approx(d["faces"] / (d["read_s"] + d["dali_s"]))
        pipeline = 1 / (1 / d["producer_faces_per_s"] + 1 / d["engine_faces_per_s"])
        assert d["pipeline_limit_faces_per_s"] == pytest.approx(pipeline)
        assert d["pipeline_efficiency"] == pytest.approx(d["faces_per_s"] / pipeline)
        # one figure per resolution (own RSS + the children's PSS), shared by its rows; not comparable
        # with peak_rss_mb, which sums RSS and so counts pages shared with forked workers again
        assert d["res_peak_rss_mb"] > 0 and d["peak_rss_mb"] > 0 and c["res_peak_rss_mb"] == d["res_peak_rss_mb"]
    limits = read_settings(tmp_path / "bench.parquet")["limits"]
    assert {"limit_faces_per_s", "producer_faces_per_s", "pipeline_limit_faces_per_s"} <= set(limits)


def test_limit_formula():
    from scanner.bench.bench import limit_faces_per_s

    assert limit_faces_per_s(100.0, 100.0, "cpu") == pytest.approx(50.0)
    assert limit_faces_per_s(100.0, 300.0, "gpu") == 100.0
    assert math.isnan(limit_faces_per_s(math.nan, 10.0, "cpu")) and math.isnan(limit_faces_per_s(0.0, 10.0, "cpu"))


@needs_data
def test_each_resolution_is_saved_before_the_next_starts(tmp_path, checkpoint, mini_split):
    """Killed the way the OOM killer kills (SIGKILL) during the second resolution, the sweep
    leaves a whole bench.parquet with the first one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "scanner.cli", "bench", "--res", "32,1024", "--engine",
                             str(checkpoint), "--data", str(mini_split), "--split", "Mini", "--max-faces", "6",
                             "--no-baseline", "--device", "cpu", "--quiet", "--out", str(out)],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "bench.parquet").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        err = proc.communicate()[1].decode(errors="replace")
    assert still_running, "the sweep ended before any bench.parquet appeared: " + err[-2000:]
    table = pq.read_table(out / "bench.parquet")
    assert {(r["res"], r["pipeline"]) for r in table.to_pylist()} == {(32, "dfscan"), (32, "decode_only")}
    assert not [p.name for p in out.iterdir() if p.name != "bench.parquet" and p.suffix == ".parquet"]


def test_bf16_sweep_runs_openvino_in_bf16_or_says_why_not(tmp_path, checkpoint, mini_split):
    from engines.backends.openvino_backend import bf16_native

    args = ["--res", "32", "--engine", str(checkpoint), "--data", str(mini_split), "--split", "Mini",
            "--max-faces", "6", "--batch-size", "4", "--no-baseline", "--precision", "bf16"]
    if not bf16_native():
        done = subprocess.run([sys.executable, "-m", "scanner.cli", "bench", *args, "--device", "cpu", "--quiet",
                               "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
        assert done.returncode != 0 and "no native bf16" in done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        return
    table = _bench(args, tmp_path)
    _check_well_formed(table, tmp_path, [32], with_baseline=False)
    dfscan = [r for r in table.to_pylist() if r["pipeline"] == "dfscan"]
    assert [(r["backend"], r["precision"], r["faces"]) for r in dfscan] == [("openvino", "bf16", 6)]
    from engines.files import read_settings

    assert "openvino bf16 (the fp32 export run in bf16)" in read_settings(tmp_path / "bench.parquet")["notes"]


@needs_data
def test_the_timed_scan_starts_with_its_decoding_child_ready(tmp_path, checkpoint, mini_split, monkeypatch):
    """bench times a scan as a checkpoint's run has it: the decoding child started and its DALI
    pipeline built before the clock starts (a run overlaps that with opening its engine); the
    rows are every face's."""
    import scanner.bench.timing as timing
    from scanner.catalog import load_catalog, split_paths
    from scanner.run.engine import open_engine
    from scanner.settings import RunSettings

    seen, real = [], timing.scan

    def scan(*args, decoder=None, **kwargs):  # the real one, noting whether its child was ready
        seen.append(decoder is not None and decoder.child is not None and decoder.child.data.poll(0))
        return real(*args, decoder=decoder, **kwargs)

    monkeypatch.setattr(timing, "scan", scan)
    catalog = load_catalog(*split_paths(mini_split, "Mini"))
    settings = RunSettings(batch_size=4, device="cpu", precision="fp32")
    engine = open_engine(str(checkpoint), settings, log=lambda m: None)[0]
    timed = timing.time_scan(catalog, engine, settings, tmp_path / "o", {})
    assert seen == [True]
    assert timed.faces.num_rows == 12 and set(timed.faces.column("status").to_pylist()) == {"ok"}

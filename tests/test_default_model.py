"""The bundled default model: loads with no arguments, scores Test-Dev as the README says,
and ``dfscan run`` scans the shipped samples with it."""
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from engines.checkpoint import load_checkpoint
from scanner.cli import main
from scanner.run.engine import DEFAULT_ENGINE, open_engine
from scanner.settings import RunSettings

from _data import REALORFAKE

# The README's figures for engines/default/mobilenetv2.pt on realorfake Test-Dev (its stored threshold)
README_TEST_DEV_AUC = 0.983
README_TEST_DEV_ACC = 0.918
SAMPLES = DEFAULT_ENGINE.parents[2] / "scanner" / "samples"


from engines.backends.openvino_backend import bf16_native  # noqa: E402

DEFAULT_PRECISIONS = ("fp32", "bf16") if bf16_native() else ("fp32",)

def test_default_model_is_bundled_small_and_loads_with_no_arguments():
    assert DEFAULT_ENGINE.is_file()
    assert DEFAULT_ENGINE.stat().st_size < 12 * 2**20  # fp32: fp16 moved scores by up to 0.008
    engine, path, choice = open_engine(None, RunSettings(device="cpu"), log=lambda m: None)
    assert path == DEFAULT_ENGINE and engine.config.arch == "mobilenetv2"
    # fast by default: a compiled CPU engine, not eager torch (INT8 only behind its gate)
    # bf16 (gated by the record shipped beside the model) where the CPU runs it natively, else fp32
    assert choice.precision in DEFAULT_PRECISIONS and choice.backend in ("openvino", "onnx")
    assert engine.name == choice.backend
    # Its INT8 file ships beside it, but moved Val scores too far (p95 |Δ| 0.145 > 0.05): fp32 by
    # default, with the reason; `--precision int8` uses the shipped file without calibration data.
    assert "INT8 failed the accuracy gate" in choice.reason and "p95 |Δscore|" in choice.reason
    gate = choice.record["build"]["gate"] if "gate" in choice.record.get("build", {}) else None
    int8 = open_engine(None, RunSettings(device="cpu", precision="int8"), log=lambda m: None)[2]
    assert int8.precision == "int8" and int8.record["build"]["gate"]["source"] == "shipped"
    assert int8.record["build"]["gate"]["delta_p95"] > 0.05 and (gate is None or gate["delta_p95"] <= 0.05)
    model, config, payload = load_checkpoint(DEFAULT_ENGINE)
    assert config.input_size == (224, 224) and config.crop_margin == 1.3
    assert payload["extra"]["settings"]["val_split"] == "Val"  # chosen on Val, not a test split
    # it carries the threshold the balanced rule picks on Val, as `dfscan train` stores one
    assert config.threshold_rule == "balanced" and payload["extra"]["threshold"]["split"] == "Val"
    assert 0.5 < config.threshold < 1


@pytest.mark.skipif(not REALORFAKE.is_dir(), reason="needs ../shared/data/realorfake")
def test_default_model_scores_test_dev_as_the_readme_says(tmp_path):
    from engines.files import read_settings

    # the README's figures are fp32's: eval takes run's engine options (the default may be bf16)
    result = CliRunner().invoke(main, ["eval", "--data", str(REALORFAKE), "--split", "Test-Dev", "--precision",
                                       "fp32", "--out", str(tmp_path), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert read_settings(tmp_path / "faces.parquet")["precision"] == "fp32"
    row = pq.read_table(tmp_path / "metrics.parquet").to_pylist()[0]
    assert row["n"] == 110
    # no --threshold: the run decides at the model's own, and says so
    assert row["threshold_origin"] == "model"
    assert row["threshold"] == pytest.approx(load_checkpoint(DEFAULT_ENGINE)[1].threshold)
    assert row["roc_auc"] == pytest.approx(README_TEST_DEV_AUC, abs=0.001)
    assert row["accuracy"] >= README_TEST_DEV_ACC - 0.01


def test_default_run_builds_its_engine_once_and_reuses_it(tmp_path):
    """No --engine: the bundled checkpoint becomes an OpenVINO engine in the cache, named in the
    run's metadata; a second run reuses the same file; fp32 scores equal eager torch fp32 (1e-3);
    bf16 (the default where the CPU runs bf16) ranks Test-Dev within 0.005 ROC-AUC of fp32."""
    import json
    import os

    import numpy as np

    from _data import assert_scores_spread
    from engines.files import read_settings

    args = ["run", str(REALORFAKE / "Images" / "Test-Dev"), "--device", "cpu", "--quiet", "--no-report"]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    meta = read_settings(tmp_path / "a" / "faces.parquet")
    cached = meta["engine_file"]
    assert meta["precision"] in DEFAULT_PRECISIONS and meta["backend"] in ("openvino", "onnx")
    assert meta["backend"] in meta["engine_choice"] and "faster runtime on this CPU" in meta["engine_choice"]
    assert cached.startswith(os.environ["XDG_CACHE_HOME"]) and meta["engine"] == str(DEFAULT_ENGINE)
    built = os.stat(cached).st_mtime_ns
    second = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert read_settings(tmp_path / "b" / "faces.parquet")["engine_file"] == cached
    assert os.stat(cached).st_mtime_ns == built  # reused, not rebuilt
    eager = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "t"), "--backend", "torch"])
    assert eager.exit_code == 0, eager.output
    assert read_settings(tmp_path / "t" / "faces.parquet")["backend"] == "torch"
    a = pq.read_table(tmp_path / "a" / "faces.parquet").column("score_fake").to_numpy()
    t = pq.read_table(tmp_path / "t" / "faces.parquet").column("score_fake").to_numpy()
    assert_scores_spread(t, floor=0.2)
    assert len(a) == 110
    if meta["precision"] == "fp32":  # OpenVINO and ONNX Runtime fp32 equal eager torch fp32
        assert np.abs(a - t).max() < 1e-3
    else:  # bf16 moves scores (Val p95 0.036 at its gate, Test-Dev 0.060), not the ranking much:
        # the issue's bound is Test-Dev ROC-AUC within 0.005 of fp32's. fp32 is one flag away.
        from sklearn.metrics import roc_auc_score

        labels = pq.read_table(tmp_path / "a" / "faces.parquet").column("label").to_numpy()
        assert np.abs(a - t).max() < 0.2 and roc_auc_score(labels, a) >= roc_auc_score(labels, t) - 0.005
        exact = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "f"), "--precision", "fp32"])
        assert exact.exit_code == 0, exact.output
        assert read_settings(tmp_path / "f" / "faces.parquet")["precision"] == "fp32"
        f = pq.read_table(tmp_path / "f" / "faces.parquet").column("score_fake").to_numpy()
        assert np.abs(f - t).max() < 1e-3
    listing = CliRunner().invoke(main, ["engines", "--device", "cpu"])
    assert listing.exit_code == 0 and "dfscan run would use: CPU: " in listing.output
    assert "runtime race" in listing.output
    assert "cores busy meanwhile" in listing.output
    assert cached in listing.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["duration_s"] > 0 and manifest["sessions"][-1]["faces_scanned"] == 110


def test_dfscan_run_scans_the_shipped_samples(tmp_path):
    result = CliRunner().invoke(main, ["run", str(SAMPLES / "Images"), "--out", str(tmp_path),
                                       "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    faces = pq.read_table(tmp_path / "faces.parquet").to_pydict()
    assert len(faces["face_id"]) == 14 and set(faces["status"]) == {"ok"}
    assert faces["label"].count(1) == 3 and (tmp_path / "metrics.parquet").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())  # the report comes with every run
    assert (tmp_path / "report.html").is_file() and summary["faces"] == 14
    assert sum(f.stat().st_size for f in SAMPLES.rglob("*") if f.is_file()) < 2**20

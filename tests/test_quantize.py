"""INT8: a QDQ model from ONNX Runtime's static quantiser runs in ONNX Runtime and OpenVINO, tracks
fp32, and the accuracy gate reports its figures. Uses the bundled trained MobileNetV2 at 64 px:
its scores separate real from fake, so rank agreement is a real test."""
from pathlib import Path

import numpy as np
import pytest

from _engine_models import crops, scores
from engines import DfscanError
from engines.backends import load_engine
from engines.checkpoint import load_checkpoint
from engines.export import export_onnx, model_from_source
from engines.quantize import PRECISION_KEY, GateResult, accuracy_gate, quantize_onnx

DEFAULT = Path(__file__).resolve().parents[1] / "engines" / "default" / "mobilenetv2.pt"
MIN_SPREAD = 0.05


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    """``(fp32 onnx, int8 onnx, config)`` of the default model at 64 px, calibrated on 64 Train faces."""
    model, config, _ = load_checkpoint(DEFAULT, input_size=(64, 64))
    out = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(model, config, out / "fp32.onnx")
    calib, _ = crops("Train", config, limit=64)
    return fp32, quantize_onnx(fp32, out / "int8.onnx", np.array_split(calib, 4)), config


def test_qdq_model_runs_in_both_runtimes_and_tracks_fp32(int8):
    import onnx
    from scipy.stats import spearmanr

    fp32, q, config = int8
    proto = onnx.load(str(q))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[PRECISION_KEY] == "int8" and meta["dfscan_calibration_batches"] == "4"
    x, _ = crops("Test-Dev", config, limit=48)
    ref = scores(load_engine(fp32).infer(x))
    assert ref.std() > MIN_SPREAD
    for backend in ("onnx", "openvino"):
        engine = load_engine(q, backend=backend, threads=2)
        assert engine.config == config
        got = scores(engine.infer(x))
        rho = spearmanr(ref, got).statistic
        assert rho > 0.9, f"{backend}: INT8 ranks faces unlike fp32 (Spearman {rho:.3f})"
        assert np.median(np.abs(got - ref)) < 0.1
    # OpenVINO really runs integer kernels for the QDQ model, not fp32 with fake quantisation.
    runtime = load_engine(q, backend="openvino").compiled.get_runtime_model()
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
                  if "runtimePrecision" in op.get_rt_info()}
    assert precisions & {"u8", "i8"}, precisions


def test_gate_reports_auc_and_drift(int8):
    fp32, q, config = int8
    xv, yv = crops("Val", config)
    xd, _ = crops("Test-Dev", config, limit=48)
    e32, e8 = load_engine(fp32), load_engine(q)
    validation = [(xv[:50], yv[:50]), (xv[50:], yv[50:])]
    gate = accuracy_gate(e32, e8, iter(validation), iter([xd[:20], (xd[20:], None)]))
    assert isinstance(gate, GateResult)
    assert (gate.faces_validation, gate.faces_drift) == (len(xv), len(xd))
    assert gate.auc_fp32 > 0.75  # the trained default model separates the classes
    assert gate.auc_drop == pytest.approx(gate.auc_fp32 - gate.auc_int8)
    assert 0 < gate.delta_p50 <= gate.delta_p95 <= gate.delta_p99 <= gate.delta_max <= 1
    assert gate.passed == (gate.auc_drop <= 0.005 and gate.delta_p95 <= 0.05)
    assert set(gate.to_dict()) >= {"auc_fp32", "auc_int8", "auc_drop", "delta_p99", "passed"}
    # An engine compared with itself passes with no drift; an unrelated model fails the gate.
    same = accuracy_gate(e32, e32, iter(validation), iter([xd]))
    assert same.passed and same.auc_drop == 0 and same.delta_max == 0
    # (an untrained CustomCNN: near chance, where the default model is well above it)
    other_model, other_config = model_from_source(arch="customcnn", seed=4, input_size=(64, 64))
    other = load_engine(export_onnx(other_model, other_config, fp32.with_name("other.onnx")))
    worse = accuracy_gate(e32, other, iter(validation), iter([xd]))
    assert worse.auc_drop > 0.005 and not worse.passed
    assert "FAILED" in worse.summary()


def test_bad_data_is_a_one_line_error(int8, tmp_path):
    fp32, _, config = int8
    with pytest.raises(DfscanError, match="calibration images"):
        quantize_onnx(fp32, tmp_path / "none.onnx", iter([]))
    with pytest.raises(DfscanError, match=r"\(N, 3, 64, 64\)"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", [np.zeros((2, 3, 32, 32), np.float32)])
    assert not (tmp_path / "none.onnx").exists() and not (tmp_path / "bad.onnx").exists()
    e32 = load_engine(fp32)
    xv, _ = crops("Val", config, limit=8)
    with pytest.raises(DfscanError, match="one class"):
        accuracy_gate(e32, e32, [(xv, np.zeros(len(xv)))], [xv])


def test_cli_exports_int8_for_both_runtimes_calibrated_by_the_scan_pipeline(tmp_path):
    """dfscan export --int8 --calib-data: the scan's own crops calibrate; the ONNX and the IR load
    in their runtimes, are marked INT8 and rank Val faces like the fp32 model."""
    from click.testing import CliRunner

    from _data import REALORFAKE
    from scanner.cli import main
    from scanner.run.training import face_batches

    import torch

    from engines.checkpoint import save_checkpoint

    model, config, _ = load_checkpoint(DEFAULT, input_size=(64, 64))
    ckpt = save_checkpoint(tmp_path / "m64.pt", model, config)
    val = REALORFAKE / "Images" / "Val"
    for fmt, out, backend in (("onnx", tmp_path / "q.onnx", "onnx"), ("openvino", tmp_path / "q.xml", "openvino")):
        res = CliRunner().invoke(main, ["export", str(ckpt), "--format", fmt, "--int8", "--calib-data", str(val),
                                        "--out", str(out)])
        assert res.exit_code == 0, res.output
        engine = load_engine(out, "cpu", backend)
        x, labels = zip(*face_batches(val, with_labels=True)(config))
        x = np.concatenate(x)
        with torch.inference_mode():
            ref = scores(model.eval()(torch.from_numpy(x)).numpy())
        got = scores(engine.infer(x))
        assert ref.std() > MIN_SPREAD and len(got) == 80
        assert np.corrcoef(np.argsort(np.argsort(got)), np.argsort(np.argsort(ref)))[0, 1] > 0.9
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert meta[PRECISION_KEY] == "int8"
    res = CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", "--int8",
                                    "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and "--calib-data" in res.output and "Traceback" not in res.output


def test_calibration_is_cut_into_small_pieces_with_the_same_ranges(int8, tmp_path, monkeypatch):
    """ONNX Runtime's calibration session keeps a whole batch's activations: dfscan feeds it pieces
    of at most CALIB_PIXELS input pixels. Minmax ranges do not depend on the cut: one batch of 64
    faces fed in pieces of 8 gives the same scales as four batches of 16."""
    import onnx
    from onnx import numpy_helper

    import engines.quantize as quantize

    fp32, q, config = int8
    calib, _ = crops("Train", config, limit=64)
    monkeypatch.setattr(quantize, "CALIB_PIXELS", 8 * 64 * 64)
    pieces = quantize_onnx(fp32, tmp_path / "pieces.onnx", [calib])

    def ranges(path):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
                if i.name.endswith(("_scale", "_zero_point"))}

    got, want = ranges(pieces), ranges(q)
    assert len(got) > 50 and got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)

"""TensorRT plans: build from the ONNX export, run through load_engine, match ONNX Runtime.

Tests marked ``trt`` run only where TensorRT and a GPU are present (see conftest.py); the others
check that a machine without them gets a one-line DfscanError instead of a crash.
"""
import json
import shutil

import numpy as np
import pytest

from engines import DfscanError
from engines.backends import load_engine, trt_backend
from engines.export import export_onnx, model_from_source
from engines.models import get_model_config
from engines.trt_build import build_plan

from _data import REALORFAKE, assert_scores_spread, calibration_crops

MAX_BATCH = 16  # small, so that a batch above it (chunking) stays cheap
TRT_USABLE = trt_backend._available()[0]


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _images(n, seed=0):
    """Real face-sized crops of realorfake images, normalised for MobileNetV2 at 224."""
    return calibration_crops(get_model_config("mobilenetv2"), n=n, seed=seed)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """The bundled trained model: scores that spread, and that half precision barely moves."""
    from scanner.run.job import DEFAULT_ENGINE

    model, config = model_from_source(DEFAULT_ENGINE)
    return export_onnx(model, config, tmp_path_factory.mktemp("onnx") / "mobilenetv2.onnx")


@pytest.fixture(scope="module", params=[True, False], ids=["fp16", "fp32"])
def plan(request, onnx_file, tmp_path_factory):
    import tensorrt as trt

    if request.param and not hasattr(trt.BuilderFlag, "FP16"):
        pytest.skip(f"TensorRT {trt.__version__} has no FP16 builder flag")
    out = tmp_path_factory.mktemp("plan") / f"mobilenetv2-{request.node.callspec.id}.plan"
    build_plan(onnx_file, out, fp16=request.param, opt_batch=8, max_batch=MAX_BATCH, workspace_gb=1)
    return out, request.param


@pytest.mark.trt
@pytest.mark.parametrize("n", [1, 7, 2 * MAX_BATCH + 5])
def test_plan_matches_onnxruntime(plan, onnx_file, n):
    path, fp16 = plan
    x = _images(n, seed=n)
    got = load_engine(path, device="cuda").infer(x)
    ref = load_engine(onnx_file, device="cpu").infer(x)
    assert got.shape == (n, 2) and got.dtype == np.float32
    if n > 1:
        assert_scores_spread(_softmax(ref)[:, 1])
    np.testing.assert_allclose(_softmax(got), _softmax(ref), atol=1e-2 if fp16 else 1e-3)


@pytest.mark.trt
def test_run_with_a_plan_on_the_gpu_matches_onnxruntime_on_the_cpu(plan, onnx_file, tmp_path):
    """End to end: dfscan run --engine model.plan --device gpu against the CPU and ONNX Runtime."""
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from scanner.cli import main

    path, fp16 = plan
    test_dev = str(REALORFAKE / "Images" / "Test-Dev")
    for engine, device, out in ((path, "gpu", "gpu"), (onnx_file, "cpu", "cpu")):
        res = CliRunner().invoke(main, ["run", test_dev, "--engine", str(engine), "--device", device,
                                        "--out", str(tmp_path / out), "--quiet", "--batch-size", str(MAX_BATCH)])
        assert res.exit_code == 0, res.output
    a = pq.read_table(tmp_path / "gpu" / "faces.parquet").column("score_fake").to_numpy()
    b = pq.read_table(tmp_path / "cpu" / "faces.parquet").column("score_fake").to_numpy()
    assert len(a) == len(b) == 110
    assert_scores_spread(b, floor=0.2)
    assert np.abs(a - b).max() < (2e-2 if fp16 else 2e-3)


@pytest.mark.trt
def test_cuda_tensor_is_read_in_place_and_matches_numpy(plan):
    import torch

    path, _ = plan
    engine = load_engine(path, device="cuda")
    x = _images(5)
    expected = engine.infer(x)
    np.testing.assert_allclose(engine.infer(torch.from_numpy(x).cuda()), expected, atol=1e-6)
    # A view 4 bytes into its storage is not 256-byte aligned: the engine must copy, not fail.
    flat = torch.zeros(x.size + 1, device="cuda")
    flat[1:] = torch.from_numpy(x.ravel()).cuda()
    np.testing.assert_allclose(engine.infer(flat[1:].view(x.shape)), expected, atol=1e-6)


@pytest.mark.trt
def test_sidecar_records_config_and_build_settings(plan):
    path, _ = plan
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["dfscan_config"]["arch"] == "mobilenetv2"
    assert side["build"]["max_batch"] == MAX_BATCH and side["build"]["tensorrt"]
    engine = load_engine(path, device="cuda")
    assert engine.config.input_size == (224, 224) and engine.max_batch == MAX_BATCH


@pytest.mark.trt
def test_missing_sidecar_is_a_clear_error(plan, tmp_path):
    lone = tmp_path / "lone.plan"
    shutil.copy(plan[0], lone)
    with pytest.raises(DfscanError, match="sidecar"):
        load_engine(lone, device="cuda")


@pytest.mark.trt
def test_int8_plan_builds_from_calibration_batches(onnx_file, tmp_path):
    import tensorrt as trt

    if not hasattr(trt.BuilderFlag, "INT8"):
        pytest.skip(f"TensorRT {trt.__version__} has no INT8 builder flag")
    batches = [_images(8, seed=s) for s in range(4)] + [_images(3)]  # the short last one is skipped
    out = build_plan(onnx_file, tmp_path / "int8.plan", int8=True, calib_batches=batches,
                     opt_batch=8, max_batch=MAX_BATCH, workspace_gb=1)
    assert (tmp_path / "int8.plan.calib").is_file()
    assert json.loads((tmp_path / "int8.plan.json").read_text())["build"]["calibration_batches"] == 4
    logits = load_engine(out, device="cuda").infer(_images(7))
    assert logits.shape == (7, 2) and np.isfinite(logits).all()


# --- where TensorRT cannot run: one clear line, not a crash ------------------------------------

@pytest.mark.skipif(TRT_USABLE, reason="TensorRT and a GPU are present here")
def test_plan_without_tensorrt_or_gpu_is_a_clear_error(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not really a plan")
    with pytest.raises(DfscanError) as info:
        load_engine(plan)
    message = str(info.value)
    assert "model.plan" in message and "TensorRT" in message and "\n" not in message
    assert "GPU" in message or "dfscan[tensorrt]" in message


@pytest.mark.skipif(TRT_USABLE, reason="TensorRT and a GPU are present here")
def test_build_plan_without_tensorrt_or_gpu_is_a_clear_error(onnx_file, tmp_path):
    out = tmp_path / "model.plan"
    with pytest.raises(DfscanError, match="TensorRT") as info:
        build_plan(onnx_file, out)
    assert "GPU" in str(info.value) or "dfscan[tensorrt]" in str(info.value)
    assert not out.exists() and not (tmp_path / "model.plan.json").exists()


def test_build_plan_checks_its_arguments_before_tensorrt(tmp_path):
    with pytest.raises(DfscanError, match="min"):
        build_plan(tmp_path / "x.onnx", tmp_path / "x.plan", min_batch=8, max_batch=4)
    with pytest.raises(DfscanError, match="not found"):
        build_plan(tmp_path / "missing.onnx", tmp_path / "x.plan")


@pytest.mark.skipif(TRT_USABLE, reason="TensorRT and a GPU are present here")
def test_cli_plan_export_without_tensorrt_is_one_line(tmp_path):
    from click.testing import CliRunner

    from scanner.cli import main

    res = CliRunner().invoke(main, ["export", "--arch", "squeezenet", "--format", "plan",
                                    "--out", str(tmp_path / "m.plan")])
    assert res.exit_code == 1 and "TensorRT" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "m.plan").exists()

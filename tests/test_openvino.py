"""OpenVINO backend: IR export keeps the config, scores match torch fp32, options reach the runtime."""
import numpy as np
import pytest

from _engine_models import crops, scores, torch_logits, varying_model
from engines import DfscanError
from engines.backends import load_engine
from engines.export import export, export_onnx, onnx_to_openvino

pytest.importorskip("openvino")

TOL = 1e-3
MIN_SPREAD = 0.05  # below this the model scores every face alike and equality proves nothing


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The test model exported once: ``(config, onnx, xml, Test-Dev crops, torch fp32 scores)``."""
    model, config = varying_model(seed=1)
    x, _ = crops("Test-Dev", config, limit=40)
    ref = scores(torch_logits(model, x))
    assert ref.std() > MIN_SPREAD, f"test model scores do not vary (std {ref.std():.3f})"
    out = tmp_path_factory.mktemp("ov")
    xml = export(model, config, "openvino", out / "m.xml")  # the registered exporter, as the CLI calls it
    return config, export_onnx(model, config, out / "m.onnx"), xml, x, ref


def test_ir_scores_match_torch(exported):
    config, _, xml, x, ref = exported
    assert xml.with_suffix(".bin").is_file()
    engine = load_engine(xml, threads=2)
    assert (engine.name, engine.device) == ("openvino", "cpu")
    logits = engine.infer(x)
    assert logits.dtype == np.float32 and logits.shape == (len(x), 2)
    np.testing.assert_allclose(scores(logits), ref, atol=TOL)
    # Odd batch sizes go through the same dynamic-batch model.
    np.testing.assert_allclose(scores(engine.infer(x[:3])), ref[:3], atol=TOL)


def test_onnx_opened_by_name_matches_torch(exported):
    config, onnx_file, _, x, ref = exported
    engine = load_engine(onnx_file, backend="openvino")
    assert engine.name == "openvino" and engine.config == config
    np.testing.assert_allclose(scores(engine.infer(x)), ref, atol=TOL)


def test_ir_round_trip_keeps_config(exported, tmp_path):
    import openvino as ov

    config, onnx_file, xml, _, _ = exported
    assert load_engine(xml).config == config
    assert load_engine(onnx_to_openvino(onnx_file, tmp_path / "again.xml")).config == config
    # An IR converted without dfscan's exporter has no config and is refused with the fix.
    bare = tmp_path / "bare.xml"
    ov.save_model(ov.convert_model(str(onnx_file)), str(bare))
    with pytest.raises(DfscanError, match=r"bare\.xml.*dfscan export --format openvino"):
        load_engine(bare)


def test_threads_and_hint_reach_the_runtimes(exported):
    _, onnx_file, xml, _, _ = exported
    for hint in ("LATENCY", "THROUGHPUT"):
        engine = load_engine(xml, threads=1, hint=hint)
        assert str(engine.compiled.get_property("PERFORMANCE_HINT")) == hint
        assert int(engine.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    options = load_engine(onnx_file, threads=1).session.get_session_options()
    assert options.intra_op_num_threads == 1
    # ONNX Runtime's threads must not spin-wait on cores the decoding child needs
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_bad_options_are_one_line_errors(exported):
    _, onnx_file, xml, _, _ = exported
    with pytest.raises(DfscanError, match="hint"):
        load_engine(xml, hint="FASTEST")
    with pytest.raises(DfscanError, match="CPU only"):
        load_engine(xml, device="cuda")
    with pytest.raises(DfscanError, match="onnx backend does not take hint"):
        load_engine(onnx_file, hint="LATENCY")


def test_throughput_hint_splits_a_batch_over_streams(exported):
    _, _, xml, x, ref = exported
    single = load_engine(xml, threads=2, hint="LATENCY")
    split = load_engine(xml, threads=2, hint="THROUGHPUT")
    assert single.streams == 1 and split.streams >= 2  # else the split path would go untested
    for rows in (len(x), 2 * split.streams + 1, 1):  # even, odd and too small to split
        np.testing.assert_allclose(split.infer(x[:rows]), single.infer(x[:rows]), atol=1e-5)
    np.testing.assert_allclose(scores(split.infer(x)), ref, atol=TOL)


SIGNAL_AFTER_TWO_ENGINES = r"""
import os, signal, sys
from engines.backends import load_engine

first = load_engine(sys.argv[1], "cpu", "openvino", threads=1)
second = load_engine(sys.argv[1], "cpu", "openvino", threads=1)
del first  # released before the second: the order a race or a bench sweep releases engines in
del second
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append("SIGTERM"))  # as a run's graceful stop does
os.kill(os.getpid(), signal.SIGTERM)
print("handled", got)
"""


def test_signals_still_reach_python_after_engines_are_released(exported):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack and unmaps its own when
    released: two engines released in creation order used to leave an unmapped one behind, and
    the next signal with a Python handler (a run's SIGTERM, Ctrl-C) killed the process with
    SIGSEGV. In a process of its own: the failure is the process dying."""
    import subprocess
    import sys
    from pathlib import Path

    _, _, xml, _, _ = exported
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_TWO_ENGINES, str(xml)], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"died with {done.returncode}: {done.stderr[-1000:]}"
    assert done.stdout.strip().endswith("handled ['SIGTERM']")

"""Skip ``gpu`` tests where CUDA is absent and ``trt`` tests where TensorRT or CUDA is absent."""
import os
import tempfile

import pytest

# Engines built from checkpoints are cached under $XDG_CACHE_HOME/dfscan: the tests (and the
# dfscan processes they start, which inherit the environment) keep theirs out of the user's cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dfscan-test-cache-")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _tensorrt() -> bool:
    if not _cuda():  # never touch tensorrt on a machine without a GPU
        return False
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a wheel whose libraries do not load
        return False
    return True


_REASONS = {"gpu": "needs an NVIDIA GPU (torch.cuda.is_available() is False)",
            "trt": "needs TensorRT and an NVIDIA GPU (pip install 'dfscan[tensorrt]')"}


def pytest_collection_modifyitems(config, items):
    wanted = {name for item in items for name in _REASONS if item.get_closest_marker(name)}
    checks = {"gpu": _cuda, "trt": _tensorrt}
    missing = {name for name in wanted if not checks[name]()}  # probe only what is asked for
    for item in items:
        for name in missing:
            if item.get_closest_marker(name):
                item.add_marker(pytest.mark.skip(reason=_REASONS[name]))


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory):
    """``m.onnx`` and ``m.pt``: one 64-px MobileNetV2 whose scores follow the crop's pixels
    (``_data.varying_model``), shared by every test that compares scores."""
    from _data import varying_model
    from engines.export import export_onnx, export_pt

    out = tmp_path_factory.mktemp("engines")
    model, config = varying_model(input_size=(64, 64))
    export_onnx(model, config, out / "m.onnx")
    export_pt(model, config, out / "m.pt")
    return out

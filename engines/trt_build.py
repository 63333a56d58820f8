"""Build a TensorRT plan from a dfscan ONNX export (TensorRT 10 Python API).

The plan gets one optimisation profile over the batch axis of the input ``"input"`` at the model's
input size, FP16 where the GPU has fast FP16, optional INT8 post-training calibration (entropy
calibrator 2, cache beside the plan), and a sidecar ``<plan>.json`` with the model config (a plan
has no metadata of its own) and the build settings. ``tensorrt`` is imported inside the functions,
after a GPU has been seen, so this module imports anywhere.
"""
from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np

from engines.backends.onnx_backend import read_onnx_config  # noqa: F401  (re-exported: it lived here)
from engines.backends.trt_backend import CONFIG_KEY, import_tensorrt, sidecar_path, trt_logger
from engines.errors import DfscanError
from engines.files import write_atomic

INPUT_NAME = "input"  # fixed by engines.export.export_onnx


def build_plan(onnx_path, out_path, *, fp16=True, int8=False, calib_batches=None, min_batch=1,
               opt_batch=32, max_batch=128, workspace_gb=4) -> Path:
    """Build a TensorRT plan from a dfscan ONNX export; returns ``out_path``.

    ``opt_batch`` is clamped into [min_batch, max_batch]. FP16 is skipped (with a warning) on GPUs
    without fast FP16. ``int8`` needs ``calib_batches`` (an iterable of float32 (N, 3, H, W) arrays,
    all of the first one's N; others are skipped) unless ``<plan>.calib`` already exists (it is
    reused as is: delete it to recalibrate).
    Writes the plan and ``<plan>.json`` atomically. Raises DfscanError for a bad batch profile, an
    ONNX file without dfscan metadata, no GPU or no TensorRT, a parse or build failure.
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not 1 <= min_batch <= max_batch:
        raise DfscanError(f"batch profile needs 1 <= min ({min_batch}) <= max ({max_batch})")
    opt_batch = max(min_batch, min(opt_batch, max_batch))
    if not onnx_path.is_file():
        raise DfscanError(f"{onnx_path}: ONNX file not found")
    config = read_onnx_config(onnx_path)
    cache = out_path.with_name(out_path.name + ".calib")
    if int8 and calib_batches is None and not cache.is_file():
        raise DfscanError(f"{out_path}: INT8 needs calibration images (--calib-data ROOT) "
                          f"or a calibration cache {cache.name}")
    trt = import_tensorrt(f"{out_path}: cannot build a TensorRT plan here")
    import torch

    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: always explicit batch; EXPLICIT_BATCH is deprecated
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = f"node {errors[0].node()}: {errors[0].desc()}" if errors else "no error reported"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DfscanError(f"{onnx_path}: TensorRT cannot parse it: {first}{more}")
    h, w = config.input_size
    _check_input(network, onnx_path, (3, h, w))

    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (min_batch, 3, h, w), (opt_batch, 3, h, w), (max_batch, 3, h, w))
    bconf.add_optimization_profile(profile)

    # platform_has_fast_fp16/int8 are deprecated since TRT 10.5 ("query CUDA directly").
    cap = torch.cuda.get_device_capability()
    use_fp16 = fp16 and (cap >= (7, 0) or cap in ((5, 3), (6, 0), (6, 2)))
    if fp16 and not use_fp16:
        warnings.warn(f"{torch.cuda.get_device_name()} has no fast FP16; building an FP32 plan")
    if use_fp16:
        bconf.set_flag(_builder_flag(trt, "FP16"))
    calibrator = None
    if int8:
        if cap < (6, 1):
            raise DfscanError(f"{out_path}: {torch.cuda.get_device_name()} has no INT8 support; drop --int8")
        bconf.set_flag(_builder_flag(trt, "INT8"))
        calibrator, calib_shape = _calibrator(trt, calib_batches, cache, (3, h, w), opt_batch)
        bconf.int8_calibrator = calibrator
        # With a dynamic batch axis the calibrator's batch shape comes from a calibration profile.
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(INPUT_NAME, calib_shape, calib_shape, calib_shape)
        bconf.set_calibration_profile(calib_profile)

    serialized = builder.build_serialized_network(network, bconf)
    if serialized is None:
        raise DfscanError(f"{onnx_path}: TensorRT could not build a plan (see its messages above)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, memoryview(serialized))
    build = {"fp16": bool(use_fp16), "int8": bool(int8), "min_batch": min_batch, "opt_batch": opt_batch,
             "max_batch": max_batch, "workspace_gb": workspace_gb, "tensorrt": trt.__version__,
             "gpu": torch.cuda.get_device_name(), "compute_capability": f"{cap[0]}.{cap[1]}",
             "onnx": onnx_path.name,
             "calibration_batches": calibrator.used if calibrator is not None else None}
    side = {"format": "dfscan-plan/1", CONFIG_KEY: config.to_dict(), "build": build}
    write_atomic(sidecar_path(out_path), json.dumps(side, indent=2).encode())
    return out_path


def _check_input(network, onnx_path, chw):
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    if INPUT_NAME not in inputs:
        raise DfscanError(f"{onnx_path}: no input named '{INPUT_NAME}' (found {sorted(inputs)}); "
                          f"export it with 'dfscan export --format onnx'")
    shape = tuple(inputs[INPUT_NAME].shape)
    if len(shape) != 4 or any(d not in (-1, want) for d, want in zip(shape[1:], chw)):
        raise DfscanError(f"{onnx_path}: input shape {shape} does not match the config's (N, {chw[0]}, "
                          f"{chw[1]}, {chw[2]}); re-export with the same --res")


def _builder_flag(trt, name):
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:  # TensorRT 11 removed the weakly-typed precision flags
        raise DfscanError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; "
                          f"pip install 'tensorrt-cu12>=10,<11' or build without --{name.lower()}")
    return flag


def _calibrator(trt, batches, cache: Path, chw, default_batch):
    """An IInt8EntropyCalibrator2 fed from ``batches``; returns (calibrator, calibration shape)."""
    import torch

    it = iter(batches if batches is not None else ())
    first = next(it, None)
    if first is not None:
        if first.ndim != 4 or tuple(first.shape[1:]) != chw:
            raise DfscanError(f"calibration batches must be (N, {chw[0]}, {chw[1]}, {chw[2]}) arrays, "
                              f"got {first.shape}")
        it = itertools.chain([first], it)
    shape = (first.shape[0] if first is not None else default_batch, *chw)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # the binding requires the explicit base init
            self.used = 0
            self._device = None  # the batch TensorRT is reading; kept alive until the next call

        def get_batch_size(self):
            return shape[0]

        def get_batch(self, names):
            for batch in it:
                if tuple(batch.shape) != shape:  # the calibration profile fixes the shape
                    continue
                self._device = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
                torch.cuda.current_stream().synchronize()  # TensorRT reads it on its own stream
                self.used += 1
                return [self._device.data_ptr()]
            return None  # no more data

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data):
            write_atomic(cache, bytes(data))

    return EntropyCalibrator(), shape



"""How ``engines.autoselect`` builds a checkpoint's engine file for the cache: export to ONNX, then
quantise (INT8), mark for bf16, convert to OpenVINO IR or build a TensorRT plan, and gate INT8 and
bf16 against fp32 on the caller's validation faces. ``job`` is the chooser's job (checkpoint, data
callables, threads, gate limits); torch and the runtimes are imported inside the functions.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def build(job, backend: str, precision: str, target: Path) -> dict:
    """Write ``job``'s engine for ``backend`` / ``precision`` to ``target``; returns the build's
    figures for the cache record (the opset, and the gate's figures where one was measured)."""
    from engines.export import ONNX_OPSET, export_onnx, onnx_to_openvino

    if precision == "int8" and job.qdq is not None and backend != "trt":
        convert(job.qdq, backend, target)  # the shipped file: no model to build, no export
        return {"gate": job.qdq_record["gate"]}
    with tempfile.TemporaryDirectory(prefix="dfscan-build-") as tmp:
        model, config = job.model()
        fp32 = export_onnx(model, config, Path(tmp) / "fp32.onnx")
        figures = {"opset": ONNX_OPSET}
        if backend == "trt":
            from engines.trt_build import build_plan

            calib = job.calibration(config) if precision == "int8" else None
            build_plan(fp32, target, fp16=precision == "fp16", int8=precision == "int8", calib_batches=calib)
            return figures  # TensorRT INT8 is asked for explicitly and not gated here
        if precision == "bf16":  # the fp32 IR, marked to run in bf16; gated against fp32 in OpenVINO
            onnx_to_openvino(fp32, target, precision="bf16")
            if job.validation is not None:
                figures["gate"] = gate(job, backend, config, fp32, target, precision="bf16")
            return figures
        source = fp32
        if precision == "int8":
            from engines.quantize import quantize_onnx

            source = quantize_onnx(fp32, Path(tmp) / "int8.onnx", job.calibration(config))
        convert(source, backend, target)
        if precision == "int8" and job.validation is not None:
            figures["gate"] = gate(job, backend, config, fp32, target)
        return figures


def convert(onnx_file: Path, backend: str, target: Path) -> None:
    """``onnx_file`` as the CPU backend's engine file at ``target``."""
    from engines.export import onnx_to_openvino

    if backend == "openvino":
        onnx_to_openvino(onnx_file, target)
    else:
        shutil.copyfile(onnx_file, target)  # the cache may sit on another filesystem than /tmp


def gate(job, backend: str, config, fp32_onnx: Path, engine: Path, precision: str | None = None) -> dict:
    """The accuracy gate of ``engine`` (INT8, or bf16 with ``precision``) against the fp32 export."""
    from engines.backends import load_engine
    from engines.quantize import accuracy_gate

    reference = load_engine(fp32_onnx, "cpu", backend, threads=job.threads,
                            **({"precision": "fp32"} if backend == "openvino" else {}))
    candidate = load_engine(engine, "cpu", backend, threads=job.threads, precision=precision)
    drift = job.drift(config) if job.drift is not None else (b for b, _ in job.validation(config))
    return accuracy_gate(reference, candidate, job.validation(config), drift, *job.limits).to_dict()

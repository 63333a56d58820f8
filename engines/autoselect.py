"""Fast by default: which engine this machine should run for a dfscan checkpoint, built once and cached.

Only ``.pt``/``.pth`` checkpoints are turned into engines; an explicit ``.onnx``, ``.xml`` or
``.plan`` is used as given. For a checkpoint:

- GPU: a TensorRT fp16 plan where TensorRT loads and CUDA is available (``tensorrt`` is never
  imported without a visible GPU: creating a TensorRT runtime there crashes the process), else
  eager torch on CUDA in fp16.
- CPU: OpenVINO where it is installed, else ONNX Runtime. On this project's 2-core AVX2 EPYC,
  quiet, MobileNetV2 224 batch 64 one request per batch, OpenVINO was the faster: fp32 510 vs
  290 faces/s, INT8 881 vs 649. Re-measured under heavy load from other jobs the two were within
  noise of each other (benchmarks/results/engines-cpu-2026-12-01/RESULTS.md), never clearly
  behind, so OpenVINO stays first. INT8 is used only where the cached INT8 engine passed the
  accuracy gate (``engines.quantize.accuracy_gate``: Val AUC drop ≤ 0.005); otherwise fp32.

Calibration and validation data come from the caller as callables taking the ModelConfig (so the
caller can crop and normalise for the engine's input size) and returning fresh iterators;
``engines`` never imports the scanner. Torch and the runtimes are imported inside the functions.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engines.errors import DfscanError
from engines.quantize import MAX_AUC_DROP

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
CPU_PREFERENCE = ("openvino", "onnx")  # fastest first, measured (see the module docstring)
SPEED_NOTE = "the faster CPU runtime in our measurements (benchmarks/results/engines-cpu-2026-12-01)"


@dataclass(frozen=True)
class EngineChoice:
    """What to run: ``load()`` opens it. ``reason`` is one sentence for ``dfscan engines``."""

    backend: str
    precision: str
    path: Path
    device: str
    reason: str
    options: dict = field(default_factory=dict)  # load_engine options: threads, hint, precision
    record: dict | None = None  # the cache record (key fields, build settings, gate figures)

    def load(self):
        from engines.backends import load_engine

        return load_engine(self.path, self.device, self.backend, **self.options)


def choose_engine(checkpoint, device: str = "cpu", backend: str | None = None,
                  precision: str | None = None, *, input_size=None, calibration: Callable | None = None,
                  validation: Callable | None = None, drift: Callable | None = None,
                  data_tag: str = "", threads: int | None = None, cache_dir=None,
                  warn: Callable[[str], None] = print, max_auc_drop: float = MAX_AUC_DROP) -> EngineChoice:
    """Decide (and build or reuse from the cache) the engine for ``checkpoint`` on ``device``.

    ``backend`` / ``precision`` ('fp32', 'fp16', 'bf16', 'int8') override the choice.
    ``calibration(config)`` returns an iterator of float32 (N, 3, H, W) batches,
    ``validation(config)`` one of ``(batch, labels)``, ``drift(config)`` one of batches for the
    score-drift quantiles (default: the validation batches). Without calibration and validation
    data an INT8 engine is used only if one was built and passed the gate before. ``data_tag``
    names that data in the cache key (e.g. the folder it came from). ``threads`` caps CPU
    engines' intra-op threads. Raises DfscanError for an impossible combination (e.g. fp16 on
    the CPU, TensorRT without a GPU) or a missing file.
    """
    path = Path(checkpoint)
    device = {"gpu": "cuda"}.get(device, device)
    if device not in ("cpu", "cuda"):
        raise DfscanError(f"unknown device {device!r}; choose cpu or cuda")
    if precision is not None and precision not in PRECISIONS:
        raise DfscanError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if not path.is_file():
        raise DfscanError(f"{path}: checkpoint or engine file not found")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        return _explicit(path, device, backend, precision, threads)
    if backend == "torch":
        return _torch(path, device, precision or ("fp16" if device == "cuda" else "fp32"),
                      threads, "the torch backend was asked for")
    job = _Job(path, device, input_size, calibration, validation, drift, data_tag, threads,
               cache_dir, warn, max_auc_drop)
    return _gpu(job, backend, precision) if device == "cuda" else _cpu(job, backend, precision)


def _explicit(path, device, backend, precision, threads) -> EngineChoice:
    from engines.backends import backend_for

    entry = backend_for(path, backend)
    if precision is not None:
        raise DfscanError(f"{path}: --precision applies to .pt checkpoints and this is a built "
                          f"{entry.name} engine; drop --precision or pass the checkpoint")
    options = {"threads": threads} if entry.name in ("onnx", "openvino") else {}
    return EngineChoice(entry.name, "as built", path, device,
                        f"{path.name} is an explicit {entry.name} engine file: used as given", options)


def _torch(path, device, precision, threads, why) -> EngineChoice:
    if precision == "int8":
        raise DfscanError(f"{path}: the torch backend has no INT8; use --backend openvino or onnx (CPU) or trt (GPU)")
    if device == "cpu" and precision == "fp16":
        raise DfscanError(f"{path}: fp16 is a GPU precision; on the CPU use fp32, bf16 or int8")
    return EngineChoice("torch", precision, path, device, f"eager torch {precision} on {device}: {why}",
                        {"precision": precision, "threads": threads if device == "cpu" else None})


@dataclass
class _Job:
    checkpoint: Path
    device: str
    input_size: tuple | None
    calibration: Callable | None
    validation: Callable | None
    drift: Callable | None
    data_tag: str
    threads: int | None
    cache_dir: object
    warn: Callable
    max_auc_drop: float

    def model(self):
        from engines.export import model_from_source

        return model_from_source(checkpoint=self.checkpoint, input_size=self.input_size)

    def size(self):
        """The engine's input size: the override, else the checkpoint's (read once)."""
        if self.input_size is None:
            from engines.checkpoint import read_checkpoint
            from engines.models import get_model_config

            payload = read_checkpoint(self.checkpoint)
            self.input_size = payload["config"].get("input_size") or get_model_config(payload["arch"]).input_size
        return tuple(self.input_size)


def _cpu(job: _Job, backend, precision) -> EngineChoice:
    from engines.backends import backend_for

    if precision == "fp16":
        raise DfscanError(f"{job.checkpoint}: fp16 is a GPU precision; on the CPU use fp32, bf16 or int8")
    if backend in ("trt",):
        raise DfscanError(f"{job.checkpoint}: TensorRT needs a GPU; use --device cuda or a CPU backend")
    if precision == "bf16":
        if backend not in (None, "torch"):
            raise DfscanError(f"{job.checkpoint}: bf16 runs on the torch backend only; drop --backend")
        return _torch(job.checkpoint, "cpu", "bf16", job.threads, "bf16 was asked for")
    why_backend = f"--backend {backend}"
    if backend is None:
        for name in CPU_PREFERENCE:
            ok, detail = backend_for(job.checkpoint, name).available()
            if ok:
                backend = name
                why_backend = (f"{detail}, {SPEED_NOTE}" if name == CPU_PREFERENCE[0]
                               else f"{detail} (OpenVINO, the faster one, is not installed: pip install openvino)")
                break
        else:
            return _torch(job.checkpoint, "cpu", "fp32", job.threads, "neither OpenVINO nor ONNX Runtime is installed")
    else:
        ok, detail = backend_for(job.checkpoint, backend).available()
        if not ok:
            raise DfscanError(f"{job.checkpoint}: the {backend} backend cannot run here: {detail}")
    options = {"threads": job.threads}
    if precision == "fp32":
        path, record = _cached(job, backend, "fp32")
        return EngineChoice(backend, "fp32", path, "cpu", f"CPU: {backend} fp32 as asked ({why_backend})",
                            options, record)
    have_data = job.calibration is not None and job.validation is not None
    if precision == "int8" or have_data:
        if precision == "int8" and job.calibration is None:
            raise DfscanError(f"{job.checkpoint}: --precision int8 needs calibration faces (--calib-data)")
        path, record = _cached(job, backend, "int8")
    else:
        from engines.cache import lookup

        found = lookup(job.checkpoint, backend, "int8", "cpu", input_size=job.size(),
                       settings=_int8_settings(job), cache_dir=job.cache_dir, warn=job.warn)
        path, record = found if found else (None, None)
    gate = (record or {}).get("build", {}).get("gate")
    passed, limit = _passed(gate, job.max_auc_drop), job.max_auc_drop
    if precision == "int8":
        verdict = {True: "passed the accuracy gate", False: "FAILED the accuracy gate",
                   None: "not gated (no validation faces)"}[passed]
        if passed is False:
            job.warn(f"{path}: INT8 was asked for but lost {gate['auc_drop']:.4f} Val AUC (limit {limit})")
        return EngineChoice(backend, "int8", path, "cpu", f"CPU: {backend} INT8 as asked; it {verdict}",
                            options, record)
    if passed:
        return EngineChoice(backend, "int8", path, "cpu",
                            f"CPU: {backend} INT8, which passed the accuracy gate (Val AUC drop "
                            f"{gate['auc_drop']:+.4f} ≤ {limit}); {why_backend}", options, record)
    if gate:
        why_fp32 = f"INT8 failed the accuracy gate (Val AUC drop {gate['auc_drop']:+.4f} > {limit})"
    else:
        why_fp32 = "no calibration and validation faces were given to build and gate an INT8 engine"
    path, record = _cached(job, backend, "fp32")
    return EngineChoice(backend, "fp32", path, "cpu", f"CPU: {backend} fp32, {why_fp32}; {why_backend}",
                        options, record)


def _gpu(job: _Job, backend, precision) -> EngineChoice:
    import torch

    if not torch.cuda.is_available():
        raise DfscanError(f"{job.checkpoint}: no NVIDIA GPU is visible; use --device cpu")
    if backend in ("onnx", "openvino"):
        raise DfscanError(f"{job.checkpoint}: on the GPU dfscan runs trt or torch; drop --backend {backend}")
    from engines.backends import backend_for

    ok, detail = backend_for(job.checkpoint, "trt").available()  # checks CUDA before importing tensorrt
    wanted = precision or "fp16"
    if backend == "trt" and not ok:
        raise DfscanError(f"{job.checkpoint}: the trt backend cannot run here: {detail}")
    if not ok or wanted == "bf16":
        why = detail if not ok else "TensorRT plans here are built in fp32, fp16 or int8"
        return _torch(job.checkpoint, "cuda", wanted, None, why)
    if wanted == "int8" and job.calibration is None:
        raise DfscanError(f"{job.checkpoint}: --precision int8 needs calibration faces (--calib-data)")
    path, record = _cached(job, "trt", wanted)
    return EngineChoice("trt", wanted, path, "cuda",
                        f"GPU: TensorRT {wanted} plan ({detail}), built once for this GPU and cached", {}, record)


def _int8_settings(job: _Job) -> dict:
    # The gate's limit is not part of the key: the record keeps the measured AUC drop, and each
    # run compares it with its own limit, so changing the limit never forces a rebuild.
    return {"calibration": "minmax", "reduce_range": True, "data": job.data_tag}


def _passed(gate: dict | None, limit: float) -> bool | None:
    return None if not gate else bool(gate["auc_drop"] <= limit)


def _cached(job: _Job, backend: str, precision: str):
    """``(path, record)`` of the cached engine, building it (and gating INT8) when missing."""
    from engines.cache import get_or_build

    device = "cpu"
    if backend == "trt":
        import torch

        cap = torch.cuda.get_device_capability()
        device = f"cuda:{torch.cuda.get_device_name()} sm{cap[0]}{cap[1]}"
    settings = _int8_settings(job) if precision == "int8" else {}
    return get_or_build(job.checkpoint, backend, precision, device,
                        lambda target: _build(job, backend, precision, target),
                        input_size=job.size(), settings=settings, cache_dir=job.cache_dir, warn=job.warn)


def _build(job: _Job, backend: str, precision: str, target: Path) -> dict:
    from engines.export import export_onnx, onnx_to_openvino

    with tempfile.TemporaryDirectory(prefix="dfscan-build-") as tmp:
        model, config = job.model()
        fp32 = export_onnx(model, config, Path(tmp) / "fp32.onnx")
        figures = {"opset": 17}
        if backend == "trt":
            from engines.trt_build import build_plan

            calib = job.calibration(config) if precision == "int8" else None
            build_plan(fp32, target, fp16=precision == "fp16", int8=precision == "int8", calib_batches=calib)
            return figures  # TensorRT INT8 is asked for explicitly and not gated here
        source = fp32
        if precision == "int8":
            from engines.quantize import quantize_onnx

            source = quantize_onnx(fp32, Path(tmp) / "int8.onnx", job.calibration(config))
        if backend == "openvino":
            onnx_to_openvino(source, target)
        else:
            shutil.copyfile(source, target)  # the cache may sit on another filesystem than /tmp
        if precision == "int8" and job.validation is not None:
            figures["gate"] = _gate(job, backend, config, fp32, target)
        return figures


def _gate(job: _Job, backend: str, config, fp32_onnx: Path, int8_engine: Path) -> dict:
    from engines.backends import load_engine
    from engines.quantize import accuracy_gate

    reference = load_engine(fp32_onnx, "cpu", backend, threads=job.threads)
    candidate = load_engine(int8_engine, "cpu", backend, threads=job.threads)
    drift = job.drift(config) if job.drift is not None else (b for b, _ in job.validation(config))
    return accuracy_gate(reference, candidate, job.validation(config), drift, job.max_auc_drop).to_dict()

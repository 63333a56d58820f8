"""Fast by default: which engine this machine should run for a dfscan checkpoint, built once and cached.

Only ``.pt``/``.pth`` checkpoints are turned into engines; an explicit ``.onnx``, ``.xml`` or
``.plan`` is used as given. For a checkpoint:

- GPU: a TensorRT fp16 plan where TensorRT loads and CUDA is available (``tensorrt`` is never
  imported without a visible GPU: creating a TensorRT runtime there crashes the process), else
  eager torch on CUDA in fp16.
- CPU: OpenVINO and ONNX Runtime, whichever is faster on this CPU for this engine (timed once
  and remembered, ``engines.race``: our own measurements put each ahead on some CPU and
  precision). INT8 is used only where the INT8 engine passed the accuracy gate
  (``engines.quantize.accuracy_gate``: Val AUC drop ≤ 0.005): built from the caller's
  calibration faces, or from a gated QDQ file shipped beside the checkpoint
  (``engines.quantize.shipped_int8``: how the bundled model gets INT8 without user data);
  otherwise fp32.

Calibration and validation data come from the caller as callables taking the ModelConfig (so the
caller can crop and normalise for the engine's input size) and returning fresh iterators;
``engines`` never imports the scanner. Torch and the runtimes are imported inside the functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engines.errors import DfscanError
from engines.quantize import MAX_AUC_DROP, MAX_SCORE_DRIFT_P95

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
CPU_BACKENDS = ("openvino", "onnx")  # both are built and the faster one here is used (engines/race.py)


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
                  warn: Callable[[str], None] = print, max_auc_drop: float = MAX_AUC_DROP,
                  max_drift_p95: float = MAX_SCORE_DRIFT_P95) -> EngineChoice:
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
               cache_dir, warn, (max_auc_drop, max_drift_p95), backend_asked=backend is not None)
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
    limits: tuple  # (largest Val AUC drop, largest p95 |Δscore|) an INT8 engine may show
    backend_asked: bool = False
    qdq: Path | None = None  # a gated QDQ file shipped beside the checkpoint (engines.quantize)
    qdq_record: dict | None = None

    def model(self):
        from engines.export import model_from_source

        return model_from_source(checkpoint=self.checkpoint, input_size=self.input_size)

    def size(self):
        """The engine's input size: the override, else the checkpoint's (read once)."""
        if self.input_size is None:
            from engines.checkpoint import read_header

            payload = read_header(self.checkpoint)  # no torch: a cached engine needs only this
            self.input_size = payload["config"].get("input_size")
            if not self.input_size:
                from engines.models import get_model_config

                self.input_size = get_model_config(payload["arch"]).input_size
        return tuple(self.input_size)


def _cpu(job: _Job, backend, precision) -> EngineChoice:
    from engines.backends import backend_for

    if precision == "fp16":
        raise DfscanError(f"{job.checkpoint}: fp16 is a GPU precision; on the CPU use fp32, bf16 or int8")
    if backend in ("trt",):
        raise DfscanError(f"{job.checkpoint}: TensorRT needs a GPU; use --device cuda or a CPU backend")
    if precision == "bf16":
        if backend not in (None, "torch", "openvino"):
            raise DfscanError(f"{job.checkpoint}: bf16 runs on the openvino (where the CPU has bf16) or torch "
                              f"backend; drop --backend")
        if backend != "torch" and _bf16_runs(job):
            from engines.quantize import shipped_bf16

            path, record = _bf16_engine(job, shipped_bf16(job.checkpoint))
            gate = _gate_of(record)
            if gate and not _passed(gate, job.limits):
                job.warn(f"{job.checkpoint}: bf16 was asked for but failed the accuracy gate "
                         f"({_figures(gate, job.limits)})")
            verdict = "not gated" if not gate else (
                ("passed" if _passed(gate, job.limits) else "FAILED") + " the accuracy gate")
            return EngineChoice("openvino", "bf16", path, "cpu", f"CPU: openvino bf16 as asked; it {verdict}",
                            {"threads": job.threads, "precision": "bf16"}, record)
        return _torch(job.checkpoint, "cpu", "bf16", job.threads, "bf16 was asked for")
    if backend is None:
        names = [n for n in CPU_BACKENDS if backend_for(job.checkpoint, n).available()[0]]
        if not names:
            return _torch(job.checkpoint, "cpu", "fp32", job.threads, "neither OpenVINO nor ONNX Runtime is installed")
    else:
        ok, detail = backend_for(job.checkpoint, backend).available()
        if not ok:
            raise DfscanError(f"{job.checkpoint}: the {backend} backend cannot run here: {detail}")
        names = [backend]
    limits = job.limits
    if precision == "fp32":
        return _pick(job, {n: _cached(job, n, "fp32") for n in names}, "fp32", "fp32 as asked")
    int8 = _int8_engines(job, names, asked=precision == "int8")
    passed = {n: pr for n, pr in int8.items() if _passed(_gate_of(pr[1]), limits)}
    if precision == "int8":
        if passed:
            return _pick(job, passed, "int8", "INT8 as asked; it passed the accuracy gate")
        path, record = next(iter(int8.values()))
        gate = _gate_of(record)
        if gate:
            job.warn(f"{path}: INT8 was asked for but failed the accuracy gate ({_figures(gate, limits)})")
        verdict = "FAILED the accuracy gate" if gate else "not gated (no validation faces)"
        return _pick(job, int8, "int8", f"INT8 as asked; it {verdict}")
    if passed:
        return _pick(job, passed, "int8", lambda record: f"INT8, which passed the accuracy gate ("
                     f"{_figures(_gate_of(record), limits)}{_source(_gate_of(record))})")
    gates = [g for g in (_gate_of(r) for _, r in int8.values()) if g]
    if gates:
        why_fp32 = f"INT8 failed the accuracy gate ({_figures(gates[0], limits)}{_source(gates[0])})"
    else:
        why_fp32 = "no calibration and validation faces were given to build and gate an INT8 engine"
    built = {n: _cached(job, n, "fp32") for n in names}
    if backend is None and "openvino" in names:
        from engines.quantize import shipped_bf16

        shipped = shipped_bf16(job.checkpoint)
        # A gate first (the caller's faces or a shipped record), then the CPU: asking OpenVINO
        # whether it runs bf16 imports it, which a run on a cached ONNX Runtime engine need not do.
        if (job.validation is not None or shipped) and _bf16_runs(job):
            path, record = _bf16_engine(job, shipped)
            gate = _gate_of(record)
            if _passed(gate, limits):  # bf16 joins the race: the fastest engine that passed its gate wins
                built[BF16] = (path, record)
            else:
                why_fp32 += f"; bf16 failed the accuracy gate ({_figures(gate, limits)}{_source(gate)})"
    return _pick(job, built, "fp32", lambda record: (
        f"bf16, which passed the accuracy gate ({_figures(_gate_of(record), limits)}{_source(_gate_of(record))}); "
        f"{why_fp32}" if record.get("precision") == "bf16" else f"fp32, {why_fp32}"))


BF16 = "openvino-bf16"  # the race's name for OpenVINO running the fp32 IR in bf16


def _bf16_runs(job: _Job) -> bool:
    """OpenVINO is installed and runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    from engines.backends import backend_for
    from engines.backends.openvino_backend import bf16_native

    return backend_for(job.checkpoint, "openvino").available()[0] and bf16_native()


def _bf16_engine(job: _Job, shipped: dict | None):
    """``(IR path, record)`` of OpenVINO bf16 for the checkpoint: built (and gated on the caller's
    validation faces) once and cached; without them the gate of ``shipped``, the record shipped
    beside the checkpoint (``engines.quantize.shipped_bf16``), if any."""
    path, record = _cached(job, "openvino", "bf16")
    record = {**(record or {}), "precision": "bf16"}
    if not _gate_of(record) and shipped:
        record["build"] = {**record.get("build", {}), "gate": {**shipped["gate"], "source": "shipped"}}
    return path, record


def _int8_engines(job: _Job, names, asked: bool) -> dict:
    """{backend: (path, record)} of the INT8 engines this run may use: built from the caller's
    calibration faces, else from the gated QDQ file shipped beside the checkpoint, else those
    a previous run built and cached. Empty when none can be had (then fp32)."""
    from engines.cache import lookup
    from engines.quantize import shipped_int8

    if job.calibration is not None and (asked or job.validation is not None):
        return {n: _cached(job, n, "int8") for n in names}
    shipped = shipped_int8(job.checkpoint)
    if shipped:
        job.qdq, record = shipped
        job.qdq_record = {**record, "gate": {**record["gate"], "source": "shipped"}}
        if not asked and not _passed(job.qdq_record["gate"], job.limits):  # its figures decide: nothing to build
            return {names[0]: (None, {"build": {"gate": job.qdq_record["gate"]}})}
        return {n: _cached(job, n, "int8") for n in names}
    found = {}
    for n in names:
        hit = lookup(job.checkpoint, n, "int8", "cpu", input_size=job.size(),
                     settings=_int8_settings(job), cache_dir=job.cache_dir, warn=job.warn)
        if hit:
            found[n] = hit
    if asked and not found:
        raise DfscanError(f"{job.checkpoint}: --precision int8 needs calibration faces (--calib-data)")
    return found


def _pick(job: _Job, built: dict, precision: str, why) -> EngineChoice:
    """The faster of the built engines on this machine (timed once and cached, engines.race)."""
    from engines.backends import load_engine
    from engines.cache import default_cache_dir, library_version
    from engines.race import fastest

    def backend(n):
        return "openvino" if n == BF16 else n

    def options(n):
        return {"threads": job.threads, **({"precision": "bf16"} if n == BF16 else {})}

    candidates = {n: (path, library_version(backend(n))) for n, (path, _) in built.items()}
    name, figures = fastest(candidates, job.size(), job.threads, Path(job.cache_dir or default_cache_dir()),
                            lambda n, p: load_engine(p, "cpu", backend(n), **options(n)), job.warn)
    if figures.get("raced"):
        speeds = ", ".join(f"{n} {v:.0f}" for n, v in figures["faces_per_s"].items())
        speed = (f"the faster runtime on this CPU ({speeds} faces/s, timed "
                 f"{'on an earlier run' if figures.get('cached') else 'now'}; engines/race.py)")
    else:
        speed = "--backend as asked" if job.backend_asked else "the only CPU runtime installed"
    path, record = built[name]
    why = why(record or {}) if callable(why) else why  # the winner's own figures (each is gated)
    precision = "bf16" if name == BF16 else precision
    return EngineChoice(backend(name), precision, path, "cpu", f"CPU: {backend(name)} {why}; {speed}",
                        options(name), {**(record or {}), "race": figures})


def _gate_of(record: dict | None) -> dict | None:
    return (record or {}).get("build", {}).get("gate")


def _source(gate: dict) -> str:
    shipped = gate.get("source") == "shipped"
    return "; measured when the gate record shipped beside the checkpoint was made" if shipped else ""


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
    # The gate's limits are not part of the key: the record keeps the measured figures, and each
    # run compares them with its own limits, so changing a limit never forces a rebuild.
    if job.qdq is not None:
        return {"qdq_sha256": job.qdq_record["qdq_sha256"]}
    return {"calibration": "minmax", "reduce_range": True, "data": job.data_tag}


def _passed(gate: dict | None, limits: tuple) -> bool | None:
    return None if not gate else bool(gate["auc_drop"] <= limits[0] and gate["delta_p95"] <= limits[1])


def _figures(gate: dict, limits: tuple) -> str:
    return (f"Val AUC drop {gate['auc_drop']:+.4f} (limit {limits[0]}), "
            f"p95 |Δscore| {gate['delta_p95']:.3f} (limit {limits[1]})")


def _cached(job: _Job, backend: str, precision: str):
    """``(path, record)`` of the cached engine, building it (and gating INT8) when missing."""
    from engines.cache import get_or_build

    device = "cpu"
    if backend == "trt":
        import torch

        cap = torch.cuda.get_device_capability()
        device = f"cuda:{torch.cuda.get_device_name()} sm{cap[0]}{cap[1]}"
    settings = _int8_settings(job) if precision == "int8" else {}
    if precision == "bf16":  # gated on the caller's faces, or not gated (the shipped record is read apart)
        settings = {"gated": job.validation is not None, "data": job.data_tag}
    from engines.build import build

    return get_or_build(job.checkpoint, backend, precision, device,
                        lambda target: build(job, backend, precision, target),
                        input_size=job.size(), settings=settings, cache_dir=job.cache_dir, warn=job.warn)

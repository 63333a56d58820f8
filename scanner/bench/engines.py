"""The model under test, rebuilt at each resolution: torch weights for the baseline, an engine
file (ONNX, TensorRT plan where TensorRT runs, or a .pt for the torch backend) for dfscan."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from scanner.errors import DfscanError

DEFAULT_ARCH = "mobilenetv2"


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a dfscan checkpoint, or a seeded untrained architecture."""

    checkpoint: Path | None = None
    arch: str | None = None
    seed: int = 0

    @property
    def trained(self) -> bool:
        return self.checkpoint is not None

    @property
    def label(self) -> str:
        if self.checkpoint is not None:
            return str(self.checkpoint)
        return f"{self.arch} (untrained, seed {self.seed})"

    def native_config(self):
        from engines.checkpoint import read_checkpoint
        from engines.config import ModelConfig
        from engines.models import get_model_config, get_model_entry

        if self.checkpoint is None:
            return get_model_config(self.arch)
        payload = read_checkpoint(self.checkpoint)
        get_model_entry(payload["arch"])
        return ModelConfig.from_dict({**get_model_config(payload["arch"]).to_dict(), **payload["config"]})

    def build(self, res: int):
        """``(torch model in eval mode, ModelConfig at res×res)``.

        Architectures whose weights fit any input size are built once and shared between
        resolutions (only the config changes); the others are rebuilt, from a checkpoint only
        at its own size.
        """
        from engines.models import get_model_entry

        native = self.native_config()
        if not get_model_entry(native.arch).fixed_input_size:
            model, config = _model_once(self)
            return model, config.with_input_size((res, res))
        if self.checkpoint is not None and tuple(native.input_size) != (res, res):
            raise DfscanError(f"{self.checkpoint}: {native.arch} has a fixed input size "
                              f"{native.input_size[0]}; bench it with --res {native.input_size[0]}")
        from engines.export import model_from_source

        return model_from_source(self.checkpoint, self.arch, self.seed, (res, res))


@functools.lru_cache(maxsize=2)
def _model_once(source: ModelSource):
    from engines.export import model_from_source

    return model_from_source(source.checkpoint, source.arch, source.seed)


def resolve_source(engine_path, arch, default_checkpoint: Path, seed: int = 0) -> ModelSource:
    """--engine (a .pt checkpoint) or --arch; neither: the bundled checkpoint, else untrained."""
    if engine_path is not None and arch is not None:
        raise DfscanError("give --engine or --arch, not both")
    if engine_path is not None:
        path = Path(engine_path)
        if path.suffix.lower() not in (".pt", ".pth"):
            raise DfscanError(f"--engine {path}: bench re-exports the model at every resolution, so it "
                              "needs the torch weights: pass a dfscan checkpoint (.pt), e.g. one from "
                              "'dfscan export --format pt', or --arch NAME")
        if not path.is_file():
            raise DfscanError(f"--engine {path}: file not found")
        return ModelSource(checkpoint=path)
    if arch is not None:
        return ModelSource(arch=arch, seed=seed)
    if default_checkpoint.is_file():
        return ModelSource(checkpoint=default_checkpoint)
    return ModelSource(arch=DEFAULT_ARCH, seed=seed)


def _trt_plan(onnx_path: Path, config, batch_size: int) -> tuple[Path | None, str]:
    """A TensorRT plan built from the ONNX file, or ``(None, why not)``."""
    from engines.backends import backend_for

    ok, why = backend_for(onnx_path, "trt").available()
    if not ok:
        return None, why
    try:
        from engines.trt_build import build_plan
    except ImportError:
        return None, "engines.trt_build (the plan builder) is missing from this checkout"
    plan = onnx_path.with_suffix(".plan")
    try:
        return Path(build_plan(onnx_path, plan, opt_batch=batch_size, max_batch=batch_size)), ""
    except Exception as exc:  # a builder failure must not end the whole sweep
        return None, f"TensorRT build failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"


def build_engine(source: ModelSource, res: int, backend: str, device: str, batch_size: int, tmp: Path,
                 precision: str = "fp32", calibration=None):
    """``(engine, torch model, config, note)`` at ``res``: the engine file is written under ``tmp``.

    ``backend``: 'auto' (a TensorRT plan where TensorRT runs on a GPU; on a CPU whichever of
    OpenVINO and ONNX Runtime is faster here, timed like ``dfscan run`` does, engines.race),
    'onnx', 'openvino' (CPU only), 'torch' or 'trt'. ``precision`` 'int8' (CPU) quantises the
    ONNX export on ``calibration(config)`` batches. ``note`` says why a TensorRT plan was not
    used, when it was wanted, or what the race measured.
    """
    from engines.backends import load_engine
    from engines.export import export_onnx, export_pt

    model, config = source.build(res)
    stem = Path(tmp) / f"{config.arch}-{res}"
    note = ""
    if precision == "int8" and (device == "gpu" or backend in ("torch", "trt")):
        raise DfscanError("bench --precision int8 times the CPU runtimes (onnx, openvino); use --device cpu")
    if precision == "bf16":
        return _bf16_engine(model, config, backend, device, stem)
    if backend == "torch":
        path = export_pt(model, config, stem.with_suffix(".pt"))
    else:
        path = export_onnx(model, config, stem.with_suffix(".onnx"))
        if precision == "int8":
            from engines.quantize import quantize_onnx

            path = quantize_onnx(path, stem.with_name(stem.name + "-int8.onnx"), calibration(config))
        if backend in ("auto", "trt"):
            plan, note = _trt_plan(path, config, batch_size) if device == "gpu" else (None, "")
            if plan is not None:
                path = plan
            elif backend == "trt":
                raise DfscanError(f"--backend trt: no TensorRT plan ({note or 'needs --device gpu'})")
    if backend == "auto" and device != "gpu":
        backend, note = _race(path, config)
    engine = load_engine(path, device="cuda" if device == "gpu" else "cpu",
                         backend="openvino" if backend == "openvino" else None)
    return engine, model, config, note


def _bf16_engine(model, config, backend: str, device: str, stem: Path):
    """OpenVINO running the fp32 export in bf16, as ``dfscan run`` does where the CPU has native
    bf16 (no race: bf16 is OpenVINO's alone; no gate: bench reports the accuracy itself)."""
    from engines.backends import load_engine
    from engines.backends.openvino_backend import bf16_native
    from engines.export import export_onnx

    if device == "gpu" or backend not in ("auto", "openvino"):
        raise DfscanError("bench --precision bf16 times OpenVINO on the CPU; use --device cpu --backend auto "
                          "(or openvino)")
    if not bf16_native():
        raise DfscanError("bench --precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where "
                          "OpenVINO would emulate it slower than fp32; bench fp32 or int8 here")
    engine = load_engine(export_onnx(model, config, stem.with_suffix(".onnx")), "cpu", "openvino", precision="bf16")
    ran = engine.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # an ov.Type
    if ran != "bf16":  # never label an fp32 run bf16
        raise DfscanError(f"bench --precision bf16: OpenVINO compiled the model in {ran}, not bf16")
    return engine, model, config, "openvino bf16 (the fp32 export run in bf16)"


def _race(path: Path, config) -> tuple[str, str]:
    """The faster CPU runtime for this file here, as ``dfscan run`` picks it (engines.race)."""
    from engines.autoselect import CPU_BACKENDS
    from engines.backends import backend_for, load_engine
    from engines.cache import default_cache_dir, library_version
    from engines.race import fastest

    names = [n for n in CPU_BACKENDS if backend_for(path, n).available()[0]]
    name, figures = fastest({n: (path, library_version(n)) for n in names}, config.input_size, None,
                            default_cache_dir(), lambda n, p: load_engine(p, "cpu", n))
    speeds = ", ".join(f"{n} {v:.0f}" for n, v in figures.get("faces_per_s", {}).items())
    return name, f"{name}: the faster CPU runtime here ({speeds} faces/s)" if speeds else ""

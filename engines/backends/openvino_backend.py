"""OpenVINO engine on the CPU: an IR (``.xml`` + ``.bin``), or an ONNX export when asked by name.

The model config travels inside the IR: ``engines.export.export_openvino`` stores the dfscan config
JSON in the model's ``rt_info`` under ``dfscan_config`` (it is written into the ``.xml``), so an IR
needs no sidecar. An ONNX file opened with ``backend="openvino"`` is converted on load
(``Core.read_model``) and its config read from the ONNX metadata, as the onnx backend does. A
QDQ-quantised ONNX (``engines.quantize``) loads the same way and runs in INT8.

Settings, and why:
- ``hint``: OpenVINO's PERFORMANCE_HINT. THROUGHPUT (the default) splits the cores into
  streams; ``infer`` cuts each batch into one slice per stream and runs the slices together, so
  one call still uses every core, without the per-layer thread barriers of one big request.
  LATENCY runs the whole batch as one request on all threads. Measured on the project's 2-core
  EPYC (MobileNetV2 224, batch 64; benchmarks/results/engines-cpu-2026-12-01/RESULTS.md, a
  loaded machine), THROUGHPUT was 10–20 % faster in fp32 and INT8 in every round of the
  focused run, and tied or ahead in the full one.
- ``threads``: INFERENCE_NUM_THREADS, so the caller can budget cores between DALI and inference.
- ``precision``: INFERENCE_PRECISION_HINT, pinned to f32 unless bf16 is asked for (by the caller
  or by the IR: ``dfscan export --format openvino --bf16`` stores ``dfscan_precision`` in its
  rt_info): on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise silently run fp32 models
  in bf16, and bf16 moves scores (dfscan uses it only where an accuracy gate passed,
  ``engines.autoselect``). INT8 (QDQ) models still run their quantised layers in INT8.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from engines.backends._registry import register_backend
from engines.errors import DfscanError
from engines.config import ModelConfig

CONFIG_KEY = "dfscan_config"
PRECISION_KEY = "dfscan_precision"  # rt_info of an IR exported to run in bf16
HINTS = ("LATENCY", "THROUGHPUT")
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # dfscan's names → OpenVINO's
DEFAULT_HINT = "THROUGHPUT"
INSTALL_HINT = "pip install openvino"


def _available():
    try:
        import openvino as ov
    except ImportError:
        return False, f"openvino is not installed: {INSTALL_HINT}"
    return True, f"openvino {ov.__version__.split('-')[0]} (CPU)"


def ir_config(model, path) -> ModelConfig:
    """The ModelConfig in an ``openvino.Model``'s rt_info; DfscanError naming ``path`` if absent."""
    if not model.has_rt_info([CONFIG_KEY]):
        raise DfscanError(f"{path}: no '{CONFIG_KEY}' in the IR's rt_info; export it with "
                          f"'dfscan export --format openvino'")
    try:
        return ModelConfig.from_dict(json.loads(model.get_rt_info([CONFIG_KEY]).astype(str)))
    except (ValueError, TypeError) as exc:
        raise DfscanError(f"{path}: '{CONFIG_KEY}' in the IR is not a dfscan config ({exc}); "
                          f"re-export it with 'dfscan export --format openvino'") from None


@functools.lru_cache(maxsize=None)
def _core():
    """The process's one ``ov.Core``. OpenVINO's CPU plugin (one per Core) gives the thread that
    creates it an alternate signal stack of its own and, when the Core is released, puts back the
    one it found and unmaps its own: with two Cores released in creation order, the thread is left
    with an unmapped signal stack, and the next signal with a Python handler (Ctrl-C, SIGTERM,
    torch's SIGCHLD) kills the process with SIGSEGV. One Core that lives as long as the process
    never unmaps it (and reading the plugin's capabilities once is cheaper too)."""
    import openvino as ov

    return ov.Core()


class OpenVinoEngine:
    """One compiled model and one infer request; not thread-safe (like the other engines)."""

    name = "openvino"

    def __init__(self, path, device: str = "cpu", threads: int | None = None, hint: str | None = None,
                 precision: str | None = None):
        import openvino as ov

        path = Path(path)
        if device != "cpu":
            raise DfscanError(f"{path}: the openvino backend runs on the CPU only (got device "
                              f"{device!r}); use the trt or torch backend on a GPU")
        hint = (hint or DEFAULT_HINT).upper()
        if hint not in HINTS:
            raise DfscanError(f"{path}: unknown OpenVINO hint {hint!r}; choose one of {', '.join(HINTS)}")
        if threads is not None and threads < 1:
            raise DfscanError(f"{path}: threads must be at least 1, got {threads}")
        core = _core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # RuntimeError with a multi-line parser report
            raise DfscanError(f"{path}: OpenVINO cannot read it ({str(exc).strip().splitlines()[0][:200]}); "
                              f"re-export it with 'dfscan export --format openvino'") from None
        if path.suffix.lower() == ".onnx":
            from engines.backends.onnx_backend import read_onnx_config

            self.config = read_onnx_config(path)
        else:
            self.config = ir_config(model, path)
        if precision is None:  # the IR's own, else fp32
            precision = model.get_rt_info([PRECISION_KEY]).astype(str) if model.has_rt_info([PRECISION_KEY]) else "fp32"
        if precision not in INFERENCE_PRECISIONS:
            raise DfscanError(f"{path}: the openvino backend runs fp32 or bf16, not {precision!r}")
        properties = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision]}
        if threads is not None:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        # THROUGHPUT splits the cores into streams, and one request runs on one stream only:
        # a batch is cut into one slice per stream and the slices run together.
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self.compiled, self.streams) if self.streams > 1 else None
        self.device, self.hint, self.threads, self.precision = device, hint, threads, precision

    def infer(self, batch) -> np.ndarray:
        """Logits (N, classes) as float32 numpy for a (N, 3, H, W) batch (numpy or torch)."""
        if not isinstance(batch, np.ndarray):  # a torch tensor, possibly on the GPU
            batch = batch.detach().float().cpu().numpy()
        h, w = self.config.input_size
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
            raise DfscanError(f"openvino engine expects (N, 3, {h}, {w}) input, got {tuple(batch.shape)}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._queue is None or len(batch) < 2 * self.streams:
            self.request.infer({0: batch}, share_inputs=True)
            # The output tensor is reused by the next infer: hand the caller its own copy.
            return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        slices = np.array_split(np.arange(len(batch)), self.streams)
        out = [None] * len(slices)

        def done(request, index):
            out[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

        self._queue.set_callback(done)
        for index, rows in enumerate(slices):
            self._queue.start_async({0: batch[rows[0]:rows[-1] + 1]}, index, share_inputs=True)
        self._queue.wait_all()
        return np.concatenate(out)


def bf16_native() -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (AVX512-BF16 or AMX); elsewhere a bf16
    hint buys nothing, so dfscan does not offer it."""
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no openvino, or no CPU plugin
        return False


@register_backend("openvino", (".xml",), _available,
                  "OpenVINO IR on the CPU (also reads .onnx with --backend openvino)")
def load_openvino_engine(path, device="cpu", threads: int | None = None, hint: str | None = None,
                         precision: str | None = None):
    return OpenVinoEngine(path, device, threads=threads, hint=hint, precision=precision)

"""TensorRT engine: a serialised plan (``.plan``/``.engine``) plus its sidecar ``<plan>.json``.

A plan carries no metadata of its own, so ``engines.trt_build.build_plan`` writes the model config
and build settings beside it. Inference uses TensorRT 10's tensor-name API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) on a torch CUDA stream, so a CUDA tensor from DALI
(via dlpack) is read in place. ``tensorrt`` is imported only after a GPU has been seen.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engines.backends._registry import register_backend
from engines.config import ModelConfig
from engines.errors import DfscanError

CONFIG_KEY = "dfscan_config"
INSTALL_HINT = "pip install 'dfscan[tensorrt]' on a machine with an NVIDIA GPU (CUDA 12)"
_ALIGN = 256  # TensorRT requires every tensor address to be 256-byte aligned
_LOGGER = None


def sidecar_path(plan) -> Path:
    """``model.plan`` -> ``model.plan.json``: where the model config and build settings live."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def _available():
    # Cheap and safe on any machine: the GPU is checked before tensorrt is even imported, and no
    # runtime or builder is created (that would crash without a GPU).
    try:
        import torch
    except ImportError:
        return False, "torch is not installed: pip install torch"
    if not torch.cuda.is_available():
        return False, "TensorRT needs an NVIDIA GPU and none is visible; use the onnx or torch backend"
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError from a wheel whose libraries do not load
        return False, f"TensorRT is not installed or does not load ({type(exc).__name__}): {INSTALL_HINT}"
    return True, f"tensorrt {trt.__version__}"


def import_tensorrt(what: str):
    """The ``tensorrt`` module; raises DfscanError ``"<what>: <why and what to install>"`` if unusable."""
    ok, why = _available()
    if not ok:
        raise DfscanError(f"{what}: {why}")
    import tensorrt as trt

    return trt


def trt_logger(trt):
    """One logger per process: TensorRT complains when builder and runtime are given different ones."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _read_sidecar(path: Path) -> tuple[ModelConfig, dict]:
    side = sidecar_path(path)
    if not side.is_file():
        raise DfscanError(f"{path}: sidecar {side.name} with the model config is missing; "
                          f"rebuild the plan with 'dfscan export --format plan' or copy the .json beside it")
    try:
        data = json.loads(side.read_text())
        return ModelConfig.from_dict(data[CONFIG_KEY]), data.get("build", {})
    except (ValueError, KeyError, TypeError) as exc:
        raise DfscanError(f"{side}: not a dfscan plan sidecar ({exc!r}); rebuild the plan") from None


class TrtEngine:
    """A TensorRT plan on one GPU. Not thread-safe: one execution context, one stream."""

    name = "trt"

    def __init__(self, path, device: str = "cuda"):
        path = Path(path)
        self.config, self.build = _read_sidecar(path)
        trt = import_tensorrt(str(path))
        import torch

        self._torch = torch
        # A plan only runs on a GPU: 'cuda:N' is honoured, anything else means the current device.
        dev = torch.device(device) if str(device).startswith("cuda") else torch.device("cuda")
        self._dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        self.device = str(self._dev)
        with torch.cuda.device(self._dev):
            self._runtime = trt.Runtime(trt_logger(trt))  # kept: the engine must not outlive it
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                built = self.build.get("tensorrt", "?"), self.build.get("gpu", "?")
                raise DfscanError(f"{path}: TensorRT {trt.__version__} cannot load this plan (built with "
                                  f"TensorRT {built[0]} on {built[1]}); rebuild it on this machine")
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self._dev)
        self._bind_io(trt, path)
        self._buf = None  # output buffer, reused between batches and grown on demand

    def _bind_io(self, trt, path):
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise DfscanError(f"{path}: expected one input and one output, found {ins} and {outs}")
        self._in, self._out = ins[0], outs[0]
        # trt.Dims index like sequences but may not slice: turn them into tuples first.
        lo, _, hi = (tuple(d) for d in engine.get_tensor_profile_shape(self._in, 0))
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        if hi[2:] != tuple(self.config.input_size):
            raise DfscanError(f"{path}: plan input is {hi[2:]} but its sidecar says "
                              f"{tuple(self.config.input_size)}; rebuild the plan")
        self.num_classes = int(tuple(engine.get_tensor_shape(self._out))[-1])
        dtypes = {trt.DataType.FLOAT: self._torch.float32, trt.DataType.HALF: self._torch.float16}
        try:
            self._in_dtype = dtypes[engine.get_tensor_dtype(self._in)]
            self._out_dtype = dtypes[engine.get_tensor_dtype(self._out)]
        except KeyError:
            raise DfscanError(f"{path}: only float32/float16 plan inputs and outputs are supported") from None

    def infer(self, batch) -> np.ndarray:
        """Logits (N, classes) as float32 numpy for a (N, 3, H, W) batch.

        ``batch`` is a torch CUDA tensor (read in place, no host round trip) or a numpy array /
        CPU tensor (copied to the GPU once). Batches above the plan's max batch run in chunks.
        """
        torch = self._torch
        if isinstance(batch, torch.Tensor) and batch.is_cuda:
            # DALI output or a tensor made on the caller's stream: order our work after it.
            self._stream.wait_stream(torch.cuda.current_stream(batch.device))
        with torch.cuda.device(self._dev), torch.cuda.stream(self._stream):
            x = self._to_device(batch)
            n = x.shape[0]
            if n <= self.max_batch:
                return self._run(x)[:n].cpu().float().numpy()
            result = torch.empty((n, self.num_classes), dtype=self._out_dtype, device=self._dev)
            for start in range(0, n, self.max_batch):
                chunk = x[start:start + self.max_batch]
                result[start:start + len(chunk)].copy_(self._run(chunk)[:len(chunk)])
            return result.cpu().float().numpy()  # the copy waits for our stream

    def _to_device(self, batch):
        torch = self._torch
        if not isinstance(batch, torch.Tensor):
            batch = torch.from_numpy(np.ascontiguousarray(batch))
        h, w = self.config.input_size
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
            raise DfscanError(f"trt engine expects (N, 3, {h}, {w}) input, got {tuple(batch.shape)}")
        return batch.to(self._dev, self._in_dtype, non_blocking=True).contiguous()

    def _run(self, x):
        """Enqueue one chunk (at most max_batch rows); returns the output buffer, rows [0, len)."""
        torch = self._torch
        if x.shape[0] < self.min_batch:  # the profile starts above this chunk: pad with zeros
            x = torch.cat([x, x.new_zeros((self.min_batch - x.shape[0], *x.shape[1:]))])
        if x.data_ptr() % _ALIGN:  # a view at an odd offset (e.g. a chunk at an odd resolution)
            x = x.clone()
        rows = x.shape[0]
        if self._buf is None or self._buf.shape[0] < rows:
            self._buf = torch.empty((rows, self.num_classes), dtype=self._out_dtype, device=self._dev)
        ctx = self._context
        if not ctx.set_input_shape(self._in, tuple(x.shape)):
            raise DfscanError(f"trt engine: batch shape {tuple(x.shape)} is outside the plan's profile")
        ctx.set_tensor_address(self._in, x.data_ptr())
        ctx.set_tensor_address(self._out, self._buf.data_ptr())
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise DfscanError("trt engine: TensorRT failed to run the batch (see its log above)")
        # A padded or cloned x may be freed now: torch's allocator reuses its memory only for
        # work queued later on this same stream, i.e. after TensorRT has read it.
        return self._buf


@register_backend("trt", (".plan", ".engine"), _available, "TensorRT plan (GPU, production)")
def load_trt_engine(path, device="cuda"):
    return TrtEngine(path, device)

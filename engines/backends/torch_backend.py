"""The torch fallback engine: a dfscan checkpoint run eagerly (fp32 on CPU, fp16 on CUDA)."""
from __future__ import annotations

import numpy as np

from engines.backends._registry import register_backend
from engines.errors import DfscanError

PRECISIONS = ("fp32", "fp16", "bf16")


def _available():
    try:
        import torch
    except ImportError:
        return False, "torch is not installed: pip install torch"
    return True, f"torch {torch.__version__}" + (" (CUDA)" if torch.cuda.is_available() else " (CPU)")


class TorchEngine:
    name = "torch"

    def __init__(self, model, config, device: str = "cpu", half: bool | None = None,
                 precision: str | None = None):
        """``precision`` ('fp32', 'fp16', 'bf16') wins over the older ``half`` flag; by default
        fp16 on CUDA and fp32 on the CPU."""
        import torch

        if precision is None:
            precision = "fp16" if ((device == "cuda") if half is None else half) else "fp32"
        if precision not in PRECISIONS:
            raise DfscanError(f"torch engine: unknown precision {precision!r}; choose one of {PRECISIONS}")
        self.config = config
        self.device = device
        self.precision = precision
        self.half = precision == "fp16"
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.model = model.to(device).eval().to(self._dtype)
        self._torch = torch

    def infer(self, batch) -> np.ndarray:
        """Logits (N, classes) as float32 numpy for a (N, 3, H, W) batch (numpy or torch)."""
        torch = self._torch
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        x = x.to(self.device, non_blocking=True).to(self._dtype)
        with torch.inference_mode():
            return self.model(x).float().cpu().numpy()


@register_backend("torch", (".pt", ".pth"), _available,
                  "dfscan torch checkpoint, eager inference (the fallback)")
def load_torch_engine(path, device="cpu", precision: str | None = None, threads: int | None = None):
    """``threads`` sets torch's intra-op pool, which is process-wide (``torch.set_num_threads``)."""
    from engines.checkpoint import load_checkpoint

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    model, config, _ = load_checkpoint(path)
    return TorchEngine(model, config, device, precision=precision)

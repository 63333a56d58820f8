"""The torch fallback engine: a dfscan checkpoint run eagerly (fp32 on CPU, fp16 on CUDA)."""
from __future__ import annotations

import numpy as np

from engines.backends._registry import register_backend


def _available():
    try:
        import torch
    except ImportError:
        return False, "torch is not installed: pip install torch"
    return True, f"torch {torch.__version__}" + (" (CUDA)" if torch.cuda.is_available() else " (CPU)")


class TorchEngine:
    name = "torch"

    def __init__(self, model, config, device: str = "cpu", half: bool | None = None):
        import torch

        self.config = config
        self.device = device
        self.half = (device == "cuda") if half is None else half
        self.model = model.to(device).eval()
        if self.half:
            self.model = self.model.half()
        self._torch = torch

    def infer(self, batch) -> np.ndarray:
        """Logits (N, classes) as float32 numpy for a (N, 3, H, W) batch (numpy or torch)."""
        torch = self._torch
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        x = x.to(self.device, non_blocking=True)
        x = x.half() if self.half else x.float()
        with torch.inference_mode():
            return self.model(x).float().cpu().numpy()


@register_backend("torch", (".pt", ".pth"), _available,
                  "dfscan torch checkpoint, eager inference (the fallback)")
def load_torch_engine(path, device="cpu"):
    from engines.checkpoint import load_checkpoint

    model, config, _ = load_checkpoint(path)
    return TorchEngine(model, config, device)

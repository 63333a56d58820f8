"""The settings of one scan, shared by the pipeline (batching, cropping) and the run loop."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from scanner.catalog.files import DEFAULT_MAX_PIXELS

# Input pixels one batch of crops may hold (faces per batch × height × width): 64 faces at 224 px.
# The engine's activations, the float crops in flight and DALI's buffers all grow with it, so a fixed
# batch of 64 took 7.5 GB at 512 px and was killed at 1024 px (24 GB) on our 24 GiB machine.
# benchmarks/batch_budget.py (bundled MobileNetV2, ONNX Runtime CPU, 2-core EPYC under load): peak
# RSS ~0.8 GB + ~0.22 GB per M pixels (1.5 GB at 3.2 M, 3.6 GB at 8.4 M) at every size, while
# faces/s hardly changed beyond ~1-3 M pixels (512 px: 6.2 faces/s at 12 faces, 6.1 at 32).
BATCH_PIXELS = 64 * 224 * 224

DEFAULT_THRESHOLD = 0.5  # for a model that carries no threshold of its own


def batch_for(input_size, requested: int, budget: int = BATCH_PIXELS) -> int:
    """Faces per batch for crops of ``input_size`` (``(h, w)`` or one side): ``requested``, lowered
    so that a batch holds at most ``budget`` input pixels, and never below 1."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    return max(1, min(int(requested), int(budget) // max(1, int(h) * int(w))))


@dataclass
class RunSettings:
    batch_size: int = 64  # requested faces per batch; ``fitted`` lowers it for large inputs
    device: str = "cpu"  # 'cpu' or 'gpu'
    # score_fake at or above it is Fake. None: the model's own (ModelConfig.threshold, chosen on
    # validation by 'dfscan train'), else DEFAULT_THRESHOLD; ``threshold_for`` says which
    threshold: float | None = None
    threshold_origin: str | None = None  # 'cli', 'model' or 'default' once a run has resolved it
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_threads: int | None = None  # DALI's threads; None: budgeted with the engine's (run.engine)
    queue_depth: int = 2
    # the engine for a checkpoint (scanner.run.engine): None leaves the choice to this machine
    backend: str | None = None  # 'openvino', 'onnx', 'torch', 'trt'
    precision: str | None = None  # 'fp32', 'fp16', 'bf16', 'int8'
    cache_dir: str | None = None  # compiled engines; None: $XDG_CACHE_HOME/dfscan/engines
    engine_threads: int | None = None  # None: every core (CPU engines)
    calib_data: str | None = None  # images whose crops calibrate an INT8 engine
    gate_data: str | None = None  # labelled images the INT8 engine must score as well as fp32
    # read, check and decode in a supervised child process (CPU only), so an image that crashes
    # the decoder costs its own faces ('decoder_crashed'), not the run
    isolate_decoder: bool = True
    batch_pixels: int = BATCH_PIXELS

    @property
    def decodes_in_child(self) -> bool:
        """Whether images are decoded in a supervised child process: on the CPU with
        ``isolate_decoder`` (GPU runs keep their CUDA crops in their own process)."""
        return self.isolate_decoder and self.device == "cpu"

    def threshold_for(self, config) -> tuple[float, str]:
        """``(threshold, origin)`` for a model with ``config``: the one given (``'cli'``), else
        the model's (``'model'``), else DEFAULT_THRESHOLD (``'default'``)."""
        if self.threshold is not None:
            return float(self.threshold), self.threshold_origin or "cli"
        if getattr(config, "threshold", None) is not None:
            return float(config.threshold), "model"
        return DEFAULT_THRESHOLD, "default"

    def fitted(self, input_size, log=None) -> RunSettings:
        """These settings with ``batch_size`` within the pixel budget for ``input_size``; the
        same object when nothing changes. ``log`` (a callable) hears one line when it is lowered."""
        n = batch_for(input_size, self.batch_size, self.batch_pixels)
        if n == self.batch_size:
            return self
        if log is not None:
            log(batch_note(input_size, self.batch_size, n, self.batch_pixels))
        return dataclasses.replace(self, batch_size=n)


def batch_note(input_size, requested: int, used: int, budget: int = BATCH_PIXELS) -> str:
    """The line that tells a user their batch size was lowered, and why."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    return (f"batch size {requested} -> {used} faces for {h}x{w} inputs: a batch holds at most "
            f"{budget / 1e6:.1f} M input pixels (64 faces at 224 px), which bounds memory")

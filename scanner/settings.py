"""The settings of one scan, shared by the pipeline (batching, cropping) and the run loop."""
from __future__ import annotations

from dataclasses import dataclass

from scanner.catalog.files import DEFAULT_MAX_PIXELS


@dataclass
class RunSettings:
    batch_size: int = 64
    device: str = "cpu"  # 'cpu' or 'gpu'
    threshold: float = 0.5
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

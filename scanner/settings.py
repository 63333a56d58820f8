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
    num_threads: int | None = None
    queue_depth: int = 2
    # read, check and decode in a supervised child process (CPU only), so an image that crashes
    # the decoder costs its own faces ('decoder_crashed'), not the run
    isolate_decoder: bool = True

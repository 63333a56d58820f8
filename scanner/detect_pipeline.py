"""The detection DALI graph: decode each image once and emit a downscaled copy for the detector.

A separate graph from the scan graph in ``scanner.pipeline`` (which is left exactly as it is):
its batch is one slot per image, and each slot's output size is given per sample, so an image is
only ever shrunk (to ``max_side`` on its longer side), never enlarged. Boxes found on the copy
are scaled back to full-resolution pixels and then go through the scan's usual crop path.
Runs on the CPU (``device_id=None``) or the GPU (``'mixed'`` decoder), like the scan graph.
"""
from __future__ import annotations

import numpy as np


def detection_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(height, width)`` of the detector's copy: the longer side at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _graph(decoder_device: str):
    from nvidia.dali import fn, types

    encoded = fn.external_source(name="encoded", dtype=types.UINT8)
    size = fn.external_source(name="size", dtype=types.FLOAT)  # (h, w) of the copy
    images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB,
                               adjust_orientation=False)  # boxes refer to the image as stored
    return fn.resize(images, size=size, interp_type=types.INTERP_LINEAR, antialias=True)


def build_detect_pipeline(batch_size: int, device: str = "cpu", num_threads: int | None = None):
    """A built DALI pipeline that turns encoded images into downscaled RGB copies."""
    import os

    from nvidia.dali import pipeline_def

    gpu = device == "gpu"
    pipe = pipeline_def(_graph)(decoder_device="mixed" if gpu else "cpu", batch_size=batch_size,
                                num_threads=num_threads or max(1, os.cpu_count() or 1),
                                device_id=0 if gpu else None, prefetch_queue_depth=1,
                                exec_async=False, exec_pipelined=False)
    pipe.build()
    return pipe


def run_detect_batch(pipe, encoded: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The downscaled copies (HWC uint8 RGB, host memory). Raises RuntimeError on a decode failure."""
    pipe.feed_input("encoded", encoded)
    pipe.feed_input("size", [np.array(s, dtype=np.float32) for s in sizes])
    (out,) = pipe.run()
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return [np.array(out[i]) for i in range(len(encoded))]  # copies: DALI reuses its buffers

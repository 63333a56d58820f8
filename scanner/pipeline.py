"""The one DALI graph: decode each image once, crop and resize every face box, normalise.

The batch is a flat batch of faces. Each image's encoded bytes sit in the slot of its first face
(the "owner" slot); a conditional sends only owner slots to the decoder, so an image with eight
faces is decoded once. ``fn.permute_batch`` then hands every face slot its image, and
``fn.resize`` with a per-face ROI crops and resizes in one step. The same graph runs on the CPU
(``device_id=None``, CPU decoder) and on the GPU (``device_id=0``, ``'mixed'`` decoder).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.errors import DfscanError

INTERP = {"linear": "INTERP_LINEAR", "cubic": "INTERP_CUBIC", "bicubic": "INTERP_CUBIC",
          "nearest": "INTERP_NN", "lanczos": "INTERP_LANCZOS3"}


@dataclass
class FaceBatch:
    """What one pipeline iteration consumes: one slot per face."""

    encoded: list[np.ndarray]  # per slot: the encoded image in owner slots, empty elsewhere
    owner: list[bool]
    source: list[int]  # per slot: index of the owner slot of its image
    roi: list[tuple[float, float, float, float]]  # per slot: (x0, y0, x1, y1) pixels

    def __len__(self):
        return len(self.owner)


def _graph(decoder_device: str, size, mean, std, interp: str, with_images: bool):
    from nvidia.dali import fn, types

    encoded = fn.external_source(name="encoded", dtype=types.UINT8)
    owner = fn.external_source(name="owner", dtype=types.BOOL)
    source = fn.external_source(name="source", dtype=types.INT32)
    roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT)  # (y0, x0)
    roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT)  # (y1, x1)
    if owner:
        images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB,
                                   adjust_orientation=False)
    else:
        # a 1x1 stand-in: these slots take their pixels from the owner slot below
        images = fn.constant(idata=0, shape=[1, 1, 3], dtype=types.UINT8, layout="HWC")
        if decoder_device == "mixed":
            images = images.gpu()
    faces = fn.permute_batch(images, indices=source)
    faces = fn.resize(faces, size=list(size), roi_start=roi_start, roi_end=roi_end,
                      roi_relative=False, interp_type=getattr(types, INTERP[interp]), antialias=True)
    faces = fn.crop_mirror_normalize(faces, dtype=types.FLOAT, output_layout="CHW",
                                     mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])
    return (faces, images) if with_images else (faces,)


def build_pipeline(config, batch_size: int, device: str = "cpu", num_threads: int | None = None,
                   with_images: bool = False, prefetch: int = 2):
    """A built DALI pipeline for ``config`` (a ModelConfig) on ``device`` ('cpu' or 'gpu').

    ``with_images`` also returns the decoded images (tests use it to count decodes).
    """
    import os

    from nvidia.dali import pipeline_def

    if config.interpolation not in INTERP:
        raise DfscanError(f"interpolation {config.interpolation!r} unknown; one of {', '.join(INTERP)}")
    gpu = device == "gpu"
    pipe_fn = pipeline_def(_graph, enable_conditionals=True)
    pipe = pipe_fn(decoder_device="mixed" if gpu else "cpu", size=config.input_size,
                   mean=config.mean, std=config.std, interp=config.interpolation,
                   with_images=with_images, batch_size=batch_size,
                   num_threads=num_threads or max(1, os.cpu_count() or 1),
                   device_id=0 if gpu else None, prefetch_queue_depth=1, exec_async=False,
                   exec_pipelined=False)
    pipe.build()
    return pipe


def run_batch(pipe, batch: FaceBatch):
    """Run one FaceBatch; returns the DALI outputs (faces[, images]). Raises on a decode failure."""
    pipe.feed_input("encoded", batch.encoded)
    pipe.feed_input("owner", [np.array(v, dtype=np.bool_) for v in batch.owner])
    pipe.feed_input("source", [np.array(v, dtype=np.int32) for v in batch.source])
    pipe.feed_input("roi_start", [np.array((r[1], r[0]), dtype=np.float32) for r in batch.roi])
    pipe.feed_input("roi_end", [np.array((r[3], r[2]), dtype=np.float32) for r in batch.roi])
    return pipe.run()

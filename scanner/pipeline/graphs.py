"""Every DALI graph dfscan builds, and the one way they are built.

The scan graph: the batch is a flat batch of faces. Each image's encoded bytes sit in the slot of
its first face (the "owner" slot); a conditional sends only owner slots to the decoder, so an
image with eight faces is decoded once. ``fn.permute_batch`` then hands every face slot its image,
and ``fn.resize`` with a per-face ROI crops and resizes in one step.

The detection graph: one slot per image, each decoded once and shrunk (never enlarged) to the
size given per sample; the detector's boxes are scaled back to full-resolution pixels and then go
through the scan's usual crop path. The decode-only graph is what ``dfscan bench`` measures the
scan against. The video graph decodes chosen frames of one clip (``dali_frames``), which then
enter the frames graph as PyAV's frames do.

Each graph runs on the CPU (``device_id=None``, CPU decoder) or on the GPU (``device_id=0``,
``'mixed'`` decoder): the device is a parameter, never a second copy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from scanner.errors import DfscanError

INTERP = {"linear": "INTERP_LINEAR", "cubic": "INTERP_CUBIC", "bicubic": "INTERP_CUBIC",
          "nearest": "INTERP_NN", "lanczos": "INTERP_LANCZOS3"}


@dataclass
class FaceBatch:
    """What one scan-graph iteration consumes: one slot per face."""

    encoded: list[np.ndarray]  # per slot: the encoded image in owner slots, empty elsewhere
    owner: list[bool]
    source: list[int]  # per slot: index of the owner slot of its image
    roi: list[tuple[float, float, float, float]]  # per slot: (x0, y0, x1, y1) pixels

    def __len__(self):
        return len(self.owner)


def _decoded(encoded, decoder_device: str):
    from nvidia.dali import fn, types

    # boxes refer to the image as stored: EXIF orientation is not applied
    return fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB, adjust_orientation=False)


def _scan_graph(decoder_device: str, size, mean, std, interp: str, with_images: bool):
    from nvidia.dali import fn, types

    encoded = fn.external_source(name="encoded", dtype=types.UINT8)
    owner = fn.external_source(name="owner", dtype=types.BOOL)
    source = fn.external_source(name="source", dtype=types.INT32)
    roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT)  # (y0, x0)
    roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT)  # (y1, x1)
    if owner:
        images = _decoded(encoded, decoder_device)
    else:
        # a 1x1 stand-in: these slots take their pixels from the owner slot below
        images = fn.constant(idata=0, shape=[1, 1, 3], dtype=types.UINT8, layout="HWC")
        if decoder_device == "mixed":
            images = images.gpu()
    faces = _crop_faces(images, source, roi_start, roi_end, size, mean, std, interp)
    return (faces, images) if with_images else (faces,)


def _crop_faces(images, source, roi_start, roi_end, size, mean, std, interp: str):
    """The crop convention in DALI: every face slot takes its image (``source``), is cropped to
    its ROI and resized in one step, then normalised. Both the image and the video graphs use it."""
    from nvidia.dali import fn, types

    faces = fn.permute_batch(images, indices=source)
    faces = fn.resize(faces, size=list(size), roi_start=roi_start, roi_end=roi_end,
                      roi_relative=False, interp_type=getattr(types, INTERP[interp]), antialias=True)
    return fn.crop_mirror_normalize(faces, dtype=types.FLOAT, output_layout="CHW",
                                    mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])


def _frames_graph(decoder_device: str, size, mean, std, interp: str):
    """The scan graph for video frames decoded outside DALI (PyAV): owner slots hold the RGB frame,
    the others a 1x1 stand-in; from there the crop path is the images' own."""
    from nvidia.dali import fn, types

    frames = fn.external_source(name="frames", dtype=types.UINT8, layout="HWC")
    source = fn.external_source(name="source", dtype=types.INT32)
    roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT)  # (y0, x0)
    roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT)  # (y1, x1)
    if decoder_device == "mixed":
        frames = frames.gpu()
    return _crop_faces(frames, source, roi_start, roi_end, size, mean, std, interp)


def _detect_graph(decoder_device: str):
    from nvidia.dali import fn, types

    encoded = fn.external_source(name="encoded", dtype=types.UINT8)
    size = fn.external_source(name="size", dtype=types.FLOAT)  # (h, w) of the copy
    return fn.resize(_decoded(encoded, decoder_device), size=size, interp_type=types.INTERP_LINEAR,
                     antialias=True)


def _decode_graph(decoder_device: str):
    from nvidia.dali import fn, types

    return _decoded(fn.external_source(name="encoded", dtype=types.UINT8), decoder_device)


def _build(graph, batch_size: int, device: str, num_threads: int | None, conditionals: bool = False, **args):
    """Build ``graph`` synchronously: a failed batch can then be re-run in halves at once."""
    from nvidia.dali import pipeline_def

    gpu = device == "gpu"
    pipe = pipeline_def(graph, enable_conditionals=conditionals)(
        decoder_device="mixed" if gpu else "cpu", **args, batch_size=batch_size,
        num_threads=num_threads or max(1, os.cpu_count() or 1), device_id=0 if gpu else None,
        prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
    pipe.build()
    return pipe


def build_pipeline(config, batch_size: int, device: str = "cpu", num_threads: int | None = None,
                   with_images: bool = False):
    """The scan graph for ``config`` (a ModelConfig) on ``device`` ('cpu' or 'gpu').

    ``with_images`` also returns the decoded images (tests use it to count decodes).
    """
    if config.interpolation not in INTERP:
        raise DfscanError(f"interpolation {config.interpolation!r} unknown; one of {', '.join(INTERP)}")
    return _build(_scan_graph, batch_size, device, num_threads, conditionals=True, size=config.input_size,
                  mean=config.mean, std=config.std, interp=config.interpolation, with_images=with_images)


def build_frames_pipeline(config, batch_size: int, device: str = "cpu", num_threads: int | None = None):
    """The scan graph for decoded video frames (``run_frames_batch``), same crops as ``build_pipeline``."""
    if config.interpolation not in INTERP:
        raise DfscanError(f"interpolation {config.interpolation!r} unknown; one of {', '.join(INTERP)}")
    return _build(_frames_graph, batch_size, device, num_threads, size=config.input_size,
                  mean=config.mean, std=config.std, interp=config.interpolation)


STAND_IN = np.zeros((1, 1, 3), np.uint8)


def run_frames_batch(pipe, frames: list[np.ndarray | None], source: list[int], rois) -> np.ndarray:
    """Crops (N, C, H, W float32, host memory) for one slot per face: ``frames[i]`` is the HWC RGB
    frame in an owner slot and None elsewhere, ``source[i]`` the owner slot of face ``i``."""
    pipe.feed_input("frames", [STAND_IN if f is None else f for f in frames])
    pipe.feed_input("source", [np.array(v, dtype=np.int32) for v in source])
    pipe.feed_input("roi_start", [np.array((r[1], r[0]), dtype=np.float32) for r in rois])
    pipe.feed_input("roi_end", [np.array((r[3], r[2]), dtype=np.float32) for r in rois])
    (out,) = pipe.run()
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return np.array(out.as_tensor())  # a copy: DALI reuses its buffers


def run_batch(pipe, batch: FaceBatch):
    """Run one FaceBatch; returns the DALI outputs (faces[, images]). Raises on a decode failure."""
    pipe.feed_input("encoded", batch.encoded)
    pipe.feed_input("owner", [np.array(v, dtype=np.bool_) for v in batch.owner])
    pipe.feed_input("source", [np.array(v, dtype=np.int32) for v in batch.source])
    pipe.feed_input("roi_start", [np.array((r[1], r[0]), dtype=np.float32) for r in batch.roi])
    pipe.feed_input("roi_end", [np.array((r[3], r[2]), dtype=np.float32) for r in batch.roi])
    return pipe.run()


def detection_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(height, width)`` of the detector's copy: the longer side at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def build_detect_pipeline(batch_size: int, device: str = "cpu", num_threads: int | None = None):
    """The detection graph: encoded images → downscaled RGB copies."""
    return _build(_detect_graph, batch_size, device, num_threads)


def run_detect_batch(pipe, encoded: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The downscaled copies (HWC uint8 RGB, host memory). Raises RuntimeError on a decode failure."""
    pipe.feed_input("encoded", encoded)
    pipe.feed_input("size", [np.array(s, dtype=np.float32) for s in sizes])
    (out,) = pipe.run()
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return [np.array(out[i]) for i in range(len(encoded))]  # copies: DALI reuses its buffers


def build_decode_pipeline(batch_size: int, device: str = "cpu", num_threads: int | None = None):
    """The decode-only graph (``dfscan bench``'s ceiling): feed ``encoded``, run, nothing else."""
    return _build(_decode_graph, batch_size, device, num_threads)


def _video_graph(decoder_device: str):
    from nvidia.dali import fn, types

    # no_copy: the clip's bytes are a memory map of the file, never copied into the process
    encoded = fn.external_source(name="encoded", dtype=types.UINT8, no_copy=True)
    frames = fn.external_source(name="frames", dtype=types.INT32)
    # pad_mode none: an index past the clip's end is an error, never a made-up black frame
    return fn.decoders.video(encoded, device=decoder_device, frames=frames, pad_mode="none")


def build_video_pipeline(device: str = "cpu", num_threads: int | None = None):
    """The video graph (``run_video_batch``): one clip's chosen frames, decoded by DALI's video
    decoder (FFmpeg's libavcodec on the CPU, NVDEC on the GPU)."""
    return _build(_video_graph, 1, device, num_threads)


def run_video_batch(pipe, encoded: np.ndarray, indices: list[int]) -> np.ndarray:
    """The frames ``indices`` (decoded-frame numbers, from 0) of the clip ``encoded`` (its file's
    bytes), as stored (not turned): (F, H, W, 3) uint8 RGB in host memory. Raises RuntimeError
    where DALI cannot decode them."""
    pipe.feed_input("encoded", [encoded])
    pipe.feed_input("frames", [np.asarray(indices, dtype=np.int32)])
    (out,) = pipe.run()
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return np.array(out[0])  # a copy: DALI reuses its buffers

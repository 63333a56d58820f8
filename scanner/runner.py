"""The run loop: planned batches → DALI crops (in a producer thread) → engine → result rows.

DALI fails a whole batch on one corrupt file, so a failed batch is rebuilt and re-run in halves
until the culprit image is alone; its faces get ``decode_error`` and its neighbours are scanned.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .batching import FaceResult, ImageJob, PlannedBatch, plan_batches
from .catalog import Catalog
from .crops import DECODE_ERROR, DEFAULT_MAX_PIXELS, OK
from .pipeline import FaceBatch, build_pipeline, run_batch
from .schema import rows_to_table


@dataclass
class RunSettings:
    batch_size: int = 64
    device: str = "cpu"  # 'cpu' or 'gpu'
    threshold: float = 0.5
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_threads: int | None = None
    queue_depth: int = 2


@dataclass
class CroppedBatch:
    planned: PlannedBatch
    pieces: list[tuple[list[int], object]]  # (face ids, crops as numpy or torch CUDA tensor)
    failed: list[FaceResult]


def _dali_reason(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Current pipeline", "Critical error", "File ", "Error in"))]
    return "DALI could not decode it: " + (useful[-1] if useful else exc.__class__.__name__)[:300]


class Cropper:
    """Owns the DALI pipeline; rebuilds it after a failure (DALI invalidates it)."""

    def __init__(self, config, settings: RunSettings):
        self.config, self.settings = config, settings
        self.pipe = None

    def _pipe(self):
        if self.pipe is None:
            self.pipe = build_pipeline(self.config, self.settings.batch_size, self.settings.device,
                                       self.settings.num_threads)
        return self.pipe

    def discard(self):
        """Shut the pipeline down here and now: a failed DALI pipeline left to the garbage
        collector was seen to crash the process when collected later, from another thread."""
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            pipe._shutdown()

    def _to_host_or_device(self, tensor_list):
        if self.settings.device == "gpu":
            import torch
            from nvidia.dali.plugin.pytorch import feed_ndarray

            out = torch.empty(tensor_list.as_tensor().shape(), dtype=torch.float32, device="cuda")
            feed_ndarray(tensor_list.as_tensor(), out, cuda_stream=torch.cuda.current_stream())
            return out
        return np.array(tensor_list.as_tensor())  # a copy: DALI reuses its buffers

    def crop(self, jobs: list[ImageJob]):
        """Returns ``(pieces, failed)`` for these image jobs, isolating undecodable images."""
        planned = PlannedBatch(jobs=jobs)
        try:
            outputs = run_batch(self._pipe(), planned.face_batch())
            return [(planned.face_ids, self._to_host_or_device(outputs[0]))], []
        except RuntimeError as exc:
            self.discard()
            if len(jobs) == 1:
                reason = _dali_reason(exc)
                return [], [FaceResult(f, DECODE_ERROR, reason) for f in jobs[0].face_ids]
            half = len(jobs) // 2
            pieces_a, failed_a = self.crop(jobs[:half])
            pieces_b, failed_b = self.crop(jobs[half:])
            return pieces_a + pieces_b, failed_a + failed_b


def _produce(catalog, config, settings, out: queue.Queue, stop: threading.Event, image_ids, cropper=None):
    try:
        cropper = cropper or Cropper(config, settings)
        for planned in plan_batches(catalog, settings.batch_size, config.crop_margin,
                                    settings.max_pixels, image_ids):
            pieces, failed = cropper.crop(planned.jobs) if planned.jobs else ([], [])
            while not stop.is_set():
                try:
                    out.put(CroppedBatch(planned, pieces, failed), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(None)
    except BaseException as exc:  # surfaced in the consumer thread
        out.put(exc)


def iter_crops(catalog: Catalog, config, settings: RunSettings, image_ids=None,
               cropper: Cropper | None = None) -> Iterator[CroppedBatch]:
    """Crops batch by batch, computed one step ahead in a background thread.

    ``cropper`` lets a long-lived caller (a Ray worker) keep one DALI pipeline across calls.
    """
    out: queue.Queue = queue.Queue(maxsize=settings.queue_depth)
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(catalog, config, settings, out, stop, image_ids, cropper),
                              daemon=True, name="dfscan-dali")
    worker.start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def softmax_fake(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=1)).astype(np.float32)


def scan(catalog: Catalog, engine, settings: RunSettings, image_ids=None, on_faces=None, cropper=None):
    """Scan the catalog; yields one pyarrow Table of result rows per batch, in catalog order.

    ``on_faces(n)`` is called with the number of faces each batch accounts for (progress bars).
    """
    order = {f: n for n, f in enumerate(catalog.faces)}
    for cropped in iter_crops(catalog, engine.config, settings, image_ids, cropper):
        results: dict[int, tuple] = {}
        for face_ids, crops in cropped.pieces:
            scores = softmax_fake(engine.infer(crops))
            for f, s in zip(face_ids, scores):
                results[f] = (float(s), OK, None)
        for r in cropped.planned.failed + cropped.failed:
            results[r.face_id] = (None, r.status, r.error)
        rois = {f: roi for job in cropped.planned.jobs for f, roi in zip(job.face_ids, job.rois)}
        face_ids = sorted(results, key=order.__getitem__)
        yield rows_to_table(catalog, face_ids, results, rois, settings.threshold)
        if on_faces is not None:
            on_faces(len(face_ids))

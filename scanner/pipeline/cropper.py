"""Planned batches → DALI crops, computed one batch ahead in a producer thread.

DALI fails a whole batch on one corrupt file, so a failed batch is rebuilt and re-run in halves
until the culprit image is alone (``isolate_failures``, shared with detection); its faces get
``decode_error`` and its neighbours are scanned.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from scanner.catalog import Catalog
from scanner.pipeline.batching import ImageJob, PlannedBatch, plan_batches
from scanner.pipeline.graphs import build_pipeline, run_batch
from scanner.settings import RunSettings
from scanner.status import DECODE_ERROR, FaceResult


@dataclass
class CroppedBatch:
    planned: PlannedBatch
    pieces: list[tuple[list[int], object]]  # (face ids, crops as numpy or torch CUDA tensor)
    failed: list[FaceResult]


def dali_reason(exc: Exception) -> str:
    """The line of a DALI error worth showing a user."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Current pipeline", "Critical error", "File ", "Error in"))]
    return "DALI could not decode it: " + (useful[-1] if useful else exc.__class__.__name__)[:300]


def isolate_failures(items: list, attempt, on_culprit, discard) -> tuple[list, list]:
    """``attempt(items)``; where DALI fails the batch (RuntimeError), ``discard()`` the pipeline
    and retry in halves until the culprit is alone. Returns ``(results of the parts that ran,
    [on_culprit(item, reason) for each culprit])``."""
    try:
        return [attempt(items)], []
    except RuntimeError as exc:
        discard()
        if len(items) == 1:
            return [], [on_culprit(items[0], dali_reason(exc))]
        half = len(items) // 2
        ok_a, bad_a = isolate_failures(items[:half], attempt, on_culprit, discard)
        ok_b, bad_b = isolate_failures(items[half:], attempt, on_culprit, discard)
        return ok_a + ok_b, bad_a + bad_b


class Cropper:
    """Owns the DALI pipeline; rebuilds it after a failure (DALI invalidates it)."""

    def __init__(self, config, settings: RunSettings):
        self.config, self.settings = config, settings
        self.pipe = None

    def prepare(self):
        """Build the DALI pipeline now rather than at the first batch (0.2-0.7 s)."""
        self._pipe()

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
        def attempt(part):
            planned = PlannedBatch(jobs=part)
            return planned.face_ids, self._to_host_or_device(run_batch(self._pipe(), planned.face_batch())[0])

        def culprit(job, reason):
            return [FaceResult(f, DECODE_ERROR, reason) for f in job.face_ids]

        pieces, failed = isolate_failures(jobs, attempt, culprit, self.discard)
        return pieces, [r for results in failed for r in results]


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



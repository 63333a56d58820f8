"""Plan the flat face batches: images kept whole where they fit, none dropped, none padded."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .catalog import Catalog
from .crops import (DEFAULT_MAX_PIXELS, MISSING_FILE, UNREADABLE_FILE, FaceError, face_roi,
                    probe_image)
from .pipeline import FaceBatch


@dataclass
class FaceResult:
    """A face that will not reach the engine, with why."""

    face_id: int
    status: str
    error: str


@dataclass
class ImageJob:
    """One image ready for the pipeline: its bytes and the ROI of each croppable face."""

    image_id: int
    encoded: np.ndarray
    face_ids: list[int]
    rois: list[tuple[float, float, float, float]]


@dataclass
class PlannedBatch:
    """Faces in catalog order: ``jobs`` go to DALI, ``failed`` are already decided."""

    jobs: list[ImageJob] = field(default_factory=list)
    failed: list[FaceResult] = field(default_factory=list)
    n_slots: int = 0

    def face_batch(self) -> FaceBatch:
        encoded, owner, source, roi = [], [], [], []
        empty = np.zeros(0, dtype=np.uint8)
        for job in self.jobs:
            first = len(owner)
            for k, r in enumerate(job.rois):
                encoded.append(job.encoded if k == 0 else empty)
                owner.append(k == 0)
                source.append(first)
                roi.append(r)
        return FaceBatch(encoded, owner, source, roi)

    @property
    def face_ids(self) -> list[int]:
        return [f for job in self.jobs for f in job.face_ids]


# Fault injection for crash tests (in the spirit of fail-rs failpoints): a process that reads a
# file whose name contains this variable's value dies by a real signal, exactly where a decoder
# crash would take it down. SIGKILL, because a sent SIGSEGV can be survived: Ray workers install
# a handler that logs it and returns. Unset (always, outside tests) it costs a dictionary lookup.
CRASH_ENV = "DFSCAN_CRASH_ON"


def read_file(path: Path | None) -> bytes:
    if path is None:
        raise FaceError(MISSING_FILE, "the image file was not found")
    crash_on = os.environ.get(CRASH_ENV)
    if crash_on and crash_on in path.name:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise FaceError(MISSING_FILE, f"{path} vanished before it was read") from None
    except OSError as exc:
        raise FaceError(UNREADABLE_FILE, f"{path}: {exc.strerror or exc}") from None


def prepare_image(catalog: Catalog, image_id: int, margin: float,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[ImageJob | None, list[FaceResult]]:
    """Read and check one image; returns its job (None if nothing to crop) and its failed faces."""
    image = catalog.images[image_id]
    if image.problem is not None:
        return None, [FaceResult(f, *image.problem) for f in image.face_ids]
    try:
        data = read_file(image.path)
        info = probe_image(data, max_pixels)
    except FaceError as exc:
        return None, [FaceResult(f, exc.code, str(exc)) for f in image.face_ids]
    job = ImageJob(image_id, np.frombuffer(data, dtype=np.uint8), [], [])
    failed = []
    for f in image.face_ids:
        try:
            job.rois.append(face_roi(catalog.faces[f].bbox, info.width, info.height, margin))
            job.face_ids.append(f)
        except FaceError as exc:
            failed.append(FaceResult(f, exc.code, str(exc)))
    return (job if job.face_ids else None), failed


def split_job(job: ImageJob, size: int) -> list[ImageJob]:
    """An image with more faces than a batch holds is split (and decoded once per part)."""
    return [ImageJob(job.image_id, job.encoded, job.face_ids[i:i + size], job.rois[i:i + size])
            for i in range(0, len(job.face_ids), size)]


def plan_batches(catalog: Catalog, batch_size: int, margin: float,
                 max_pixels: int = DEFAULT_MAX_PIXELS, image_ids=None) -> Iterator[PlannedBatch]:
    """Yield batches of at most ``batch_size`` face slots, images in catalog order.

    An image whose faces do not fit in what is left of the batch starts the next one, so an
    image is decoded exactly once unless it alone has more than ``batch_size`` faces.
    """
    batch = PlannedBatch()
    for image_id in (catalog.images if image_ids is None else image_ids):
        job, failed = prepare_image(catalog, image_id, margin, max_pixels)
        parts = [] if job is None else split_job(job, batch_size)
        for n, part in enumerate(parts):
            if batch.n_slots + len(part.face_ids) > batch_size:
                yield batch
                batch = PlannedBatch()
            if n == 0:  # an image's failed faces travel with its first part, keeping row order
                batch.failed.extend(failed)
            batch.jobs.append(part)
            batch.n_slots += len(part.face_ids)
        if not parts:
            batch.failed.extend(failed)
    if batch.jobs or batch.failed:
        yield batch

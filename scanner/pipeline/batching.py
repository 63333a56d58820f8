"""Plan the flat face batches: images kept whole where they fit, none dropped, none padded."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from scanner.catalog import Catalog
from scanner.catalog.files import DEFAULT_MAX_PIXELS, probe_image, read_file
from scanner.pipeline.geometry import face_roi
from scanner.pipeline.graphs import FaceBatch
from scanner.status import FaceError, FaceResult

# faces decided without decoding (missing files, refused paths) take no slot; a batch that holds
# only such faces still ends here, so that a catalog of missing files streams in batches too
MAX_FAILED = 4096


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
    image is decoded exactly once unless it alone has more than ``batch_size`` faces. A batch
    also ends once it holds ``MAX_FAILED`` faces that failed before decoding.
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
        if len(batch.failed) >= MAX_FAILED:
            yield batch
            batch = PlannedBatch()
    if batch.jobs or batch.failed:
        yield batch

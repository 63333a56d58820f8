"""The scan loop: faces decided without decoding, then cropped batches → engine → result rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from scanner.catalog import Catalog
from scanner.output.schema import columns_to_table, rows_to_table
from scanner.pipeline.cropper import iter_crops
from scanner.settings import RunSettings
from scanner.status import OK

DECIDED_ROWS = 65536  # faces decided without decoding, per table (bounded memory, a part's size)


def softmax_fake(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=1)).astype(np.float32)


def crop_batches(catalog: Catalog, config, settings: RunSettings, image_ids=None, cropper=None, decoder=None):
    """Cropped batches: decoded in a supervised child process on the CPU (``isolate_decoder``),
    else in this process; a caller with its own ``cropper`` (a Ray worker, isolated by Ray) and
    GPU runs (CUDA crops stay in their process) decode here."""
    if cropper is None and settings.decodes_in_child:
        from scanner.pipeline.isolation import isolated_crops

        return isolated_crops(catalog, config, settings, image_ids, decoder)
    return iter_crops(catalog, config, settings, image_ids, cropper)


def scan(catalog: Catalog, engine, settings: RunSettings, image_ids=None, on_faces=None, cropper=None,
         decoder=None):
    """Scan the catalog; yields one pyarrow Table of result rows per batch.

    Faces whose status is known before any file is read (missing files, refused paths) come
    first, as columns; then the decoded batches, in catalog order (``faces.parquet`` is put in
    catalog order when the run ends). ``on_faces(n)`` is called with the number of faces each
    table accounts for (progress bars).
    """
    settings = settings.fitted(engine.config.input_size)  # memory bounded at every input size
    threshold = settings.threshold_for(engine.config)[0]
    decided = catalog.decided(image_ids)
    for start in range(0, len(decided.face_ids), DECIDED_ROWS):
        ids = decided.face_ids[start:start + DECIDED_ROWS]
        yield decided_table(catalog, ids, decided.reason[start:start + DECIDED_ROWS], decided.reasons, threshold)
        if on_faces is not None:
            on_faces(len(ids))
    if not decided.to_read:
        return
    for cropped in crop_batches(catalog, engine.config, settings, decided.to_read, cropper, decoder):
        results: dict[int, tuple] = {}
        for face_ids, crops in cropped.pieces:
            scores = softmax_fake(engine.infer(crops))
            for f, s in zip(face_ids, scores):
                results[f] = (float(s), OK, None)
        for r in cropped.planned.failed + cropped.failed:
            results[r.face_id] = (None, r.status, r.error)
        rois = {f: roi for job in cropped.planned.jobs for f, roi in zip(job.face_ids, job.rois)}
        ids = np.fromiter(results, dtype=np.int64, count=len(results))
        face_ids = ids[np.argsort(catalog.face_positions(ids), kind="stable")].tolist()
        yield rows_to_table(catalog, face_ids, results, rois, threshold)
        if on_faces is not None:
            on_faces(len(face_ids))


def decided_table(catalog: Catalog, face_ids: np.ndarray, reason: np.ndarray, reasons, threshold: float):
    """Rows of faces decided without decoding: no score, the status and reason of their image."""
    take = pa.array(reason, type=pa.int64())
    status = pa.array([s for s, _ in reasons], type=pa.string()).take(take)
    error = pa.array([e for _, e in reasons], type=pa.string()).take(take)
    return columns_to_table(catalog, face_ids, pa.nulls(len(face_ids), pa.float32()), status, error, threshold)

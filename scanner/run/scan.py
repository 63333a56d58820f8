"""The scan loop: cropped batches → engine → result rows, in catalog order."""
from __future__ import annotations

import numpy as np

from scanner.catalog import Catalog
from scanner.output.schema import rows_to_table
from scanner.pipeline.cropper import iter_crops
from scanner.settings import RunSettings
from scanner.status import OK


def softmax_fake(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=1)).astype(np.float32)

def crop_batches(catalog: Catalog, config, settings: RunSettings, image_ids=None, cropper=None):
    """Cropped batches: decoded in a supervised child process on the CPU (``isolate_decoder``),
    else in this process; a caller with its own ``cropper`` (a Ray worker, isolated by Ray) and
    GPU runs (CUDA crops stay in their process) decode here."""
    if cropper is None and settings.isolate_decoder and settings.device == "cpu":
        from scanner.pipeline.isolation import isolated_crops

        return isolated_crops(catalog, config, settings, image_ids)
    return iter_crops(catalog, config, settings, image_ids, cropper)


def scan(catalog: Catalog, engine, settings: RunSettings, image_ids=None, on_faces=None, cropper=None):
    """Scan the catalog; yields one pyarrow Table of result rows per batch, in catalog order.

    ``on_faces(n)`` is called with the number of faces each batch accounts for (progress bars).
    """
    settings = settings.fitted(engine.config.input_size)  # memory bounded at every input size
    for cropped in crop_batches(catalog, engine.config, settings, image_ids, cropper):
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
        yield rows_to_table(catalog, face_ids, results, rois, settings.threshold_for(engine.config)[0])
        if on_faces is not None:
            on_faces(len(face_ids))

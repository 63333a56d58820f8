"""Face crops for ``dfscan train``: each split cropped once by the scan's own pipeline.

Crops come from ``scanner.pipeline.cropper.iter_crops`` (video clips: the video scan itself,
``scanner.run.videos``) with the model's ModelConfig, so training
sees exactly the pixels ``dfscan run`` will feed the model (same decoder, box margin, resize).
DALI's resize keeps uint8, so undoing the normalisation and rounding recovers the crops
losslessly. ``engines.train`` receives them as plain batches and never imports this package.
"""
from __future__ import annotations

import numpy as np

from scanner.catalog import load_catalog, split_paths
from scanner.errors import DfscanError
from scanner.pipeline.cropper import iter_crops
from scanner.settings import RunSettings


def to_uint8(crops, config) -> np.ndarray:
    """The scan's normalised crops (N, C, H, W) back as the uint8 pixels DALI resized."""
    mean = np.asarray(config.mean, dtype=np.float32)[:, None, None] * 255
    std = np.asarray(config.std, dtype=np.float32)[:, None, None] * 255
    return np.clip(np.rint(np.asarray(crops) * std + mean), 0, 255).astype(np.uint8)


def _limit(catalog, limit: int):
    """At most ``limit`` labelled faces, alternating Real and Fake, in catalog order."""
    by_label = {0: [], 1: []}
    for face in catalog.faces.values():
        if face.label is not None:
            by_label[face.label].append(face.image_id)
    picked: list[int] = []
    for pair in zip(by_label[0], by_label[1]):
        picked.extend(i for i in pair if i not in picked)
    leftover = [i for i in by_label[0] + by_label[1] if i not in picked]
    keep = (picked + leftover)[:limit]
    return catalog.subset(sorted(keep))

def split_crops(root, split: str, config, batch_size: int = 64, limit: int | None = None, log=print):
    """Yield ``(uint8 crops, labels, face ids)`` for every labelled face of ``split``, cropped
    with ``config``'s crop convention.

    Raises DfscanError when the split is missing or holds no labelled, croppable face.
    """
    images_dir, annotations = split_paths(root, split)
    yield from catalog_crops(load_catalog(images_dir, annotations), config, split, batch_size, limit, log)


def catalog_crops(catalog, config, name: str, batch_size: int = 64, limit: int | None = None, log=print):
    """Yield ``(uint8 crops, labels, face ids)`` for every labelled face of ``catalog``; ``name``
    (a split or source) goes into the log lines. Raises DfscanError when none could be cropped."""
    if limit is not None:
        catalog = _limit(catalog, limit)
    failed, yielded = [], 0
    settings = RunSettings(batch_size=batch_size, device="cpu").fitted(config.input_size, log)
    for batch in iter_crops(catalog, config, settings):
        failed += batch.planned.failed + batch.failed
        for face_ids, crops in batch.pieces:
            keep = [n for n, f in enumerate(face_ids) if catalog.faces[f].label is not None]
            if not keep:
                continue
            pixels = to_uint8(np.asarray(crops)[keep], config)
            yield pixels, [catalog.faces[face_ids[n]].label for n in keep], [face_ids[n] for n in keep]
            yielded += len(keep)
    for r in failed[:5]:
        log(f"{name}: face {r.face_id} skipped ({r.status}: {r.error})")
    if len(failed) > 5:
        log(f"{name}: {len(failed) - 5} more faces skipped")
    if not yielded:
        where = catalog.annotations or name
        raise DfscanError(f"{where}: no labelled face could be cropped (category_id 0 or 1)")


def _alternating(clips) -> list:
    """Clips Real, Fake, Real, … (each class in file order), the rest after: ``--limit`` then
    takes faces of both classes."""
    real, fake = [c for c in clips if c.label == 0], [c for c in clips if c.label == 1]
    mixed = [c for pair in zip(real, fake) for c in pair]
    return mixed + real[len(mixed) // 2:] + fake[len(mixed) // 2:]


def video_crops(clips, config, detect, videos, name: str, batch_size: int = 64, limit: int | None = None,
                log=print):
    """Yield ``(uint8 crops, labels, face ids)`` for the faces found in ``clips`` (labelled
    VideoRecords), made by the video scan itself (``scanner.run.videos.VideoScanner``: sampled
    frames, ``detect``, tracker, the DALI frame graph with ``config``'s crop convention), the
    detected boxes cached per clip (``scanner.detect.cache``). Face ids are those a ``dfscan run``
    of the folder gives. With ``limit``, clips alternate Real and Fake until ``limit`` faces.
    Raises DfscanError when no face could be cropped."""
    from dataclasses import replace

    from scanner.run.videos import VideoScanner, VideoSettings

    videos = replace(videos or VideoSettings(), box_cache=True)
    settings = RunSettings(batch_size=batch_size, device="cpu").fitted(config.input_size, log)
    got: list = []
    scanner = VideoScanner(None, settings, detect, videos, config=config, log=log,
                           on_crops=lambda faces, crops: got.append(([f["n"] for f in faces], to_uint8(crops, config))))
    yielded, skipped = 0, []
    try:
        for video in _alternating(clips) if limit else clips:
            got.clear()
            _, row = scanner.scan(video)
            if row["status"] != "ok":
                skipped.append(f"{video.file} ({row['status']}: {row['error']})")
            for ns, pixels in got:
                if limit is not None:
                    ns, pixels = ns[:limit - yielded], pixels[:limit - yielded]
                if len(ns):
                    yield pixels, [video.label] * len(ns), [video.face_id(n) for n in ns]
                    yielded += len(ns)
            if limit is not None and yielded >= limit:
                break
    finally:
        scanner.close()
    for line in skipped[:5]:
        log(f"{name}: clip {line} gave no face")
    if len(skipped) > 5:
        log(f"{name}: {len(skipped) - 5} more clips gave no face")
    if not yielded:
        raise DfscanError(f"{name}: no face was found in {len(clips)} clips; check the clips, or sample more "
                          "frames (--frames-per-video)")


def face_batches(images, with_labels: bool = False, batch_size: int = 32):
    """``data(config)`` → a fresh iterator of the scan pipeline's normalised crops of the faces in
    IMAGES (annotations found as for ``dfscan run``), as ``(crops, labels)`` of the labelled faces
    with ``with_labels``: calibration and accuracy-gate data for INT8 engines."""
    def data(config):
        catalog = load_catalog(images)
        for batch in iter_crops(catalog, config, RunSettings(batch_size=batch_size).fitted(config.input_size)):
            for face_ids, crops in batch.pieces:
                if not with_labels:
                    yield crops
                    continue
                keep = [n for n, f in enumerate(face_ids) if catalog.faces[f].label is not None]
                if keep:
                    yield crops[keep], [catalog.faces[face_ids[n]].label for n in keep]

    return data

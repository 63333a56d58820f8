"""Training data: each split cropped once by the scanning pipeline, cached in memory as uint8.

Crops come from ``scanner.runner.iter_crops`` with the model's ModelConfig, so training sees
exactly the pixels ``dfscan run`` will feed the model (same decoder, box margin, resize). DALI's
resize keeps uint8, so undoing the normalisation and rounding recovers the crops losslessly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DfscanError


@dataclass
class CropSet:
    """One split's labelled face crops: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,)."""

    split: str
    images: torch.Tensor
    labels: torch.Tensor
    face_ids: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> str:
        fake = int(self.labels.sum())
        return f"{self.split}: {len(self)} faces ({len(self) - fake} real / {fake} fake)"


def split_paths(root, split: str) -> tuple[Path, Path]:
    """``(ROOT/Images/<split>, ROOT/<split>_poly.json)``, the OpenForensics layout."""
    root = Path(root)
    images, annotations = root / "Images" / split, root / f"{split}_poly.json"
    if not images.is_dir() or not annotations.is_file():
        found = sorted(p.name[:-len("_poly.json")] for p in root.glob("*_poly.json"))
        raise DfscanError(f"{root}: split {split!r} needs {images} and {annotations}; "
                          f"splits found there: {', '.join(found) or 'none'}")
    return images, annotations


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


def load_split(root, split: str, config, batch_size: int = 64, limit: int | None = None,
               log=print) -> CropSet:
    """Crop every labelled face of ``split`` with ``config``'s crop convention.

    Raises DfscanError when the split is missing or holds no labelled, croppable face.
    """
    from scanner.catalog import load_catalog
    from scanner.runner import RunSettings, iter_crops

    images_dir, annotations = split_paths(root, split)
    catalog = load_catalog(images_dir, annotations)
    if limit is not None:
        catalog = _limit(catalog, limit)
    mean = np.asarray(config.mean, dtype=np.float32)[:, None, None] * 255
    std = np.asarray(config.std, dtype=np.float32)[:, None, None] * 255
    chunks, ids, failed = [], [], []
    for batch in iter_crops(catalog, config, RunSettings(batch_size=batch_size, device="cpu")):
        failed += batch.planned.failed + batch.failed
        for face_ids, crops in batch.pieces:
            pixels = np.clip(np.rint(np.asarray(crops) * std + mean), 0, 255).astype(np.uint8)
            chunks.append(torch.from_numpy(pixels))
            ids += face_ids
    for r in failed[:5]:
        log(f"{split}: face {r.face_id} skipped ({r.status}: {r.error})")
    keep = [n for n, f in enumerate(ids) if catalog.faces[f].label is not None]
    if not keep:
        raise DfscanError(f"{annotations}: no labelled face could be cropped (category_id 0 or 1)")
    images = torch.cat(chunks)[keep]
    labels = torch.tensor([catalog.faces[ids[n]].label for n in keep], dtype=torch.int64)
    return CropSet(split, images, labels, [ids[n] for n in keep])


class Normalize:
    """float [0, 1] crops → the model's input: ``(x - mean) / std`` as in the DALI graph."""

    def __init__(self, config):
        self.mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self.mean) / self.std

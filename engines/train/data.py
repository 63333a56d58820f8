"""Training data: each split's face crops, held in memory as uint8.

The crops arrive as plain batches from the caller (``dfscan train`` wires in the scan's own
DALI pipeline, ``scanner.run.training``), so training sees exactly the pixels ``dfscan run``
will feed the model; this package never reads images itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engines.errors import DfscanError


@dataclass
class CropSet:
    """One split's labelled face crops: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,),
    and the name of the data source each face came from (``dfscan train --data NAME=PATH``)."""

    split: str
    images: torch.Tensor
    labels: torch.Tensor
    face_ids: list[int]
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def collect(cls, split: str, batches) -> "CropSet":
        """A CropSet from ``batches`` of ``(uint8 crops (N, 3, H, W), labels (N,), face ids)``,
        optionally with a fourth item, the batch's source name (default: ``split``).

        Raises DfscanError when no batch holds a face.
        """
        images, labels, ids, sources = [], [], [], []
        for crops, batch_labels, face_ids, *source in batches:
            images.append(torch.as_tensor(np.asarray(crops, dtype=np.uint8)))
            labels.append(torch.as_tensor(np.asarray(batch_labels, dtype=np.int64)))
            ids += list(face_ids)
            sources += [source[0] if source else split] * len(face_ids)
        if not ids:
            raise DfscanError(f"{split}: no labelled face to train on")
        return cls(split, torch.cat(images), torch.cat(labels), ids, sources)

    def source_names(self) -> list[str]:
        """The sources present, in order of first appearance."""
        return list(dict.fromkeys(self.sources))

    def source_mask(self, name: str) -> torch.Tensor:
        return torch.tensor([s == name for s in self.sources], dtype=torch.bool)

    def loss_weights(self, weights: dict[str, float] | None) -> torch.Tensor:
        """Per-face weight in the training loss: its source's weight (1 where none is given),
        float32 (N,). Raises DfscanError for a weight naming no source of this set."""
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.sources))
        if unknown:
            raise DfscanError(f"source weight for {unknown[0]!r}: no training source has that name; "
                              f"sources: {', '.join(self.source_names())}")
        return torch.tensor([float(weights.get(s, 1.0)) for s in self.sources], dtype=torch.float32)

    def counts(self) -> str:
        def one(mask, name):
            fake = int(self.labels[mask].sum())
            return f"{name}: {int(mask.sum())} faces ({int(mask.sum()) - fake} real / {fake} fake)"

        names = self.source_names()
        text = one(torch.ones(len(self), dtype=torch.bool), self.split)
        if len(names) > 1 or (names and names[0] != self.split):
            text += " [" + "; ".join(one(self.source_mask(n), n) for n in names) + "]"
        return text


class Normalize:
    """float [0, 1] crops → the model's input: ``(x - mean) / std`` as in the DALI graph."""

    def __init__(self, config):
        self.mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self.mean) / self.std

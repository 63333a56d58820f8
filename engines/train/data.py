"""Training data: each split's face crops, held in memory as uint8.

The crops arrive as plain batches from the caller (``dfscan train`` wires in the scan's own
DALI pipeline, ``scanner.run.training``), so training sees exactly the pixels ``dfscan run``
will feed the model; this package never reads images itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engines.errors import DfscanError


@dataclass
class CropSet:
    """One split's labelled face crops: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,)."""

    split: str
    images: torch.Tensor
    labels: torch.Tensor
    face_ids: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def collect(cls, split: str, batches) -> "CropSet":
        """A CropSet from ``batches`` of ``(uint8 crops (N, 3, H, W), labels (N,), face ids)``.

        Raises DfscanError when no batch holds a face.
        """
        images, labels, ids = [], [], []
        for crops, batch_labels, face_ids in batches:
            images.append(torch.as_tensor(np.asarray(crops, dtype=np.uint8)))
            labels.append(torch.as_tensor(np.asarray(batch_labels, dtype=np.int64)))
            ids += list(face_ids)
        if not ids:
            raise DfscanError(f"{split}: no labelled face to train on")
        return cls(split, torch.cat(images), torch.cat(labels), ids)

    def counts(self) -> str:
        fake = int(self.labels.sum())
        return f"{self.split}: {len(self)} faces ({len(self) - fake} real / {fake} fake)"


class Normalize:
    """float [0, 1] crops → the model's input: ``(x - mean) / std`` as in the DALI graph."""

    def __init__(self, config):
        self.mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self.mean) / self.std

"""The config that travels with every model: what the data pipeline needs to feed it.

Plain dataclasses, no torch: reading a model's config (an ONNX file's metadata, a plan's
sidecar) must not import a deep-learning framework.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)

IMAGENET_STD = (0.229, 0.224, 0.225)

@dataclass(frozen=True)
class ModelConfig:
    """Everything the data pipeline needs to feed a model, so nothing downstream hard-codes it.

    ``threshold`` is the decision threshold chosen on validation when the model was trained;
    ``dfscan run`` uses it unless ``--threshold`` is given. ``crop_margin`` is the crop convention shared by training and scanning: the face box is
    enlarged by this factor about its centre, clipped to the image, then resized (aspect not
    kept) to ``input_size``.
    """

    arch: str
    input_size: tuple[int, int] = (224, 224)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "linear"
    crop_margin: float = 1.3
    class_names: tuple[str, ...] = ("Real", "Fake")
    paper: str = ""
    pretrained_hint: str = ""  # where ImageNet weights come from offline, if anywhere
    # score_fake at or above it is Fake, chosen on validation by ``dfscan train``
    # (engines.train.threshold); None: the scan's default, 0.5
    threshold: float | None = None
    threshold_rule: str = ""  # how it was chosen: 'balanced' or 'fpr:<x>'

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("input_size", "mean", "std", "class_names"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def with_input_size(self, size: int | tuple[int, int]) -> "ModelConfig":
        if isinstance(size, int):
            size = (size, size)
        return dataclasses.replace(self, input_size=tuple(size))

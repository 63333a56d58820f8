"""The model registry: one name per architecture, each with the config that travels with it.

Modelled on timm's ``@register_model`` and torchvision's strict ``_api`` registry: registering a
name twice is an error, and unknown names list the valid choices.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from ..errors import DfscanError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything the data pipeline needs to feed a model, so nothing downstream hard-codes it.

    ``crop_margin`` is the crop convention shared by training and scanning: the face box is
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


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable  # builder(pretrained: str | None, num_classes: int) -> torch.nn.Module
    config: ModelConfig
    fixed_input_size: bool = False  # True where the head's shape depends on the input size
    tags: tuple[str, ...] = field(default_factory=tuple)
    # dotted path of the module whose output Grad-CAM explains (usually the last conv block);
    # None: ``engines.cam`` falls back to the model's last Conv2d
    cam_layer: str | None = None


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, config: ModelConfig | None = None, *, fixed_input_size=False,
                   tags: tuple[str, ...] = (), cam_layer: str | None = None):
    """Decorator registering ``builder(pretrained, num_classes)`` under ``name``."""

    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelEntry(name, builder, config or ModelConfig(arch=name),
                                   fixed_input_size, tuple(tags), cam_layer)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        raise DfscanError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def get_model_config(name: str) -> ModelConfig:
    return get_model_entry(name).config


def create_model(name: str, pretrained: str | None = None, num_classes: int = 2,
                 input_size: tuple[int, int] | None = None):
    """Build architecture ``name`` with a ``num_classes`` head.

    ``pretrained`` is a path to ImageNet weights, ``"auto"`` (use an offline package where one
    is installed) or None. ``input_size`` matters only for models whose head depends on it.
    Returns an ``nn.Module`` in eval mode.
    """
    entry = get_model_entry(name)
    kwargs = {}
    if entry.fixed_input_size and input_size is not None:
        kwargs["input_size"] = tuple(input_size)
    model = entry.builder(pretrained=pretrained, num_classes=num_classes, **kwargs)
    return model.eval()

"""The model registry: one name per architecture, each with the config that travels with it.

Modelled on timm's ``@register_model`` and torchvision's strict ``_api`` registry: registering a
name twice is an error, and unknown names list the valid choices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from engines.config import ModelConfig
from engines.errors import DfscanError


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

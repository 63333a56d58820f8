"""Model zoo: ``create_model(name)`` and the config that travels with each architecture."""
from ._registry import (IMAGENET_MEAN, IMAGENET_STD, ModelConfig, ModelEntry, create_model,
                        get_model_config, get_model_entry, list_models, register_model)
from . import customcnn, meso, timm_zoo, zoo  # noqa: F401  (registers the architectures)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelConfig", "ModelEntry", "create_model",
           "get_model_config", "get_model_entry", "list_models", "register_model"]

"""Model zoo: ``create_model(name)`` and the config that travels with each architecture."""
from engines.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from engines.models._registry import (ModelEntry, create_model, get_model_config, get_model_entry,
                                      list_models, register_model)
from engines.models._weights import resolve_pretrained

# isort: split
from engines.models import customcnn, meso, timm_zoo, zoo  # noqa: F401,E402  (registers the architectures)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelConfig", "ModelEntry", "create_model",
           "get_model_config", "get_model_entry", "list_models", "register_model", "resolve_pretrained"]

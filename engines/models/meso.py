"""MesoNet: Meso4 and MesoInception4.

Afchar, Nozick, Yamagishi, Echizen, "MesoNet: a Compact Facial Video Forgery Detection Network",
WIFS 2018, arXiv:1809.00888. Layer for layer as the authors' Keras code (DariusAf/MesoNet): 256×256
input scaled to [0, 1] (hence mean 0, std 1), 'same' convolutions, BatchNorm after each block,
max-pools 2-2-2-4, Dropout 0.5 → Dense 16 → LeakyReLU 0.1 → Dropout 0.5 → Dense. The paper's
single sigmoid unit becomes ``num_classes`` logits so every dfscan model ends the same way; no
activation is applied to them here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from engines.config import ModelConfig
from engines.models._registry import register_model

_CONFIG = dict(input_size=(256, 256), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
               paper="Afchar et al. 2018, arXiv:1809.00888",
               pretrained_hint="no offline ImageNet weights: trains from scratch")
_POOLS = (2, 2, 2, 4)


def _conv_block(cin: int, cout: int, kernel: int, pool: int) -> nn.Sequential:
    # Keras' MaxPooling2D(padding='same') keeps a partial last window: ceil_mode does the same.
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                         nn.BatchNorm2d(cout), nn.MaxPool2d(pool, ceil_mode=True))


class _InceptionLayer(nn.Module):
    """Four branches: 1×1; 1×1→3×3; 1×1→3×3 dilation 2; 1×1→3×3 dilation 3; concatenated."""

    def __init__(self, cin: int, a: int, b: int, c: int, d: int):
        super().__init__()

        def branch(cout, dilation):
            return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation),
                                 nn.ReLU(inplace=True))

        self.b1 = nn.Sequential(nn.Conv2d(cin, a, 1), nn.ReLU(inplace=True))
        self.b2, self.b3, self.b4 = branch(b, 1), branch(c, 2), branch(d, 3)
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


def _inception_block(cin: int, widths: tuple[int, int, int, int], pool: int) -> nn.Sequential:
    layer = _InceptionLayer(cin, *widths)
    return nn.Sequential(layer, nn.BatchNorm2d(layer.out_channels),
                         nn.MaxPool2d(pool, ceil_mode=True))


def _head(input_size: tuple[int, int], num_classes: int) -> nn.Sequential:
    h, w = input_size
    for pool in _POOLS:
        h, w = math.ceil(h / pool), math.ceil(w / pool)
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * h * w, 16),
                         nn.LeakyReLU(0.1, inplace=True), nn.Dropout(0.5), nn.Linear(16, num_classes))


class Meso4(nn.Module):
    def __init__(self, num_classes: int = 2, input_size: tuple[int, int] = (256, 256)):
        super().__init__()
        self.features = nn.Sequential(_conv_block(3, 8, 3, 2), _conv_block(8, 8, 5, 2),
                                      _conv_block(8, 16, 5, 2), _conv_block(16, 16, 5, 4))
        self.classifier = _head(input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MesoInception4(nn.Module):
    def __init__(self, num_classes: int = 2, input_size: tuple[int, int] = (256, 256)):
        super().__init__()
        self.features = nn.Sequential(_inception_block(3, (1, 4, 4, 2), 2),
                                      _inception_block(11, (2, 4, 4, 2), 2),
                                      _conv_block(12, 16, 5, 2), _conv_block(16, 16, 5, 4))
        self.classifier = _head(input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _build(cls, pretrained, num_classes, input_size):
    model = cls(num_classes, input_size)
    if pretrained not in (None, "none", "", "auto"):  # no ImageNet weights exist: "auto" is a no-op
        from engines.models._weights import resolve_pretrained
        from engines.models._weights import load_state_dict_file
        load_state_dict_file(model, resolve_pretrained("meso", pretrained))
    return model


@register_model("meso4", ModelConfig(arch="meso4", **_CONFIG), fixed_input_size=True,
                tags=("small",), cam_layer="features.3")
def meso4(pretrained=None, num_classes=2, input_size=(256, 256)):
    return _build(Meso4, pretrained, num_classes, input_size)


@register_model("mesoinception4", ModelConfig(arch="mesoinception4", **_CONFIG),
                fixed_input_size=True, tags=("small",), cam_layer="features.3")
def mesoinception4(pretrained=None, num_classes=2, input_size=(256, 256)):
    return _build(MesoInception4, pretrained, num_classes, input_size)

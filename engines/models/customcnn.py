"""CustomCNN: the seeds' from-scratch baseline.

Three conv blocks (3→32→64→128, 3×3, padding 1, BatchNorm, ReLU, 2×2 max-pool), flatten,
FC 128·(H/8)·(W/8)→512, ReLU, dropout 0.5, FC 512→2. At the native 224 input the first FC is
128·28·28→512, exactly as in the seed notebooks.
"""
from __future__ import annotations

import torch
from torch import nn

from engines.config import ModelConfig
from engines.models._registry import register_model


class CustomCNN(nn.Module):
    def __init__(self, num_classes: int = 2, input_size: tuple[int, int] = (224, 224)):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        h, w = input_size[0] // 8, input_size[1] // 8
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * h * w, 512),
                                        nn.ReLU(inplace=True), nn.Dropout(0.5),
                                        nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("customcnn", ModelConfig(arch="customcnn", paper="seed notebooks (from scratch)"),
                fixed_input_size=True, tags=("small",), cam_layer="features.2")
def customcnn(pretrained=None, num_classes=2, input_size=(224, 224)):
    if pretrained not in (None, "none", "auto"):
        from engines.models._weights import load_state_dict_file
        model = CustomCNN(num_classes, input_size)
        load_state_dict_file(model, pretrained, strict=False)
        return model
    return CustomCNN(num_classes, input_size)

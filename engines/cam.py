"""Where a torch model looks when it calls a face Fake: Grad-CAM, Grad-CAM++ and saliency maps.

Grad-CAM — Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, arXiv:1610.02391. Grad-CAM++ — Chattopadhay et al., WACV 2018,
arXiv:1710.11063. Both come from the ``grad-cam`` package (pytorch_grad_cam), imported on use.
Saliency — Simonyan et al., "Deep Inside Convolutional Networks", arXiv:1312.6034:
``|d score / d input|``, max over the colour channels, divided by its 99th percentile and clipped.

Every map explains the *Fake* class. The score differentiated is the fake-logit margin
``logit_fake - logsumexp(other logits)``: for two classes ``score_fake = sigmoid(margin)``, so its
gradient is that of ``score_fake`` times ``p(1-p) > 0`` — the same map after normalisation, but it
does not vanish in float32 when a model is very sure (p(1-p) underflows there).
"""
from __future__ import annotations

import numpy as np

METHODS = ("gradcam", "gradcam++", "saliency")
FAKE = 1  # index of the Fake class (ModelConfig.class_names = ("Real", "Fake"))
SALIENCY_PERCENTILE = 99.0


def fake_margin(logits, fake: int = FAKE):
    """``logit_fake - logsumexp(other logits)`` per row of an (N, classes) tensor (or a 1-D row)."""
    import torch

    others = torch.cat([logits[..., :fake], logits[..., fake + 1:]], dim=-1)
    return logits[..., fake] - torch.logsumexp(others, dim=-1)


def cam_layer(model, arch: str | None = None, name: str | None = None) -> tuple[str, object]:
    """The layer Grad-CAM hooks: ``name``, else the registry's ``cam_layer`` for ``arch``, else
    the model's last ``Conv2d``. Returns ``(dotted name, module)``; raises DfscanError if absent."""
    from torch import nn

    from engines.errors import DfscanError
    from engines.models import get_model_entry

    if name is None and arch is not None:
        try:
            name = get_model_entry(arch).cam_layer
        except DfscanError:  # an architecture unknown here: fall back below
            name = None
    if name is None:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise DfscanError(f"{arch or type(model).__name__}: no Conv2d layer for Grad-CAM; "
                              "use --method saliency")
        name = convs[-1]
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        raise DfscanError(f"{arch or type(model).__name__}: no module {name!r} for Grad-CAM") from None


class _FakeTarget:
    """pytorch_grad_cam target: called with one sample's logits."""

    def __call__(self, output):
        return fake_margin(output)


def _normalise(maps: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """Per map: shift to 0, divide by its ``percentile`` (the max where that is 0), clip to 1."""
    maps = np.nan_to_num(maps.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    maps -= maps.min(axis=(1, 2), keepdims=True)
    peak = np.percentile(maps, percentile, axis=(1, 2), keepdims=True).astype(np.float32)
    peak = np.where(peak > 0, peak, maps.max(axis=(1, 2), keepdims=True))
    return np.clip(np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0), 0, 1)


def _saliency(model, x):
    import torch

    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(fake_margin(logits).sum(), x)
    return logits.detach(), grad.abs().amax(dim=1).cpu().numpy()


def _gradcam(model, x, layer, method: str):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    # the input carries requires_grad so that the hooked layer's output has a gradient
    x = x.detach().clone().requires_grad_(True)
    with cls(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[_FakeTarget()] * len(x))
        logits = cam.outputs.detach()
    return logits, maps


def compute_maps(model, crops, method: str = "gradcam", arch: str | None = None,
                 layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps for a batch of normalised crops (N, 3, H, W; numpy or torch, on the model's device).

    Returns ``(maps, score_fake)``: maps float32 (N, H, W) in [0, 1] (1 = the strongest evidence
    for Fake in that crop; all zeros where there is none), score_fake float32 (N,).
    Raises DfscanError for an unknown method or a model without a layer to hook.
    """
    import torch

    from engines.errors import DfscanError

    if method not in METHODS:
        raise DfscanError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = crops if isinstance(crops, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops))
    x = x.to(device).float()
    model.eval()
    # only the input needs gradients: weight gradients would cost memory and time for nothing
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        if method == "saliency":
            logits, maps = _saliency(model, x)
        else:
            logits, maps = _gradcam(model, x, cam_layer(model, arch, layer)[1], method)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    scores = torch.softmax(logits.float(), dim=1)[:, FAKE].cpu().numpy().astype(np.float32)
    # raw gradients are a few bright pixels: scaled by their 99th percentile (as Captum's
    # visualisation does with its outlier_perc) they stay visible; CAMs are scaled by their max
    return _normalise(np.asarray(maps), SALIENCY_PERCENTILE if method == "saliency" else 100.0), scores

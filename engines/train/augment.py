"""Train-time augmentation of cached face crops: h-flips, and a broad family of photometric
corruptions so the detector survives noisy, blurred, re-compressed or low-quality copies.

Works on uint8 crops (N, 3, H, W) as DALI produced them (before normalisation) and returns float
crops in [0, 1]. Each corruption draws its strength from a wide range at random; the family is
in the spirit of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), written in torch so it runs batched with no extra
dependency (the ``imagecorruptions`` package needs scikit-image and OpenCV and works per image).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

MODES = ("none", "light", "corruptions")


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


# --- noise ---------------------------------------------------------------------------------

def gaussian_noise(x, g):
    """Additive white noise, independent per channel or shared (luma-like)."""
    sigma = math.exp(_u(g, math.log(0.01), math.log(0.2)))
    shape = x.shape if float(torch.rand((), generator=g)) < 0.7 else (1, *x.shape[1:])
    return x + sigma * torch.randn(shape, generator=g)


def shot_noise(x, g):
    """Poisson photon noise: stronger in dark regions than additive noise."""
    photons = math.exp(_u(g, math.log(8.0), math.log(300.0)))
    return torch.poisson(x.clamp(0, 1) * photons, generator=g) / photons


def speckle_noise(x, g):
    sigma = _u(g, 0.05, 0.4)
    return x + x * sigma * torch.randn(x.shape, generator=g)


def impulse_noise(x, g):
    """Salt-and-pepper: a fraction of pixels set to 0 or 1 per channel."""
    amount = math.exp(_u(g, math.log(0.002), math.log(0.05)))
    hit = torch.rand(x.shape, generator=g) < amount
    salt = (torch.rand(x.shape, generator=g) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def coarse_noise(x, g):
    """Gaussian noise at a lower resolution, upsampled: like noise added before a downscale."""
    sigma = _u(g, 0.02, 0.15)
    h, w = x.shape[-2:]
    f = _u(g, 1.5, 3.0)
    small = sigma * torch.randn((1, x.shape[0], max(1, int(h / f)), max(1, int(w / f))), generator=g)
    return x + F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


# --- blur ----------------------------------------------------------------------------------

def _blur_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _separable(x, kx, ky):
    c = x.shape[0]
    x = x[None]
    x = F.conv2d(F.pad(x, (len(kx) // 2, len(kx) // 2, 0, 0), mode="replicate"),
                 kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, len(ky) // 2, len(ky) // 2), mode="replicate"),
                 ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def gaussian_blur(x, g):
    k = _blur_kernel(_u(g, 0.4, 3.0))
    return _separable(x, k, k)


def box_blur(x, g):
    n = int(torch.randint(1, 4, (), generator=g)) * 2 + 1  # 3, 5 or 7 wide
    k = torch.full((n,), 1.0 / n)
    return _separable(x, k, k)


def motion_blur(x, g):
    """A straight horizontal or vertical smear."""
    n = int(torch.randint(2, 6, (), generator=g)) * 2 + 1
    k, one = torch.full((n,), 1.0 / n), torch.ones(1)
    return _separable(x, k, one) if float(torch.rand((), generator=g)) < 0.5 else _separable(x, one, k)


# --- compression and resolution ------------------------------------------------------------

def jpeg(x, g):
    """Re-encode as JPEG at a random quality (5–95) and chroma subsampling, with Pillow."""
    import io

    import numpy as np
    from PIL import Image

    quality = int(torch.randint(5, 96, (), generator=g))
    subsampling = int(torch.randint(0, 3, (), generator=g))  # 4:4:4, 4:2:2, 4:2:0
    hwc = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(hwc).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def down_up(x, g):
    """Lose resolution: shrink by 1.5–6× and scale back with a random interpolation."""
    h, w = x.shape[-2:]
    f = math.exp(_u(g, math.log(1.5), math.log(6.0)))
    small = F.interpolate(x[None], size=(max(2, int(h / f)), max(2, int(w / f))), mode="bilinear",
                          antialias=float(torch.rand((), generator=g)) < 0.5, align_corners=False)
    mode = ("nearest", "bilinear", "bicubic")[int(torch.randint(0, 3, (), generator=g))]
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(small, size=(h, w), mode=mode, **kw)[0]


# --- photometric ---------------------------------------------------------------------------

def contrast(x, g):
    """Scale contrast about the mean grey: from washed out (0.2) to punchy (1.6)."""
    factor = math.exp(_u(g, math.log(0.2), math.log(1.6)))
    mean = x.mean()
    return (x - mean) * factor + mean


def brightness(x, g):
    return x + _u(g, -0.3, 0.3)


def gamma(x, g):
    return x.clamp(0, 1) ** math.exp(_u(g, math.log(0.5), math.log(2.0)))


def saturation(x, g):
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    return grey + (x - grey) * _u(g, 0.0, 1.8)


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "speckle_noise": speckle_noise,
    "impulse_noise": impulse_noise, "coarse_noise": coarse_noise, "gaussian_blur": gaussian_blur,
    "box_blur": box_blur, "motion_blur": motion_blur, "jpeg": jpeg, "down_up": down_up,
    "contrast": contrast, "brightness": brightness, "gamma": gamma, "saturation": saturation,
}
LIGHT = ("brightness", "contrast")


class Augmenter:
    """``augmenter(uint8 batch) -> float batch in [0, 1]`` for mode none, light or corruptions.

    ``light``: h-flip, mild brightness/contrast on half the crops. ``corruptions``: h-flip; a
    ``p_clean`` share of crops stays clean, the rest get one to three corruptions drawn from
    ``CORRUPTIONS`` in random order (compression last, as in a real re-upload).
    """

    def __init__(self, mode: str = "corruptions", p_clean: float = 0.3, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"augment mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode, self.p_clean = mode, p_clean
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float() / 255
        if self.mode == "none":
            return x
        g = self.generator
        out = []
        for img in x:
            if float(torch.rand((), generator=g)) < 0.5:
                img = img.flip(-1)
            img = self._light(img) if self.mode == "light" else self._corrupt(img)
            out.append(img.clamp(0, 1))
        return torch.stack(out)

    def _light(self, img):
        g = self.generator
        if float(torch.rand((), generator=g)) < 0.5:
            img = img + _u(g, -0.1, 0.1)
            mean = img.mean()
            img = (img - mean) * _u(g, 0.8, 1.2) + mean
        return img

    def _corrupt(self, img):
        return corrupt(img, self.generator, self.p_clean)

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def corrupt(img: torch.Tensor, g: torch.Generator, p_clean: float = 0.0) -> torch.Tensor:
    """One float crop (3, H, W) in [0, 1] with 1–3 random corruptions (or none, with p_clean)."""
    if float(torch.rand((), generator=g)) < p_clean:
        return img
    names = list(CORRUPTIONS)
    k = 1 + int(torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), 1, generator=g))
    picked = [names[int(i)] for i in torch.randperm(len(names), generator=g)[:k]]
    if "jpeg" in picked:  # compression comes last, as when a degraded copy is re-uploaded
        picked = [n for n in picked if n != "jpeg"] + ["jpeg"]
    for name in picked:
        img = CORRUPTIONS[name](img, g).clamp(0, 1)
    return img


def corrupt_fixed(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """A reproducible corrupted copy of a uint8 batch (every crop corrupted): the Val stress test."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([corrupt(img, g) for img in batch.float() / 255])

"""The pictures of ``dfscan explain``: one PNG per face, a contact sheet, a model-comparison grid.

matplotlib runs headless (Agg) and is imported only when a picture is drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = {0: "Real", 1: "Fake", None: "unlabelled"}


@dataclass
class Explained:
    """One face as one model saw it."""

    face_id: int
    file: str
    label: int | None
    crop: np.ndarray  # H×W×3 uint8, the model's input crop before normalisation
    heat: np.ndarray  # H×W float32 in [0, 1]
    score_fake: float
    model: str  # the column / file tag of the checkpoint
    method: str

    def caption(self) -> str:
        return f"face {self.face_id} · {LABELS.get(self.label, self.label)} · score_fake {self.score_fake:.3f}"


def crop_to_rgb(crop: np.ndarray, mean, std) -> np.ndarray:
    """Undo the pipeline's normalisation: (3, H, W) float → (H, W, 3) uint8."""
    rgb = crop.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat-map (jet colours) blended over the crop, as uint8 RGB."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blend = (1 - alpha) * rgb / 255.0 + alpha * colours
    return (np.clip(blend, 0, 1) * 255 + 0.5).astype(np.uint8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_palette(fig, path) -> Path:
    """Save as a dithered 256-colour PNG: a sheet of photos is a third of the size, and looks
    the same at the size it is viewed (the per-face PNGs stay full colour)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    with Image.open(buf) as im:
        rgb = im.convert("RGB")
    palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT)
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    return Path(path)


def _show(ax, image, title: str = "", fontsize: float = 8):
    ax.imshow(image, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=fontsize)


def save_face_png(item: Explained, path) -> Path:
    """Crop beside its overlay; the title names face, label, score, method and model."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(5.2, 2.9))
    _show(left, item.crop, "crop")
    _show(right, overlay(item.crop, item.heat), f"{item.method}: evidence for Fake")
    fig.suptitle(f"{item.caption()}\n{item.model} · {Path(item.file).name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_contact_sheet(items: list[Explained], path, title: str = "") -> Path:
    """All faces of one model, each as crop | overlay, in a near-square grid."""
    plt = _pyplot()
    cols = max(1, min(6, math.ceil(math.sqrt(len(items)))))
    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.0 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, item in zip(axes.flat, items):
        _show(ax, np.hstack([item.crop, overlay(item.crop, item.heat)]), item.caption(), 7.5)
    fig.suptitle(title or items[0].method, fontsize=10)
    fig.tight_layout()
    _save_palette(fig, path)
    plt.close(fig)
    return Path(path)


def save_compare_grid(rows: list[list[Explained]], path, title: str = "") -> Path:
    """One row per face, one column per model and method (each cell the overlay on that model's
    own crop), the first model's crop first."""
    plt = _pyplot()
    n_cols = 1 + max(len(r) for r in rows)
    several = len({item.method for row in rows for item in row}) > 1
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.0 * n_cols, 2.3 * len(rows) + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(rows):
        first = row[0]
        _show(axes[r, 0], first.crop, f"face {first.face_id} · {LABELS.get(first.label, first.label)}", 7)
        for c, item in enumerate(row, start=1):
            name = f"{item.model} · {item.method}" if several else item.model
            _show(axes[r, c], overlay(item.crop, item.heat), f"{name}\nscore_fake {item.score_fake:.3f}", 7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save_palette(fig, path)
    plt.close(fig)
    return Path(path)

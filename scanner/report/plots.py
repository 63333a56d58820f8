"""The pictures of ``dfscan report``: score histogram, ROC and precision–recall curves, face
thumbnails, each returned as a ``data:`` URI so the page needs no other file and no network.

matplotlib runs headless (Agg) and is imported only when a plot is drawn.
"""
from __future__ import annotations

import base64
import io

import numpy as np

REAL_COLOUR, FAKE_COLOUR, UNLABELLED_COLOUR = "#2c7fb8", "#d7301f", "#888888"


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png_uri(fig) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return data_uri(buf.getvalue(), "image/png")


def histogram_uri(scores: np.ndarray, labels: np.ndarray | None, threshold: float) -> str:
    """Histogram of score_fake (ok faces), Real and Fake apart where ``labels`` (0/1, -1 for
    unknown) are given, with the threshold marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    bins = np.linspace(0.0, 1.0, 26)
    if labels is None:
        ax.hist(scores, bins=bins, color=UNLABELLED_COLOUR, label=f"all faces ({len(scores)})")
    else:
        for value, name, colour in ((0, "Real", REAL_COLOUR), (1, "Fake", FAKE_COLOUR),
                                    (-1, "unlabelled", UNLABELLED_COLOUR)):
            part = scores[labels == value]
            if len(part):
                ax.hist(part, bins=bins, color=colour, alpha=0.6, label=f"{name} ({len(part)})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("score_fake")
    ax.set_ylabel("faces")
    ax.set_title("Scores of the scanned faces")
    ax.legend(fontsize=8)
    return _png_uri(fig)


def _subsets(labels, scores, subsets):
    """('all', labels, scores) then one triple per subset that holds both classes."""
    yield "all", labels, scores
    for name in sorted({s for s in subsets if s is not None}):
        mask = np.array([s == name for s in subsets])
        if len(np.unique(labels[mask])) == 2:
            yield name, labels[mask], scores[mask]


def curves_uris(labels: np.ndarray, scores: np.ndarray, subsets: list) -> tuple[str, str] | None:
    """ROC and precision–recall curves (Fake positive) for all labelled faces, plus thin lines
    per subset (corruption); None when the faces do not hold both classes."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    if len(np.unique(labels)) < 2:
        return None
    plt = _pyplot()
    roc_fig, roc = plt.subplots(figsize=(4.8, 4.2))
    pr_fig, pr = plt.subplots(figsize=(4.8, 4.2))
    for name, y, s in _subsets(labels, scores, subsets):
        width, alpha = (2.2, 1.0) if name == "all" else (1.0, 0.7)
        fpr, tpr, _ = roc_curve(y, s)
        roc.plot(fpr, tpr, linewidth=width, alpha=alpha, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(y, s)
        pr.plot(recall, precision, linewidth=width, alpha=alpha, drawstyle="steps-post",
                label=f"{name} (AP {average_precision_score(y, s):.3f})")
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (Fake positive)",
            xlim=(0, 1), ylim=(0, 1.01))
    pr.axhline(labels.mean(), color="grey", linestyle=":", linewidth=1)
    pr.set(xlabel="recall", ylabel="precision", title="Precision–recall (Fake positive)",
           xlim=(0, 1), ylim=(0, 1.01))
    for ax in (roc, pr):
        ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left")
    return _png_uri(roc_fig), _png_uri(pr_fig)


def thumbnail_uri(rgb: np.ndarray, max_side: int = 128, quality: int = 85) -> str:
    """An H×W×3 uint8 crop as a JPEG data URI, shrunk to ``max_side`` on its longer side."""
    from PIL import Image

    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return data_uri(buf.getvalue(), "image/jpeg")

"""What a training or evaluation run leaves beside its checkpoint: history.parquet and PNGs.

matplotlib runs headless (Agg) and is imported only here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

HISTORY_SCHEMA = pa.schema([
    ("epoch", pa.int64()), ("train_loss", pa.float64()), ("train_acc", pa.float64()),
    ("val_loss", pa.float64()), ("val_acc", pa.float64()), ("val_auc", pa.float64()),
    ("val_auc_corrupt", pa.float64()), ("val_acc_corrupt", pa.float64()),
    ("lr", pa.float64()), ("seconds", pa.float64()),
])


def write_history(history: list[dict], path, settings: dict) -> Path:
    """One row per epoch; the run's settings and versions go into the key-value metadata.

    Columns beyond HISTORY_SCHEMA (float64, in the rows' order): per-source Val metrics
    (``val_auc_<source>``, ``val_acc_<source>``, ``val_auc_mean``) with several sources, and
    ``threshold``, the decision threshold the Val scores of that epoch give (engines.train.threshold).
    """
    from engines.files import versions, write_table

    extra = [k for k in (history[0] if history else {}) if k not in HISTORY_SCHEMA.names]
    schema = pa.schema(list(HISTORY_SCHEMA) + [pa.field(k, pa.float64()) for k in extra])
    table = pa.Table.from_pylist(history, schema=schema)
    return write_table(path, table, {"train": settings, "versions": versions()})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train vs Val (and the corrupted Val copy)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [r["train_acc"] for r in history], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [r["val_acc"] for r in history], "o-", label="val")
    ax_acc.plot(epochs, [r["val_acc_corrupt"] for r in history], "o--", label="val, corrupted")
    ax_acc.plot(epochs, [r["val_auc"] for r in history], "s:", label="val ROC-AUC")
    ax_acc.set(xlabel="epoch", ylabel="accuracy / AUC", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_roc_det(labels, scores, out_dir, title: str = "", prefix: str = "") -> list[Path]:
    """``roc.png`` and ``det.png`` (Fake = positive) in ``out_dir``; nothing with one class."""
    from sklearn.metrics import DetCurveDisplay, RocCurveDisplay

    labels, scores = np.asarray(labels), np.asarray(scores)
    if len(np.unique(labels)) < 2:
        return []
    plt = _pyplot()
    out_dir = Path(out_dir)
    paths = []
    for name, display in (("roc", RocCurveDisplay), ("det", DetCurveDisplay)):
        fig, ax = plt.subplots(figsize=(5, 5))
        display.from_predictions(labels, scores, pos_label=1, ax=ax, name=title or None)
        if name == "roc":
            ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(f"{name.upper()}: {title}" if title else name.upper())
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{prefix}{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths

"""Detection metrics with Fake as the positive class, from scikit-learn's implementations."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

METRICS_SCHEMA = pa.schema([
    ("subset", pa.string()), ("n", pa.int64()), ("n_real", pa.int64()), ("n_fake", pa.int64()),
    ("tp", pa.int64()), ("fp", pa.int64()), ("tn", pa.int64()), ("fn", pa.int64()),
    ("accuracy", pa.float64()), ("precision", pa.float64()), ("recall", pa.float64()),
    ("f1", pa.float64()), ("roc_auc", pa.float64()), ("eer", pa.float64()), ("threshold", pa.float64()),
    # where the threshold came from: 'cli' (given), 'model' (chosen on validation when the model
    # was trained, ModelConfig.threshold) or 'default' (0.5, for a model without one)
    ("threshold_origin", pa.string()),
])


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """EER: where the false-positive rate meets the false-negative rate on the ROC curve."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return math.nan
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    if i > 0 and (fnr[i] - fpr[i]) * (fnr[i - 1] - fpr[i - 1]) < 0:
        # linear interpolation between the two ROC points that straddle fpr == fnr
        d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
        t = d0 / (d0 - d1)
        return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    return float((fpr[i] + fnr[i]) / 2)


def binary_metrics(labels, scores, threshold: float = 0.5, subset: str = "all") -> dict:
    """One metrics row for labels (0 Real / 1 Fake) and fake-probabilities."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score, recall_score,
                                 roc_auc_score)

    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    preds = (scores >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    both = len(np.unique(labels)) == 2
    return {
        "subset": subset, "n": int(len(labels)), "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "accuracy": float(accuracy_score(labels, preds)) if len(labels) else math.nan,
        "precision": float(precision_score(labels, preds, zero_division=0)),
        "recall": float(recall_score(labels, preds, zero_division=0)),
        "f1": float(f1_score(labels, preds, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, scores)) if both else math.nan,
        "eer": equal_error_rate(labels, scores),
        "threshold": float(threshold),
    }


def metrics_table(faces: pa.Table, threshold: float = 0.5, origin: str = "default") -> pa.Table | None:
    """Metrics over the scanned, labelled faces: ``all`` plus one row per ``corruption`` value;
    ``origin`` (where ``threshold`` came from) fills the ``threshold_origin`` column.

    Returns None when no face has both a label and a score.
    """
    d = faces.select(["label", "score_fake", "status", "corruption"])
    # columns, not rows: a run of millions of faces holds no Python object per face here
    keep = pc.and_(pc.and_(pc.is_valid(d.column("label")), pc.is_valid(d.column("score_fake"))),
                   pc.equal(d.column("status"), "ok"))
    d = d.filter(pc.fill_null(keep, False))
    if not d.num_rows:
        return None
    labels = d.column("label").to_numpy()
    scores = d.column("score_fake").to_numpy()
    corr = d.column("corruption")
    rows = [binary_metrics(labels, scores, threshold)]
    for name in sorted(v for v in pc.unique(corr).to_pylist() if v is not None):
        mask = pc.fill_null(pc.equal(corr, name), False).to_numpy(zero_copy_only=False)
        rows.append(binary_metrics(labels[mask], scores[mask], threshold, subset=name))
    for row in rows:
        row["threshold_origin"] = origin
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)

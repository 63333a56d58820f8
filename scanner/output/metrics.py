"""Detection metrics with Fake as the positive class, from scikit-learn's implementations."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

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
    d = faces.select(["label", "score_fake", "status", "corruption"]).to_pydict()
    keep = [i for i, (lab, s, st) in enumerate(zip(d["label"], d["score_fake"], d["status"]))
            if lab is not None and s is not None and st == "ok"]
    if not keep:
        return None
    labels = np.array([d["label"][i] for i in keep])
    scores = np.array([d["score_fake"][i] for i in keep])
    corr = [d["corruption"][i] for i in keep]
    rows = [binary_metrics(labels, scores, threshold)]
    for name in sorted({c for c in corr if c is not None}):
        mask = np.array([c == name for c in corr])
        rows.append(binary_metrics(labels[mask], scores[mask], threshold, subset=name))
    for row in rows:
        row["threshold_origin"] = origin
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)

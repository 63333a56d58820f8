"""Detection metrics with Fake as the positive class, in NumPy.

The same definitions as scikit-learn's ``roc_auc_score`` and ``roc_curve`` (ties share their
rank; the ROC curve keeps only its corners), which the tests check them against; NumPy because
importing scikit-learn cost 1.7 s of every labelled run (a third of a 480-face run's scan); the
HTML report's curves (``scanner.report.plots``) still import it when a report is written.
"""
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


def roc_auc(labels, scores) -> float:
    """ROC-AUC of scores for labels 1 (Mann-Whitney U: tied scores share their mean rank);
    NaN unless both classes occur."""
    labels, scores = np.asarray(labels) == 1, np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # mean 1-based rank of each run of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at each distinct threshold from the highest score down, starting at
    (0, 0); points on a straight segment between two others are left out (only corners)."""
    labels, scores = np.asarray(labels) == 1, np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each threshold
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    corner = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
    tps, fps = np.r_[0.0, tps[corner]], np.r_[0.0, fps[corner]]
    return fps / fps[-1], tps / tps[-1]


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """EER: where the false-positive rate meets the false-negative rate on the ROC curve."""
    if len(np.unique(labels)) < 2:
        return math.nan
    fpr, tpr = roc_curve(labels, scores)
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
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    fake, called = labels == 1, scores >= threshold
    tp, fp = int((fake & called).sum()), int((~fake & called).sum())
    fn, tn = int((fake & ~called).sum()), int((~fake & ~called).sum())
    return {
        "subset": subset, "n": int(len(labels)), "n_real": int((labels == 0).sum()),
        "n_fake": int(fake.sum()), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": (tp + tn) / len(labels) if len(labels) else math.nan,
        "precision": tp / (tp + fp) if tp + fp else 0.0,  # 0 where undefined, as zero_division=0
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "roc_auc": roc_auc(labels, scores),
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

"""The decision threshold a trained model carries (``ModelConfig.threshold``), chosen on validation.

Two documented rules, both over the pooled validation faces of every source:

- ``balanced`` (the default): the threshold of highest balanced accuracy (mean of the true-positive
  and true-negative rates). It weighs Real and Fake alike whatever the class mix of a source, and
  uses every validation face. Among thresholds that tie (a gap between the classes, common on a
  small, well-separated Val), the middle of the tied range is taken: the widest margin either way.
- ``fpr:<x>`` (``dfscan train --target-fpr x``): the lowest threshold whose validation false-positive
  rate (Real faces flagged Fake) is at most ``x`` — for a moderator who fixes the alarm rate. With
  60 real Val faces, a rate of 0.05 rests on 3 faces, which is why it is not the default.
"""
from __future__ import annotations

import numpy as np

from engines.errors import DfscanError


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Midpoints between adjacent distinct scores, plus one below and one above them all."""
    u = np.unique(scores.astype(np.float64))
    mids = (u[:-1] + u[1:]) / 2
    return np.concatenate([[max(0.0, u[0] - 1e-6)], mids, [min(1.0, u[-1] + 1e-6)]])


def choose_threshold(labels, scores, target_fpr: float | None = None) -> tuple[float, str]:
    """``(threshold, rule)``: the threshold on ``score_fake`` (Fake at or above it) by the module's
    rule, and the rule as recorded in the model's config (``balanced`` or ``fpr:<x>``).

    Raises DfscanError when the faces do not hold both classes.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise DfscanError("choosing a threshold needs Real and Fake validation faces; "
                          "add labelled faces of both classes to the validation data")
    cands = _candidates(s)
    fake = s[y == 1][None, :] >= cands[:, None]
    real = s[y == 0][None, :] >= cands[:, None]
    tpr, fpr = fake.mean(1), real.mean(1)
    if target_fpr is not None:
        ok = np.flatnonzero(fpr <= target_fpr + 1e-12)  # fpr falls as the threshold rises
        return float(cands[ok[0]]), f"fpr:{target_fpr:g}"
    bal = (tpr + 1 - fpr) / 2
    best = np.flatnonzero(np.isclose(bal, bal.max()))
    # ties form a run of candidates (the plateau between the classes): take its middle
    return float((cands[best[0]] + cands[best[-1]]) / 2), "balanced"

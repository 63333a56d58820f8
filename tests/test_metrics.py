"""Metrics against a hand computation on a small labelled case."""
import math

import pyarrow as pa
import pytest

from scanner.output.metrics import binary_metrics, equal_error_rate, metrics_table
from scanner.output.schema import FACES_SCHEMA


def test_hand_computed_case():
    labels = [0, 0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.4, 0.6, 0.2, 0.9, 0.3, 0.7]
    m = binary_metrics(labels, scores, threshold=0.5)
    # at 0.5: fakes 0.9, 0.7 caught, 0.3 missed; real 0.6 flagged
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 3, 1)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # AUC = fraction of (fake, real) pairs ranked right: 0.9 and 0.7 beat all 4, 0.3 beats 2
    assert m["roc_auc"] == pytest.approx((4 + 4 + 2) / 12)
    assert (m["n"], m["n_real"], m["n_fake"]) == (7, 4, 3)


@pytest.mark.parametrize("seed", range(6))
def test_numpy_metrics_equal_scikit_learns(seed):
    """Same figures as scikit-learn, including tied scores (rounded to 1-3 decimals) and
    one-class or all-called cases."""
    import numpy as np
    from sklearn import metrics as sk

    from scanner.output.metrics import roc_auc, roc_curve

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    labels = rng.integers(0, 2, n)
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.25), 0, 1), seed % 3 + 1)
    if seed == 4:
        labels[:] = 1
    threshold = [0.5, 0.0, 0.3, 0.9, 0.5, 1.1][seed]
    m = binary_metrics(labels, scores, threshold)
    preds = (scores >= threshold).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(labels, preds))
    for name, ref in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        assert m[name] == pytest.approx(ref(labels, preds, zero_division=0)), name
    if seed == 4:
        assert math.isnan(m["roc_auc"]) and math.isnan(m["eer"])
        return
    assert roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(labels, scores)
    mine = roc_curve(labels, scores)
    np.testing.assert_allclose(mine[0], fpr, atol=1e-12)
    np.testing.assert_allclose(mine[1], tpr, atol=1e-12)


def test_eer_of_separable_and_inverted_scores():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)
    assert equal_error_rate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(1.0)
    assert math.isnan(equal_error_rate([1, 1], [0.2, 0.3]))


def test_table_skips_errors_and_unlabelled_faces_and_splits_by_corruption():
    rows = [
        {"label": 0, "score_fake": 0.2, "status": "ok", "corruption": "blur"},
        {"label": 1, "score_fake": 0.8, "status": "ok", "corruption": "blur"},
        {"label": 1, "score_fake": 0.4, "status": "ok", "corruption": "noise"},
        {"label": 0, "score_fake": None, "status": "decode_error", "corruption": "noise"},
        {"label": None, "score_fake": 0.9, "status": "ok", "corruption": None},
    ]
    full = [{name: r.get(name) for name in FACES_SCHEMA.names} for r in rows]
    table = metrics_table(pa.Table.from_pylist(full, schema=FACES_SCHEMA))
    out = {r["subset"]: r for r in table.to_pylist()}
    assert list(out) == ["all", "blur", "noise"]
    assert out["all"]["n"] == 3 and out["all"]["fn"] == 1
    assert out["blur"]["accuracy"] == 1.0
    assert math.isnan(out["noise"]["roc_auc"])

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

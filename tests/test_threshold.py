"""Calibrated thresholds: chosen on validation by a documented rule, carried in the model's
config, used by 'dfscan run' unless --threshold is given, recorded with their origin."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from engines.errors import DfscanError
from engines.files import read_settings
from engines.train.threshold import choose_threshold
from scanner.cli import main

from _data import REALORFAKE, write_coco


def test_balanced_rule_takes_the_middle_of_the_gap_between_the_classes():
    # perfectly separated: every threshold in (0.4, 0.7) is right; the middle keeps the widest margin
    t, rule = choose_threshold([0, 0, 0, 1, 1], [0.1, 0.3, 0.4, 0.7, 0.9])
    assert rule == "balanced" and t == pytest.approx(0.55)


def test_balanced_rule_weighs_the_classes_alike():
    # 8 real, 2 fake; one real scores 0.8. Accuracy alone would put the threshold above 0.8
    # (flagging no fake costs 2 faces, the real one 1); balanced accuracy keeps both fakes.
    labels = [0] * 8 + [1] * 2
    scores = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.8, 0.6, 0.7]
    t, _ = choose_threshold(labels, scores)
    preds = np.asarray(scores) >= t
    assert preds[-2:].all() and preds[:7].sum() == 0


def test_target_fpr_rule_is_the_lowest_threshold_within_the_rate():
    labels = [0] * 10 + [1] * 4
    scores = [i / 20 for i in range(10)] + [0.3, 0.5, 0.6, 0.95]  # reals at 0.0 ... 0.45
    t, rule = choose_threshold(labels, scores, target_fpr=0.1)
    real = np.asarray(scores[:10])
    assert rule == "fpr:0.1"
    assert (real >= t).mean() <= 0.1
    assert (real >= t).sum() == 1  # one real (of 10) is the most 0.1 allows, and it is used
    t0, _ = choose_threshold(labels, scores, target_fpr=0.0)
    assert (real >= t0).sum() == 0 and t0 > t


def test_one_class_is_a_clear_error():
    with pytest.raises(DfscanError, match="Real and Fake"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])


def val_subset(path, per_class: int = 6):
    """Annotations of the first ``per_class`` Real and Fake faces of realorfake Val (a fast run)."""
    coco = json.loads((REALORFAKE / "Val_poly.json").read_text())
    keep = []
    for label in (0, 1):
        keep += [a for a in coco["annotations"] if a["category_id"] == label][:per_class]
    ids = {a["image_id"] for a in keep}
    images = [dict(i, file_name=Path(i["file_name"]).name) for i in coco["images"] if i["id"] in ids]
    return write_coco(path, images, keep)


@pytest.mark.skipif(not REALORFAKE.is_dir(), reason="needs ../shared/data/realorfake")
def test_run_uses_the_models_threshold_unless_one_is_given(tmp_path):
    from _data import varying_model
    from engines.export import export_pt

    model, config = varying_model(input_size=(64, 64))
    plain, tuned = tmp_path / "plain.pt", tmp_path / "tuned.pt"
    export_pt(model, config, plain)
    images = str(REALORFAKE / "Images" / "Val")
    annotations = val_subset(tmp_path / "val12_poly.json")

    def run(engine, out, *extra):
        result = CliRunner().invoke(main, ["run", images, "--annotations", str(annotations), "--engine",
                                           str(engine), "--out", str(tmp_path / out), "--quiet", *extra])
        assert result.exit_code == 0, result.output
        faces = pq.read_table(tmp_path / out / "faces.parquet").to_pydict()
        metrics = pq.read_table(tmp_path / out / "metrics.parquet").to_pylist()[0]
        return faces, metrics

    faces, metrics = run(plain, "plain")
    assert (metrics["threshold"], metrics["threshold_origin"]) == (0.5, "default")
    scores = np.asarray(faces["score_fake"])
    # a threshold far from 0.5 that splits these faces: predictions must follow it
    stored = float(np.quantile(scores, 0.7))
    assert ((scores >= stored) != (scores >= 0.5)).any()
    export_pt(model, dataclasses.replace(config, threshold=stored, threshold_rule="balanced"), tuned)

    faces, metrics = run(tuned, "tuned")
    assert (metrics["threshold"], metrics["threshold_origin"]) == (pytest.approx(stored), "model")
    assert faces["pred"] == [int(s >= stored) for s in faces["score_fake"]]
    meta = read_settings(tmp_path / "tuned" / "faces.parquet")
    assert (meta["threshold"], meta["threshold_origin"]) == (pytest.approx(stored), "model")

    faces, metrics = run(tuned, "given", "--threshold", "0.5")
    assert (metrics["threshold"], metrics["threshold_origin"]) == (0.5, "cli")
    assert faces["pred"] == [int(s >= 0.5) for s in faces["score_fake"]]

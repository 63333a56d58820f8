"""dfscan train on several sources: --data NAME=PATH:WEIGHT, folder sources split by group
(never one clip/identity on both sides), per-source Val metrics in history.parquet and in
dfscan eval, and the threshold chosen on Val carried in the checkpoint."""
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from engines.checkpoint import read_checkpoint
from engines.errors import DfscanError
from scanner.cli import main
from scanner.run.sources import folder_catalog, parse_source, parse_sources, source_crops, split_groups

from _data import REALORFAKE

pytestmark = pytest.mark.skipif(not REALORFAKE.is_dir(), reason="needs ../shared/data/realorfake")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder source: 8 'clips' of 3 frames each (realorfake Test-Dev faces, whole images),
    named ``<clip>__f<n>.jpg``; clips 0-3 real, 4-7 fake."""
    import json

    root = tmp_path_factory.mktemp("clips")
    coco = json.loads((REALORFAKE / "Test-Dev_poly.json").read_text())
    label = {a["image_id"]: a["category_id"] for a in coco["annotations"]}
    by_label = {0: [], 1: []}
    for image in coco["images"]:
        by_label[label[image["id"]]].append(REALORFAKE / image["file_name"])
    for clip in range(8):
        cls = 0 if clip < 4 else 1
        folder = root / ("real" if cls == 0 else "fake")
        folder.mkdir(exist_ok=True)
        for frame in range(3):
            shutil.copy(by_label[cls][(clip % 4) * 3 + frame], folder / f"clip{clip}__f{frame}.jpg")
    return root


def test_data_values_name_weight_and_kind(clips):
    s = parse_source(f"vids={clips}:2.5")
    assert (s.name, s.path, s.weight, s.kind) == ("vids", clips, 2.5, "folders")
    s = parse_source(str(REALORFAKE))
    assert (s.name, s.weight, s.kind) == ("realorfake", 1.0, "openforensics")
    with pytest.raises(DfscanError, match="neither an OpenForensics root"):
        parse_source(str(clips / "real"))
    with pytest.raises(DfscanError, match="two sources are named"):
        parse_sources([f"a={clips}", f"a={REALORFAKE}"])


def test_an_image_outside_real_and_fake_is_named(tmp_path, clips):
    shutil.copytree(clips, tmp_path / "c")
    shutil.copy(next((clips / "real").iterdir()), tmp_path / "c" / "stray.jpg")
    with pytest.raises(DfscanError, match="stray.jpg"):
        folder_catalog(tmp_path / "c")


def test_split_never_puts_a_group_on_both_sides_and_keeps_both_classes(clips):
    from collections import Counter

    source = parse_source(f"clips={clips}")
    catalog = folder_catalog(clips)
    name = {f"clips:{f}": catalog.images[catalog.faces[f].image_id].file for f in catalog.faces}
    crops = source_crops([source], "Train", "Val", val_share=0.25, log=lambda m: None)

    class Config:  # the crop convention of a 32-px model
        input_size, mean, std, interpolation, crop_margin = (32, 32), (0.5,) * 3, (0.5,) * 3, "linear", 1.3

    parts = {}
    for split in ("Train", "Val"):
        parts[split] = [(name[i], lab) for _, labels, ids, src in crops(split, Config) for i, lab in zip(ids, labels)]
    groups = {s: {f.split("/")[-1].split("__")[0] for f, _ in parts[s]} for s in parts}
    assert groups["Train"] and groups["Val"] and not groups["Train"] & groups["Val"]
    assert len(parts["Train"]) + len(parts["Val"]) == 24  # no face dropped
    for s in parts:
        assert {lab for _, lab in parts[s]} == {0, 1}
    # the rule: each class gets at least its share of faces in validation, whole groups only
    counts = {f"g{i}": Counter({i % 2: 3}) for i in range(10)}
    val = split_groups(counts, 0.25)
    assert all(sum(counts[g][k] for g in val) >= 0.25 * 15 for k in (0, 1))
    assert len(val) < 10


def test_train_on_two_sources_records_each_and_stores_the_threshold(tmp_path, clips):
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(main, [
        "train", "--arch", "customcnn", "--res", "48", "--limit", "16", "--batch-size", "8",
        "--augment", "light", "--epochs", "2", "--quiet", "--out", str(out),
        "--data", str(REALORFAKE), "--data", f"clips={clips}:2", "--val-share", "0.3"])
    assert result.exit_code == 0, result.output
    history = pq.read_table(tmp_path / "history.parquet").to_pylist()
    for col in ("val_auc_realorfake", "val_acc_realorfake", "val_auc_clips", "val_acc_clips",
                "val_auc_mean", "threshold"):
        assert all(row[col] is not None for row in history), col
    row = history[0]
    assert row["val_auc_mean"] == pytest.approx((row["val_auc_realorfake"] + row["val_auc_clips"]) / 2)
    payload = read_checkpoint(out)
    best = history[payload["extra"]["epoch"] - 1]
    assert payload["config"]["threshold"] == pytest.approx(best["threshold"])
    assert payload["config"]["threshold_rule"] == "balanced"
    assert payload["extra"]["settings"]["source_weights"] == {"realorfake": 1.0, "clips": 2.0}

    evaluated = CliRunner().invoke(main, [
        "eval", "--engine", str(out), "--data", str(REALORFAKE), "--split", "Val",
        "--data", f"clips={clips}", "--held-out", "--val-share", "0.3", "--out", str(tmp_path / "ev"),
        "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = pq.read_table(tmp_path / "ev" / "metrics.parquet").to_pylist()
    by_source = {(m["source"], m["subset"]): m for m in metrics}
    assert by_source[("realorfake", "all")]["n"] == 80
    held_out = by_source[("clips", "all")]
    assert 0 < held_out["n"] < 24  # the validation clips only
    assert held_out["threshold_origin"] == "model"
    assert held_out["threshold"] == pytest.approx(payload["config"]["threshold"])


def test_source_weights_scale_the_loss_and_name_real_sources():
    import torch

    from engines.models import create_model, get_model_config
    from engines.train.augment import Augmenter
    from engines.train.data import CropSet, Normalize
    from engines.train.loop import train_one_epoch

    gen = torch.Generator().manual_seed(0)
    data = CropSet("Train", torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen),
                   torch.tensor([0, 1] * 4), list(range(8)), ["a"] * 4 + ["b"] * 4)
    assert data.loss_weights({"b": 2.5}).tolist() == [1.0] * 4 + [2.5] * 4
    with pytest.raises(DfscanError, match="'c'"):
        data.loss_weights({"c": 1.0})
    config = get_model_config("customcnn").with_input_size(32)

    def moved(weights):
        torch.manual_seed(0)
        model = create_model("customcnn", input_size=(32, 32))
        before = [p.detach().clone() for p in model.parameters()]
        train_one_epoch(model, torch.optim.Adam(model.parameters(), lr=1e-2), data, Augmenter("none"),
                        Normalize(config), 4, torch.Generator().manual_seed(0), progress=False,
                        weights=data.loss_weights(weights))
        return max(float((p - q).abs().max()) for p, q in zip(model.parameters(), before))

    assert moved({"a": 0.0, "b": 0.0}) == 0.0  # weight-0 faces teach nothing
    assert moved({"a": 1.0, "b": 0.0}) > 0.0
